"""Feedback -> examples (skip-above, position weights, flags), the update policy, recent products."""

from __future__ import annotations

import pandas as pd
import pytest

from core.feedback import examples_from_events, propensity, resample_by_weight, split_holdout
from core.sessions import RecentProducts
from core.stream_config import UpdatePolicy
from core.update_policy import PendingWindow, aged, flagged, peak_rate, surge, window_rate

TEXTS = {f"P{i}": f"product {i}" for i in range(10)}


def rec(kind, product, position, session="s1", query="red shoes", flags=(), user="u1", offset=0, ingested_at=100.0):
    return {"event_id": f"{session}-{kind}-{product}", "ts": 1.8e9, "user": user, "session": session, "type": kind,
            "product_id": product, "query": query, "position": position, "flags": list(flags), "offset": offset,
            "ingested_at": ingested_at}


def a_list(clicks=(), purchases=(), session="s1", n=6, flags_on=()):
    out = [rec("impression", f"P{i}", i, session) for i in range(n)]
    out += [rec("click", f"P{i}", i, session, flags=("no_impression",) if i in flags_on else ()) for i in clicks]
    out += [rec("purchase", f"P{i}", i, session) for i in purchases]
    return out


def labels(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["product_id"], frame["label"]))


def test_skip_above_click_and_purchase_labels():
    frame, counts = examples_from_events(a_list(clicks=(3,)), TEXTS)
    # P0..P2 were scanned past to click P3; P4, P5 below the click say nothing.
    assert labels(frame) == {"P0": "irrelevant", "P1": "irrelevant", "P2": "irrelevant", "P3": "exact"}
    frame, counts = examples_from_events(a_list(clicks=(1, 2), purchases=(2,)), TEXTS)
    assert labels(frame) == {"P0": "irrelevant", "P1": "exact", "P2": "exact"}
    assert (counts["exact"], counts["partial"], counts["irrelevant"], counts["lists"]) == (2, 0, 1, 1)
    weights = dict(zip(frame["product_id"], frame["weight"]))
    assert weights["P1"] == pytest.approx(2.0) and weights["P2"] == pytest.approx(2 * 3.0)  # bought: double


def test_no_click_no_examples_and_groups_by_session_and_query():
    records = a_list(session="s1") + a_list(clicks=(0,), session="s2")
    frame, counts = examples_from_events(records, TEXTS)
    assert counts["lists"] == 2 and counts["lists_without_click"] == 1
    assert set(frame["query_id"]) == {"s2:red shoes"} and labels(frame) == {"P0": "exact"}


def test_positives_weighted_by_inverse_propensity_capped():
    frame, _ = examples_from_events(a_list(clicks=(0, 4)), TEXTS, eta=1.0, max_weight=3.0)
    weights = dict(zip(frame["product_id"], frame["weight"]))
    assert weights["P0"] == pytest.approx(1.0)
    assert weights["P4"] == pytest.approx(3.0)  # 1 / propensity(4) = 5, capped at 3
    assert weights["P1"] == 1.0  # negatives are not reweighted
    assert propensity(4, 1.0) == pytest.approx(0.2)


def test_flagged_events_never_train_and_do_not_create_negatives():
    frame, counts = examples_from_events(a_list(clicks=(4,), flags_on=(4,)), TEXTS)
    assert frame.empty and counts["flagged"] == 1


def test_non_search_and_unknown_products_are_counted():
    records = [rec("click", "P1", None, query=None), *a_list(clicks=(1,)), rec("impression", "PX", 0, session="s3"),
               rec("click", "PX", 0, session="s3")]
    frame, counts = examples_from_events(records, TEXTS)
    assert counts["not_search"] == 1 and counts["unknown_product"] == 1
    assert "PX" not in set(frame["product_id"])


def test_resample_by_weight_keeps_expected_copies():
    frame = pd.DataFrame({"weight": [1.0, 2.5, 4.0], "id": [0, 1, 2]})
    counts = [resample_by_weight(frame, seed)["id"].value_counts().reindex([0, 1, 2]).tolist() for seed in range(200)]
    means = pd.DataFrame(counts).mean()
    assert means[0] == 1.0 and means[2] == 4.0 and 2.3 < means[1] < 2.7


def test_holdout_split_keeps_a_session_on_one_side():
    records = [r for s in range(40) for r in a_list(clicks=(2,), session=f"s{s}")]
    frame, _ = examples_from_events(records, TEXTS)
    train, held = split_holdout(frame, 0.25, seed=0)
    assert len(train) + len(held) == len(frame) and 0 < len(held) < len(frame)
    assert not set(train["split_group"]) & set(held["split_group"])


