"""Interaction logs: every dropped row counted by reason, splits by time, baselines and metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import recommend as RC
from core.interactions import (CleanRules, LogColumns, clean_log, item_texts_from_log, later_targets,
                               leave_last_out, time_cut)

COLS = LogColumns(user="cust", item="sku", timestamp="when", basket="order", quantity="qty", item_text=("name",))
RULES = CleanRules(cancel_prefix="C", non_product_items=("POST", "DCGS*"))


def _log() -> pd.DataFrame:
    rows = [  # cust, sku, when, order, qty, name
        ("u1", "A", "2011-01-01 10:00", "1", 1, "red mug"),
        ("u1", "B", "2011-01-01 10:00", "1", 2, "blue mug"),
        ("u1", "B", "2011-01-01 10:00", "1", 2, "blue mug"),            # duplicate line
        ("u1", "C", "2011-01-05 09:00", "2", 1, "green mug"),
        ("u1", "A", "2011-01-09 09:00", "3", 1, "red mug"),             # a repeat purchase: kept
        ("u2", "A", "2011-01-02 09:00", "4", 1, "red mug"),
        ("u2", "POST", "2011-01-02 09:00", "4", 1, "postage"),          # non-product
        ("u2", "dcgs0001", "2011-01-02 09:00", "4", 1, "adjustment"),   # non-product by glob, any case
        ("u2", "B", "2011-01-03 09:00", "C5", -1, "blue mug"),          # cancellation
        ("u2", "C", "2011-01-04 09:00", "6", 0, "green mug"),           # zero quantity
        (None, "A", "2011-01-04 09:00", "7", 1, "red mug"),             # no user
        ("u3", "Z", "2011-01-04 09:00", "8", 1, None),                  # no text anywhere: unknown item
        ("u3", "A", "not a date", "8", 1, "red mug"),                   # no timestamp
    ]
    return pd.DataFrame(rows, columns=["cust", "sku", "when", "order", "qty", "name"])


def _clean():
    log = _log()
    items = item_texts_from_log(log, COLS)
    return log, items, *clean_log(log, COLS, RULES, items)


def test_every_dropped_row_is_counted_by_reason():
    log, items, events, counts = _clean()
    assert counts == {"missing_user": 1, "missing_item": 0, "missing_timestamp": 1, "cancellation": 2,
                      "non_product": 2, "unknown_item": 1, "duplicate": 1}
    assert len(events) + sum(counts.values()) == len(log)
    assert set(items["item_id"]) >= {"A", "B", "C"} and "Z" not in set(items["item_id"])


def test_events_are_ordered_by_user_then_time_then_line():
    _, _, events, _ = _clean()
    u1 = events[events["user_id"] == "u1"]
    assert u1["item_id"].tolist() == ["A", "B", "C", "A"]
    assert (events.groupby("user_id")["ts"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_leave_last_out_takes_each_users_last_two_and_keeps_short_users_in_train():
    _, _, events, _ = _clean()
    split = leave_last_out(events, min_interactions=3)
    assert split.test[["user_id", "item_id"]].values.tolist() == [["u1", "A"]]
    assert split.val[["user_id", "item_id"]].values.tolist() == [["u1", "C"]]
    assert split.train["user_id"].tolist().count("u1") == 2
    assert "u2" in set(split.train["user_id"])   # one usable interaction: trains only
    assert split.test["ts"].min() >= split.train[split.train["user_id"] == "u1"]["ts"].max()


def test_time_cut_and_later_log_targets_only_returning_users_after_their_history():
    _, _, events, _ = _clean()
    split = time_cut(events, "2011-01-03")
    assert (split.train["ts"] < pd.Timestamp("2011-01-03")).all()
    assert set(split.test["user_id"]) <= set(split.train["user_id"])
    later = pd.DataFrame({"user_id": ["u1", "u9", "u1"], "item_id": ["B", "A", "C"],
                          "ts": pd.to_datetime(["2011-02-01", "2011-02-01", "2011-01-01"])})
    got = later_targets(events, later)
    assert got[["user_id", "item_id"]].values.tolist() == [["u1", "B"]]   # u9 is new; the old one precedes u1's history


def _matrix_world():
    catalog = RC.Catalog(["a", "b", "c", "d"])
    train = pd.DataFrame({"user_id": ["x", "x", "y", "y", "z", "z"], "item_id": ["a", "b", "a", "b", "c", "d"]})
    return catalog, train, RC.train_counts(catalog, train)


def test_item_knn_recommends_what_was_bought_together():
    catalog, train, counts = _matrix_world()
    scores = RC.item_knn_scorer(RC.cooccurrence(catalog, train), counts)([[catalog.index["a"]]])
    assert int(np.argmax(scores[0])) == catalog.index["b"]


def test_repeat_ranks_the_users_own_items_first_most_bought_then_most_recent():
    catalog, _, counts = _matrix_world()
    scores = RC.repeat_scorer(counts)([[0, 2, 0, 3]])[0]    # a twice, then c, then d (newest)
    assert list(np.argsort(-scores)[:3]) == [0, 3, 2]


def test_rank_metrics_on_known_ranks():
    m = RC.rank_metrics(np.array([0, 1, 10, 3]))
    assert m["hr@10"] == pytest.approx(0.75)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 0 + 1 / np.log2(5)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 4) / 4)


def test_ranks_count_ties_as_half_not_as_wins():
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert RC.ranks_of(scores, np.array([0]))[0] == 1   # three-way tie for first: rank 1 of 0..2


def test_eval_set_slices_new_to_user_and_cold_items():
    catalog, train, counts = _matrix_world()
    targets = pd.DataFrame({"user_id": ["x", "y"], "item_id": ["a", "c"]})   # a: 2 interactions, c: 1
    es = RC.eval_set(catalog, train, targets, counts, cold_max=2)
    assert es.new_to_user.tolist() == [False, True]
    assert es.cold.tolist() == [False, True]
    assert es.histories[0] == [0, 1]


def test_training_examples_never_cross_users():
    catalog, train, _ = _matrix_world()
    idx, start, targets = RC.training_examples(train, catalog)
    assert targets.tolist() == [1, 3, 5]
    assert [h.tolist() for h in RC.histories_at(idx, start, targets, 5)] == [[0], [0], [2]]
