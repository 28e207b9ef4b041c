"""The recommend task's stream logic (core/rec_stream.py) and the taste shoppers (data_pipelines/tastes.py): no Ray, no model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.rec_stream import RecWindow, Trails, decide, in_holdout
from data_pipelines.tastes import TasteShoppers


def rec(user, kind, item, offset, flags=()):
    return {"user": user, "type": kind, "product_id": item, "offset": offset, "flags": list(flags)}


def test_trails_make_next_item_examples_and_count_what_they_pass_over():
    trails = Trails(length=3)
    records = [rec("a", "impression", "p1", 0), rec("a", "click", "p1", 1), rec("a", "purchase", "p1", 2),
               rec("a", "click", "p2", 3), rec("b", "click", "p9", 4), rec("a", "click", "p3", 5, flags=["bot"]),
               rec("a", "click", "zz", 6), rec("", "click", "p2", 7), rec("a", "click", "p4", 8)]
    examples, skipped = trails.add(records, known={"p1", "p2", "p3", "p4", "p9"})
    assert [(e.user, e.history, e.target, e.offset) for e in examples] == [
        ("a", ("p1",), "p2", 3), ("a", ("p1", "p2"), "p4", 8)]
    assert skipped == {"flagged": 1, "not_an_interaction": 1, "unknown_item": 1, "no_user": 1, "repeat": 1}
    more, _ = trails.add([rec("a", "click", "p9", 9), rec("a", "click", "p1", 10)])
    assert more[-1].history == ("p2", "p4", "p9")  # at most `length` items, oldest dropped


def test_trails_survive_a_restart_through_their_state_and_forget_the_least_recent_shopper():
    trails = Trails(length=5, max_users=2)
    trails.add([rec("a", "click", "p1", 0), rec("b", "click", "p2", 1), rec("c", "click", "p3", 2)])
    assert set(trails.state()) == {"b", "c"}
    again = Trails.from_state(trails.state(), length=5, max_users=2)
    examples, _ = again.add([rec("c", "click", "p4", 3)])
    assert examples[0].history == ("p3",) and again.recent("c") == ["p3", "p4"] and again.recent("zz") == []


def test_holdout_is_a_stable_share_of_shoppers():
    users = [f"u{i}" for i in range(4000)]
    held = [u for u in users if in_holdout(u, "salt", 0.25)]
    assert 0.2 < len(held) / len(users) < 0.3
    assert held == [u for u in users if in_holdout(u, "salt", 0.25)]
    assert not any(in_holdout(u, "salt", 0.0) for u in users[:100])


def test_window_splits_by_shopper_and_is_due_by_count_or_wait_after_cooldown():
    trails, window = Trails(10), RecWindow("salt", 0.5)
    records = [rec(f"u{i % 40}", "click", f"p{i}", i) for i in range(200)]
    examples, skipped = trails.add(records)
    window.add(examples, skipped, end_offset=200, now=100.0)
    assert len(window.train) + len(window.fresh) == len(examples) == 160
    assert not {e.user for e in window.train} & {e.user for e in window.fresh}
    n = len(window.train)
    assert window.due(101.0, n, 60.0, 1, None, 10.0)
    assert window.due(101.0, n + 1, 60.0, 1, None, 10.0) is None
    assert window.due(161.0, n + 1, 60.0, 1, None, 10.0)           # waited max_wait_s
    assert window.due(161.0, n, 60.0, 1, 155.0, 10.0) is None        # cooling down
    assert window.span()["end_offset"] == 200
    window.decided()   # the buffers stay (a rejected update's evidence is kept); only what is new counts
    assert window.due(500.0, 1, 60.0, 1, None, 0.0) is None and len(window.train) == n
    small = RecWindow("salt", 0.5, keep_train=5, keep_fresh=3)
    small.add(examples, {}, 200, 0.0)
    assert len(small.train) == 5 and len(small.fresh) == 3 and small.train[-1] == window.train[-1]
    restored = RecWindow("salt", 0.5, keep_train=5, keep_fresh=3)
    restored.restore(small.state())
    assert restored.train == small.train and restored.fresh == small.fresh


@pytest.mark.parametrize("fresh_cur, fresh_cand, n, off_cur, off_cand, promote", [
    (0.20, 0.30, 50, 0.10, 0.10, True),
    (0.20, 0.195, 50, 0.10, 0.10, True),      # within tolerance
    (0.20, 0.15, 50, 0.10, 0.12, False),      # worse on the fresh shoppers
    (0.20, 0.40, 50, 0.10, 0.05, False),      # forgot the shop's history
    (0.20, 0.40, 3, 0.10, 0.10, False),       # too few fresh examples to judge
])
def test_gate_decisions(fresh_cur, fresh_cand, n, off_cur, off_cand, promote):
    result = decide(fresh_cur, fresh_cand, n, off_cur, off_cand, tolerance=0.01, min_holdout=10)
    assert result.promote is promote, result.reason


def _products(n=300, seed=0):
    rng = np.random.default_rng(seed)
    cats = ["tops", "bags", "beauty"]
    return pd.DataFrame({"product_id": [f"P{i:04d}" for i in range(n)],
                         "category": [cats[i % 3] for i in range(n)],
                         "brand": [f"{cats[i % 3]}-b{rng.integers(4)}" for i in range(n)],
                         "price": rng.uniform(5, 100, n).round(2)})


def test_taste_shoppers_grade_by_category_brand_and_price_and_their_sessions_follow_clicks():
    shoppers = TasteShoppers(_products(), n_users=30, seed=1, steps=4)
    user = next(iter(shoppers.users))
    taste = shoppers.users[user]
    graded = {p: shoppers.grade(user, p) for p in _products()["product_id"]}
    assert set(graded.values()) <= {0, 1, 2} and 2 in graded.values()
    best = sorted(graded, key=lambda p: -graded[p])
    assert shoppers.ndcg(user, best) == pytest.approx(1.0)
    assert shoppers.ndcg(user, [p for p in graded if graded[p] == 0][:10]) == 0.0
    assert all(shoppers._category[p] == taste.category for p in graded if graded[p] > 0)

    shown_for = []

    def recommend(u, k):   # the suiting products first: a shopper clicks, and the session goes on
        shown_for.append(u)
        return best[:k]

    posted = []
    events = shoppers.run_session(user, recommend, 1000.0, post=posted.extend)
    assert events == posted and [e["type"] for e in events[:2]] == ["impression", "click"]
    assert "position" not in events[1] and events[0]["product_id"] == events[1]["product_id"]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert {e["session_id"] for e in events} == {events[0]["session_id"]}
    assert 1 <= len(shown_for) <= 4 and sum(e["type"] == "click" for e in events) >= 1
    again = TasteShoppers(_products(), n_users=30, seed=1, steps=4)
    assert again.users == shoppers.users and again.run_session(user, recommend, 1000.0, None) == events


def test_taste_shoppers_refuse_products_without_the_columns_tastes_need():
    with pytest.raises(ValueError, match="price"):
        TasteShoppers(_products().drop(columns=["price"]))
