"""Unit tests for the seeded shopper simulator (no Ray, small catalog)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from core.events import normalize_event
from core.metrics import ndcg_at_k
from data_pipelines.catalog import generate_catalog, grade, write_catalog
from data_pipelines.simulator import (
    DEFAULT_RATES,
    N_BOTS,
    Drift,
    Session,
    ShopperSimulator,
    main,
    pick_trend,
    true_grade,
)

START = 1_735_689_600.0


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog(seed=0, n_products=400, n_queries=120)


@pytest.fixture(scope="module")
def trend(catalog):
    return pick_trend(catalog, seed=0)


def pool_ranker(sim: ShopperSimulator):
    return lambda text, qid: sim.pool(qid)


def graded(sim: ShopperSimulator, catalog, events: list[dict]) -> list[tuple[dict, int]]:
    """Each event with the true grade of its product for its query, found by text (in the test
    catalog, queries that share a text share their intent too)."""
    qid_of = dict(zip(catalog.queries["text"], catalog.queries["query_id"]))
    return [(e, sim.truth(qid_of[e["query"]], [e["product_id"]])[0]) for e in events]


def clicks_with_grades(sim: ShopperSimulator, catalog, events: list[dict]) -> list[tuple[int, int]]:
    """(true grade, clicked 0/1) for every impression."""
    clicked = {(e["session_id"], e["position"]) for e in events if e["type"] == "click"}
    return [(g, int((e["session_id"], e["position"]) in clicked))
            for e, g in graded(sim, catalog, events) if e["type"] == "impression"]


# ------------------------------------------------------------------ events
def test_same_seed_same_events_other_seed_differs(catalog, trend):
    def run(seed):
        sim = ShopperSimulator(catalog, seed=seed, drift=trend)
        return sim.sessions(40, pool_ranker(sim), START)

    first = run(3)
    assert first == run(3)
    assert first != run(4)


@pytest.mark.parametrize("behaviour", ["shopper", "random_bot", "adversarial", "stealthy"])
def test_every_event_is_a_valid_raw_event(catalog, trend, behaviour):
    sim = ShopperSimulator(catalog, seed=1, drift=trend)
    events = sim.sessions(60, pool_ranker(sim), START, behaviour=behaviour)
    assert {"impression", "click"} <= {e["type"] for e in events}
    for e in events:
        normalize_event(e, salt="test", now=START)
    assert len({e["event_id"] for e in events}) == len(events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_session_events_follow_the_funnel(catalog):
    sim = ShopperSimulator(catalog, seed=2, eta=0.0)
    events = sim.sessions(200, pool_ranker(sim), START)
    by_session = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(e)
    for evs in by_session.values():
        impressions = [e for e in evs if e["type"] == "impression"]
        assert [e["position"] for e in impressions] == list(range(sim.k))
        assert len({(e["user_id"], e["query"]) for e in evs}) == 1
        shown = {e["product_id"] for e in impressions}
        clicked = {e["product_id"] for e in evs if e["type"] == "click"}
        assert clicked <= shown
        carted = [e["product_id"] for e in evs if e["type"] == "add_to_cart"]
        assert carted == [e["product_id"] for e in evs if e["type"] == "purchase"]
        assert set(carted) <= clicked
        assert max(e["ts"] for e in evs) - min(e["ts"] for e in evs) < 3600
    assert Counter(e["type"] for e in events)["purchase"] > 0


def test_position_bias(catalog):
    sim = ShopperSimulator(catalog, seed=5, p_click=(0.6, 0.6, 0.6))
    qid = catalog.queries["query_id"].iloc[0]
    shown = sim.pool(qid)[:10]
    session = Session("u1", "s1", qid, "some query")
    clicks = Counter()
    n = 3000
    for i in range(n):
        for e in sim.browse(session, shown, START + i):
            clicks[e["position"]] += e["type"] == "click"
    ctr = [clicks[p] / n for p in range(10)]
    assert ctr[0] > ctr[5] > ctr[9]
    assert ctr[0] == pytest.approx(0.6, abs=0.04)
    assert ctr[9] == pytest.approx(0.06, abs=0.02)


def test_click_rate_rises_with_true_grade(catalog):
    sim = ShopperSimulator(catalog, seed=6, eta=0.0)  # every position examined
    pairs = clicks_with_grades(sim, catalog, sim.sessions(400, pool_ranker(sim), START))
    ctr = {g: np.mean([c for gg, c in pairs if gg == g]) for g in (0, 1, 2)}
    assert ctr[0] < ctr[1] < ctr[2]
    assert ctr[2] == pytest.approx(0.75, abs=0.05)


# ------------------------------------------------------------------ drift
def shoe(brand: str, ptype: str = "running shoes", category: str = "footwear") -> dict:
    return {"product_type": ptype, "category": category, "brand": brand, "colour": "navy",
            "material": "mesh", "size": "10", "price": 80.0}


def test_drift_semantics_by_hand():
    drift = Drift(category="footwear", brand="Acme")
    assert drift.kind == "brand_trend" and drift.name == "Acme trend in footwear"
    want = {"product_type": "running shoes"}
    cases = [(shoe("Acme"), 2, 2),                       # trend, exact: stays 2
             (shoe("Strivo"), 2, 1),                     # non-trend exact drops to 1
             (shoe("ACME", "walking shoes"), 1, 2),      # trend, near type: gains
             (shoe("Strivo", "walking shoes"), 1, 1),
             (shoe("Acme", "t-shirt", "tops"), 0, 0)]    # trend brand, irrelevant: stays 0
    for product, base, drifted in cases:
        assert grade(want, product) == base
        assert true_grade(want, product, drift) == drifted
        assert true_grade(want, product, None) == base
    branded = {"product_type": "running shoes", "brand": "Strivo"}
    assert true_grade(branded, shoe("Strivo"), drift) == 2  # names a brand: unaffected
    assert true_grade(want, shoe("Strivo"), Drift(category="tops", brand="Acme")) == 2
    with pytest.raises(ValueError, match="kind"):
        Drift(kind="price_shock", category="footwear", brand="Acme")


def test_drift_on_catalog(catalog, trend):
    sim = ShopperSimulator(catalog, drift=trend)
    affected = set(sim.affected_queries())
    assert affected
    brand = dict(zip(catalog.products["product_id"], catalog.products["brand"]))
    gained = dropped = 0
    for qid, grp in catalog.judgements.groupby("query_id"):
        pids, base = list(grp["product_id"]), list(grp["grade"])
        drifted = sim.truth(qid, pids)
        if qid not in affected:
            assert drifted == base
            continue
        for pid, b, d in zip(pids, base, drifted):
            if brand[pid] == trend.brand:
                assert d == (2 if b >= 1 else 0)
                gained += b == 1
            else:
                assert d == (1 if b == 2 else b)
                dropped += b == 2
    assert gained > 0 and dropped > 0
    sim.set_drift(None)
    assert sim.affected_queries() == []
    qid = sorted(affected)[0]
    assert sim.truth(qid, sim.pool(qid)) == list(
        catalog.judgements.loc[catalog.judgements["query_id"] == qid, "grade"])


def test_affected_queries_hold_several_trend_products(catalog, trend):
    sim = ShopperSimulator(catalog, drift=trend)
    brand = dict(zip(catalog.products["product_id"], catalog.products["brand"]))
    counts = [sum(brand[p] == trend.brand and g == 2
                  for p, g in zip(sim.pool(q), sim.truth(q, sim.pool(q))))
              for q in sim.affected_queries()]
    assert np.mean(counts) >= 2
    assert pick_trend(catalog, seed=0) == trend  # deterministic per seed


def test_sessions_favour_affected_queries_while_drift_is_on(catalog, trend):
    sim = ShopperSimulator(catalog, seed=7, drift=trend, drift_share=0.7)
    affected = set(sim.affected_queries())
    share = np.mean([sim.next_session().query_id in affected for _ in range(2000)])
    expected = 0.7 + 0.3 * len(affected) / len(catalog.queries)
    assert share == pytest.approx(expected, abs=0.04)
    sim.set_drift(None)
    share = np.mean([sim.next_session().query_id in affected for _ in range(2000)])
    assert share == pytest.approx(len(affected) / len(catalog.queries), abs=0.04)


def test_ndcg_against_the_truth(catalog, trend):
    sim = ShopperSimulator(catalog, drift=trend)
    qid = sim.affected_queries()[0]
    pool = sim.pool(qid)
    truth = sim.truth(qid, pool)
    best = [p for _, p in sorted(zip(truth, pool), key=lambda t: -t[0])]
    assert sim.ndcg(qid, best) == pytest.approx(1.0)
    assert sim.ndcg(qid, best[::-1]) < 0.5
    shuffled = list(np.random.default_rng(0).permutation(pool))
    expected = ndcg_at_k(-np.arange(len(pool)), sim.truth(qid, shuffled), k=10)
    assert sim.ndcg(qid, shuffled) == pytest.approx(expected)
    assert sim.ndcg(qid, best[:3]) < 1.0  # empty slots earn nothing
    with pytest.raises(ValueError, match="unknown query"):
        sim.ndcg("Q9999", best)


# ------------------------------------------------------------------ poisoning behaviours
def busiest_second(events: list[dict]) -> dict[str, int]:
    """For each user, the most clicks they fired within one second."""
    ts = defaultdict(list)
    for e in events:
        if e["type"] == "click":
            ts[e["user_id"]].append(e["ts"])
    return {u: int(max(np.searchsorted(t, np.array(t) + 1.0) - np.arange(len(t))))
            for u, t in ((u, sorted(t)) for u, t in ts.items())}


def test_random_bot_clicks_without_impressions_at_high_rates(catalog):
    sim = ShopperSimulator(catalog, seed=8)
    bots = sim.sessions(200, pool_ranker(sim), START, behaviour="random_bot")
    assert len({e["user_id"] for e in bots}) <= N_BOTS
    impressed = {(e["session_id"], e["position"]) for e in bots if e["type"] == "impression"}
    clicks = [e for e in bots if e["type"] == "click"]
    blind = np.mean([(e["session_id"], e["position"]) not in impressed for e in clicks])
    assert 0.3 < blind < 0.7
    assert min(busiest_second(bots).values()) >= 10
    span = max(e["ts"] for e in bots) - min(e["ts"] for e in bots)
    assert len(bots) / span / N_BOTS > 20  # events per second per bot account

    shoppers = sim.sessions(200, pool_ranker(sim), START)
    impressed = {(e["session_id"], e["position"]) for e in shoppers if e["type"] == "impression"}
    assert all((e["session_id"], e["position"]) in impressed
               for e in shoppers if e["type"] == "click")
    assert max(busiest_second(shoppers).values()) == 1


def test_adversarial_clicks_go_to_the_least_relevant(catalog):
    sim = ShopperSimulator(catalog, seed=9, eta=0.5)
    shoppers = clicks_with_grades(sim, catalog, sim.sessions(300, pool_ranker(sim), START))
    adversaries_events = sim.sessions(300, pool_ranker(sim), START, behaviour="adversarial")
    adversaries = clicks_with_grades(sim, catalog, adversaries_events)
    clicked_grade = {name: np.mean([g for g, c in pairs if c])
                     for name, pairs in (("shopper", shoppers), ("adversarial", adversaries))}
    assert clicked_grade["adversarial"] < 0.6 < 1.2 < clicked_grade["shopper"]
    ctr = {g: np.mean([c for gg, c in adversaries if gg == g]) for g in (0, 1, 2)}
    assert ctr[0] > ctr[1] > ctr[2]
    users = {e["user_id"] for e in adversaries_events}
    assert len(users) > 200 and all(u.startswith("u") for u in users)
    assert all(int(u[1:]) >= sim.n_users for u in users)  # distinct from the shoppers
    purchased = [g for e, g in graded(sim, catalog, adversaries_events) if e["type"] == "purchase"]
    assert purchased and np.mean(purchased) < 0.5


def events_by_session(events: list[dict]) -> dict[str, list[dict]]:
    sessions = defaultdict(list)
    for e in events:
        sessions[e["session_id"]].append(e)
    return sessions


def test_stealthy_farm_hides_among_many_ordinary_accounts(catalog):
    sim = ShopperSimulator(catalog, seed=10)
    assert DEFAULT_RATES["stealthy"] == DEFAULT_RATES["shopper"]
    events = sim.sessions(500, pool_ranker(sim), START, behaviour="stealthy")
    users = {e["user_id"] for e in events}
    assert len(users) >= 50 and all(u.startswith("u") for u in users)
    assert all(int(u[1:]) >= 2 * sim.n_users for u in users)  # not shoppers, not adversaries
    assert "purchase" not in {e["type"] for e in events}


def test_stealthy_sessions_search_only_the_attack_queries(catalog):
    sim = ShopperSimulator(catalog, seed=11)
    assert sim.attack_queries == ()
    sim.next_session("stealthy")
    picked = sim.attack_queries
    assert len(picked) == 3
    again = ShopperSimulator(catalog, seed=11)
    again.next_session("stealthy")
    assert again.attack_queries == picked  # deterministic per seed

    chosen = list(catalog.queries["query_id"].iloc[[4, 17]])
    sim.set_attack_queries(chosen)
    assert sim.attack_queries == tuple(chosen)
    texts = set(catalog.queries.set_index("query_id").loc[chosen, "text"])
    events = sim.sessions(200, pool_ranker(sim), START, behaviour="stealthy")
    assert {e["query"] for e in events} == texts
    assert {sim.next_session("stealthy").query_id for _ in range(200)} == set(chosen)


def test_stealthy_clicks_go_to_the_least_relevant_shown(catalog, trend):
    sim = ShopperSimulator(catalog, seed=12, drift=trend)
    sim.set_attack_queries(sim.affected_queries()[:3])  # the drifted truth decides
    events = sim.sessions(300, pool_ranker(sim), START, behaviour="stealthy")
    text = dict(zip(catalog.queries["query_id"], catalog.queries["text"]))
    qid_of = {text[q]: q for q in sim.attack_queries}
    with_grade_0 = 0
    for evs in events_by_session(events).values():
        impressions = [e for e in evs if e["type"] == "impression"]
        clicks = [e for e in evs if e["type"] == "click"]
        assert [e["position"] for e in impressions] == list(range(sim.k))
        assert evs[: len(impressions)] == impressions  # impressions come first
        assert 1 <= len(clicks) <= 2
        gaps = np.diff([evs[0]["ts"]] + [e["ts"] for e in clicks])
        assert ((gaps > 1.99) & (gaps < 30.01)).all()  # ts are rounded to ms
        shown = [e["product_id"] for e in impressions]
        grades = sim.truth(qid_of[evs[0]["query"]], shown)
        assert all(shown[e["position"]] == e["product_id"] for e in clicks)
        clicked = [grades[e["position"]] for e in clicks]
        assert sorted(clicked) == sorted(grades)[: len(clicks)]  # the least relevant shown
        if 0 in grades:
            with_grade_0 += 1
            assert 0 in clicked
    assert with_grade_0 > 0


def test_set_attack_queries_rejects_unknown_and_empty(catalog):
    sim = ShopperSimulator(catalog)
    known = catalog.queries["query_id"].iloc[0]
    with pytest.raises(ValueError, match="unknown attack query id.*Q9999"):
        sim.set_attack_queries([known, "Q9999"])
    with pytest.raises(ValueError, match="at least one query id"):
        sim.set_attack_queries([])
    assert sim.attack_queries == ()  # a rejected call changes nothing


# ------------------------------------------------------------------ CLI
def test_cli_writes_events(catalog, tmp_path, capsys):
    write_catalog(catalog, tmp_path / "catalog")
    out = tmp_path / "events.jsonl"
    assert main(["--catalog", str(tmp_path / "catalog"), "--sessions", "30", "--out", str(out),
                 "--drift"]) == 0
    printed = capsys.readouterr().out
    assert "impression: 300" in printed and "drift:" in printed
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(e["type"] == "impression" for e in events) == 300
    for e in events:
        normalize_event(e, salt="test")
    parquet = tmp_path / "events.parquet"
    assert main(["--catalog", str(tmp_path / "catalog"), "--sessions", "30",
                 "--out", str(parquet), "--drift"]) == 0
    frame = pd.read_parquet(parquet)
    assert list(frame["event_id"]) == [e["event_id"] for e in events]
    assert list(frame["position"]) == [e["position"] for e in events]


@pytest.mark.parametrize("args, message", [
    (["--catalog", "/nonexistent/catalog", "--out", "x.jsonl"], "--catalog"),
    (["--catalog", "{cat}", "--out", "x.csv"], "--out"),
    (["--catalog", "{cat}", "--out", "x.jsonl", "--sessions", "0"], "--sessions"),
])
def test_cli_rejects_bad_arguments(catalog, tmp_path, capsys, args, message):
    write_catalog(catalog, tmp_path / "cat")
    args = [a.replace("{cat}", str(tmp_path / "cat")) for a in args]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and message in err