def test_policy_fires_on_examples_timeout_and_respects_cooldown():
    policy = UpdatePolicy(min_examples=4, max_wait_s=60, min_examples_on_timeout=2, cooldown_s=10)
    window = PendingWindow(policy, TEXTS, eta=1.0, max_weight=10.0)
    assert window.due(now=200.0, last_update_end=None) is None  # empty
    window.add(a_list(clicks=(1,)))  # 2 examples
    assert window.examples == 2 and window.due(now=101.0, last_update_end=None) is None
    assert "waited" in window.due(now=161.0, last_update_end=None)  # timeout with >= 2 examples
    window.add(a_list(clicks=(3,), session="s2"))  # +4 examples
    assert "labelled examples" in window.due(now=101.0, last_update_end=None)
    assert window.due(now=101.0, last_update_end=95.0) is None  # cooldown
    assert window.due(now=101.0, last_update_end=95.0, force=True) == "forced"
    assert window.span()["events"] == 14
    window.clear()
    assert window.examples == 0 and window.due(now=500.0, last_update_end=None) is None


def test_recent_products_newest_first_and_popular_ignore_flags_and_impressions():
    state = RecentProducts(per_user=3)
    state.observe([rec("impression", "P9", 0), rec("click", "P1", 0), rec("click", "P2", 1), rec("purchase", "P1", 0),
                   rec("click", "P3", 2, flags=("user_rate",)), rec("click", "P4", 0, user="u2")])
    assert state.recent("u1", 5) == ["P1", "P2"]
    assert state.popular(2) == ["P1", "P2"] and state.popular(1, exclude={"P1"}) == ["P2"]
    state.observe([rec("click", p, 0) for p in ("P5", "P6", "P7")])
    assert state.recent("u1", 5) == ["P7", "P6", "P5"]  # bounded per user


def test_surge_holds_a_window_at_several_times_the_usual_rate():
    def span(events, seconds):
        return {"events": events, "first_ingested_at": 1000.0, "last_ingested_at": 1000.0 + seconds}

    history = [{"examples": {"span": span(500, 25)}, "reason": "ok"}, {"examples": {"span": span(2000, 110)}, "reason": "ok"},
               {"examples": {"span": span(9000, 100)}, "reason": "traffic surge: ..."}]  # earlier surges do not count
    assert window_rate(span(500, 25)) == 20.0 and window_rate(span(5, 0.2)) is None
    assert surge(span(1500, 60), history, factor=3.0) is None  # 25/s against a usual ~19.1/s
    held = surge(span(14000, 140), history, factor=3.0)  # 100/s
    assert held.startswith("traffic surge") and "5.2x" in held
    assert surge(span(14000, 140), [], factor=3.0) is None  # no history: nothing to compare with
    assert surge(span(14000, 140), history, factor=0) is None  # off
    # a held window released by hand is that window again: its decision leaves the usual rate alone
    released = [*history, {"examples": {"span": span(9000, 100)}, "reason": "no regression", "released": "update-00003"}]
    assert "5.2x" in surge(span(14000, 140), released, factor=3.0)


def test_a_window_the_anomaly_screen_mostly_flagged_is_held_and_leaves_the_usual_rate_alone():
    shoppers = [rec("impression", "P1", 0, session=f"s{i}") for i in range(300)]
    bots = [rec("click", "P9", 5, session=f"b{i}", flags=("no_impression",)) for i in range(100)]
    held = flagged(shoppers + bots, max_share=0.2, min_flagged=20)
    assert held.startswith("flagged traffic") and "100 of 400" in held
    assert flagged(shoppers + bots[:60], max_share=0.2, min_flagged=20) is None  # 60 of 360: 17 %
    assert flagged(shoppers[:40] + bots[:15], max_share=0.2, min_flagged=20) is None  # too few flags to judge
    assert flagged(shoppers + bots, max_share=1.0, min_flagged=20) is None  # off
    assert flagged([], max_share=0.2, min_flagged=20) is None

    def span(events, seconds):
        return {"events": events, "first_ingested_at": 0.0, "last_ingested_at": float(seconds)}
    # a held flood's rate is not the usual rate the surge guard compares with
    history = [{"examples": {"span": span(1000, 100)}, "reason": "ok"},
               {"examples": {"span": span(9000, 100)}, "reason": held}]
    assert surge(span(4000, 100), history, factor=3.0).startswith("traffic surge")
    with pytest.raises(ValueError, match="max_flagged_share"):
        UpdatePolicy(max_flagged_share=0.0)


def test_a_flood_in_the_last_seconds_of_an_ordinary_window_is_a_surge():
    """As in a freshness_bench run: 2 minutes of shoppers at ~9 events/s, then the first 10 s of a
    bot flood at ~60/s. The window's average (~12/s) looks ordinary; its busiest 20 s do not (the
    2-s burst check is off here: it would hold this window too)."""
    from core.stream_config import UpdatePolicy

    history = [{"examples": {"span": {"events": 900, "first_ingested_at": 0.0, "last_ingested_at": 100.0}},
                "reason": "ok"}]  # usual 9/s
    window = PendingWindow(UpdatePolicy(surge_burst_s=0), {}, eta=1.0, max_weight=2.0)
    shoppers = [1000.0 + i / 9 for i in range(1080)]  # 120 s
    flood = [1120.0 + i / 60 for i in range(600)]  # 10 s
    window.records = [{"offset": i, "ingested_at": t} for i, t in enumerate(shoppers + flood)]
    span = window.span()
    assert window_rate(span) < 3 * 9  # the average alone would pass
    assert span["peak_events_per_s"] > 30  # 20 s holding the 10 s of flood
    held = surge(span, history, factor=3.0)
    assert held is not None and "at its peak" in held
    window.records = [{"offset": i, "ingested_at": t} for i, t in enumerate(shoppers)]
    assert surge(window.span(), history, factor=3.0) is None  # the same shoppers without the flood
    assert peak_rate([0.0, 1.0, 2.0], 20.0) is None  # shorter than the stretch: the average decides
    assert peak_rate([0.0, 0.5, 1.0, 30.0], 20.0) == pytest.approx(3 / 20)


def test_a_flood_of_a_few_seconds_that_the_peak_stretch_dilutes_is_a_surge():
    """As in a fading_line run: shoppers at ~60 events/s, and in the window's first second ~600 bot
    events. Its busiest 20 s hold 91/s (1.5x the usual 60/s: it passed); its busiest 2 s do not.
    A few events close together in a quiet stream are no burst (min events)."""
    from core.stream_config import UpdatePolicy

    history = [{"examples": {"span": {"events": 6000, "first_ingested_at": 0.0, "last_ingested_at": 100.0}},
                "reason": "ok"}]  # usual 60/s
    window = PendingWindow(UpdatePolicy(), {}, eta=1.0, max_weight=2.0)
    flood = [1000.0 + i / 600 for i in range(600)]  # 1 s
    shoppers = [1000.0 + i / 60 for i in range(60 * 30)]  # 30 s
    window.records = [{"offset": i, "ingested_at": t} for i, t in enumerate(sorted(flood + shoppers))]
    span = window.span()
    assert span["peak_events_per_s"] < 3 * 60 < span["burst_events_per_s"]
    held = surge(span, history, factor=3.0)
    assert held is not None and "in its busiest seconds" in held
    window.records = [{"offset": i, "ingested_at": t} for i, t in enumerate(shoppers)]
    assert surge(window.span(), history, factor=3.0) is None  # the same shoppers without the flood
    quiet = [{"events": 60, "first_ingested_at": 0.0, "last_ingested_at": 60.0}]  # usual 1/s
    clump = [0.0 + i / 20 for i in range(20)] + [10.0 + i for i in range(50)]  # 20 events in 1 s, then 1/s
    assert peak_rate(clump, 2.0, min_events=100) is None
    window.records = [{"offset": i, "ingested_at": t} for i, t in enumerate(clump)]
    assert surge(window.span(), [{"examples": {"span": quiet[0]}, "reason": "ok"}], factor=3.0) is None


def test_the_window_counts_examples_incrementally_as_one_full_labelling_would():
    from data_pipelines.catalog import generate_catalog
    from data_pipelines.simulator import ShopperSimulator, pick_trend

    catalog = generate_catalog(seed=1, n_products=120, n_queries=20, candidates_per_query=10)
    sim = ShopperSimulator(catalog, seed=4, drift=pick_trend(catalog))
    events = sim.sessions(60, lambda text, qid: sim.pool(qid), start_ts=1.8e9)
    records = [{**e, "user": e["user_id"], "session": e["session_id"], "offset": i, "flags": ["rate"] if i % 17 == 0 else [],
                "ingested_at": 1.8e9 + i} for i, e in enumerate(events)]
    texts = dict(zip(catalog.products["product_id"], catalog.products["title"]))
    window = PendingWindow(UpdatePolicy(), texts, eta=1.0, max_weight=2.0)
    for start in range(0, len(records), 37):  # polls that cut result lists in two
        window.add(records[start:start + 37])
        full = len(examples_from_events(window.records, texts, 1.0, 2.0)[0])
        assert window.examples == full
    assert window.examples > 0
    window.clear()
    window.add(records[:10])
    assert window.examples == len(examples_from_events(records[:10], texts, 1.0, 2.0)[0])


def test_events_join_a_window_once_the_watch_has_passed_over_them():
    records = [{"offset": i, "ingested_at": t} for i, t in enumerate([100.0, 130.0, 150.0, 149.0, 200.0])]
    assert aged(records, now=239.5, watch_s=90.0) == 2  # 149 is 90.5 s old but waits behind 150: log order is kept
    assert aged(records, now=240.0, watch_s=90.0) == 4
    assert aged(records, now=290.0, watch_s=90.0) == 5
    assert aged(records, now=100.0, watch_s=0.0) == 5 and aged([], now=1.0, watch_s=90.0) == 0
