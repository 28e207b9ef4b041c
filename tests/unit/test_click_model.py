"""Unit tests of the online click model (core.click_model and its parts): learning a preference
against position bias, transfer through attribute keys, the safeguards, snapshots and replay."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click_world import START, Shoppers, products

from core import audit
from core.click_config import ClickModelConfig
from core.click_evidence import Decayed, PositionModel, ratio_bounds
from core.click_guard import format_record
from core.click_model import ClickModel, catalog_for
from core.click_snapshot import Snapshot, empty_snapshot, parse_key
from core.config import ConfigError, from_dict

F006 = "footwear|product=F006"  # a running shoe (Paceline, red, mesh)


def model(**overrides) -> ClickModel:
    """The test world's few hundred shoppers search the same queries session after session without
    buying, which the repeated-search rule quarantines: it is off here but in its own tests."""
    cfg = ClickModelConfig(**{"max_query_sessions": 0, **overrides})
    return ClickModel(cfg, catalog_for(products(), cfg))


def learn_until(m: ClickModel, shoppers: Shoppers, done, chunk: int = 25, most: int = 1200) -> int:
    """Feeds sessions in chunks until done(snapshot); the sessions it took (fails past `most`)."""
    for n in range(chunk, most + 1, chunk):
        m.observe(shoppers.stream(chunk))
        if done(m.snapshot()):
            return n
    pytest.fail(f"not learnt within {most} sessions")


def decisions(m: ClickModel, key: str) -> list[dict]:
    return [r for r in m.drain_audit() if r["key"] == key]


# ------------------------------------------------------------------ learning against position bias
def test_preferred_product_rises_but_the_top_result_gets_no_boost():
    m = model()
    shoppers = Shoppers(seed=1, queries=("running shoes", "t-shirt"), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    sessions = learn_until(m, shoppers, lambda s: s.effect(F006) >= 0.2)
    assert sessions <= 600
    snap = m.snapshot()
    # F000 is always shown first and clicked as often as its position and score predict: more
    # clicks than the preferred product, and no boost
    assert shoppers.clicks["F000"] >= shoppers.clicks["F006"]
    lower, mean, upper = m.ratio("footwear|product=F000")
    assert lower < m.ratio("footwear")[1] < upper
    assert snap.effect("footwear|product=F000") == 0.0
    hits = [("F000", 1.8), ("F003", 1.3), ("F009", 1.2), ("F006", 1.1), ("F012", 1.0)]
    adjusted = snap.adjust("running shoes", hits, m.catalog)
    assert adjusted.applied == {"F006": [F006]}
    order = [p for p, _ in sorted(adjusted.hits, key=lambda h: -h[1])]
    assert order.index("F006") <= 1 and order[0] == "F000"
    assert dict(adjusted.hits)["F000"] == 1.8


def test_attribute_preference_transfers_to_a_query_nobody_searched():
    m = model()
    shoppers = Shoppers(seed=2, queries=("running shoes", "walking shoes", "t-shirt"))
    shoppers.prefer = lambda p, segment: 3.0 if segment == "footwear" and p["colour"] == "navy" else 1.0
    learn_until(m, shoppers, lambda s: s.effect("footwear|colour=navy") >= 0.25, most=1500)
    snap = m.snapshot()
    # hiking boots were never searched nor shown; the navy ones (F002, F017, F032, F035) rise
    boots = [("F005", 1.4), ("F008", 1.3), ("F011", 1.2), ("F002", 1.1), ("F017", 1.0), ("F014", 0.9)]
    adjusted = snap.adjust("hiking boots", boots, m.catalog)
    assert adjusted.applied["F002"] == adjusted.applied["F017"] == ["footwear|colour=navy"]
    # the other colours sit under the segment's ratio (navy lifts it): never above it
    assert all(parse_key(k)[1] == "colour" and snap.effect(k) < 0
               for p, keys in adjusted.applied.items() if p not in ("F002", "F017") for k in keys)
    order = [p for p, _ in sorted(adjusted.hits, key=lambda h: -h[1])]
    assert order.index("F002") < order.index("F008") and order.index("F017") < order.index("F011")
    # the key is footwear's: a navy cardigan in an unsearched tops query is left alone
    cardigans = [("T002", 1.0), ("T005", 0.9)]  # T002 is navy
    assert snap.adjust("cardigan", cardigans, m.catalog).hits == cardigans


def test_boosts_sized_at_a_lower_level_are_larger_penalties_and_judgements_unchanged():
    """`boost_confidence` sizes what an active boost does; penalties and whether a key is active
    stay on `confidence`."""
    streams = Shoppers(seed=2, queries=("running shoes", "walking shoes", "t-shirt"))
    streams.prefer = lambda p, segment: 3.0 if segment == "footwear" and p["colour"] == "navy" else 1.0
    records = streams.stream(600)
    strict, sized = model(boost_confidence=None), model(boost_confidence=0.8)
    strict.observe(records)
    sized.observe(records)
    assert strict.drain_audit() == sized.drain_audit()  # the same activations and freezes, at the same offsets
    assert strict.guard.status == sized.guard.status
    a, b = dict(strict.snapshot().effects), dict(sized.snapshot().effects)
    # an active boost whose strict bound wavered back under the segment's ratio has no effect; sized
    # at the lower level it may still have one
    assert a.keys() <= b.keys() and "footwear|colour=navy" in a
    assert all(b[k] >= a[k] > 0 for k in a if a[k] > 0) and b["footwear|colour=navy"] > a["footwear|colour=navy"]
    penalties = [k for k in a if a[k] < 0]
    assert penalties and all(b[k] == a[k] for k in penalties)


def test_a_query_that_states_the_attribute_neither_feeds_nor_gets_its_keys():
    m = model()
    shoppers = Shoppers(seed=2, queries=("running shoes", "walking shoes", "t-shirt"))
    shoppers.prefer = lambda p, segment: 3.0 if segment == "footwear" and p["colour"] == "navy" else 1.0
    learn_until(m, shoppers, lambda s: s.effect("footwear|colour=navy") >= 0.25, most=1500)
    snap = m.snapshot()
    boots = [("F005", 1.4), ("F002", 1.1), ("F017", 1.0)]  # F002, F017 navy
    assert m.catalog.stated_fields("Red hiking boots") == {"colour"}
    assert m.catalog.stated_fields("acme red hiking boots") == {"brand", "colour"}
    assert snap.adjust("red hiking boots", boots, m.catalog).hits == boots  # asked for red: navy's lift is moot
    assert snap.adjust("hiking boots", boots, m.catalog).applied["F002"] == ["footwear|colour=navy"]
    # and such searches feed no colour key and no product key: evidence stays where it was
    before = {k: (ev.observed.to_list(), ev.expected.to_list()) for k, ev in m.keys.items()}
    stated = Shoppers(seed=3, queries=("running shoes",))
    records = [{**r, "query": "navy running shoes", "offset": m.offset + i} for i, r in enumerate(stated.stream(40))]
    m.observe(records)
    moved = {k for k, ev in m.keys.items() if (ev.observed.to_list(), ev.expected.to_list()) != before.get(k)}
    assert moved and all(parse_key(k)[1] not in ("colour", "product") for k in moved)
    assert {parse_key(k)[0] for k in moved} == {"footwear[colour]"}  # kept apart from queries stating nothing


def test_what_queries_stating_nothing_teach_on_other_fields_is_not_applied_to_a_query_stating_one():
    """Shoppers who state no colour prefer knit (a colour trend would make the materials of the
    unwanted colours look unwanted the same way): a query for red boots is left alone; what shoppers
    who state a colour prefer is learnt in the signed segment and applied to such queries only."""
    m = model()
    shoppers = Shoppers(seed=2, queries=("running shoes", "walking shoes", "t-shirt"))
    shoppers.prefer = lambda p, segment: 3.0 if segment == "footwear" and p["material"] == "knit" else 1.0
    learn_until(m, shoppers, lambda s: s.effect("footwear|material=knit") >= 0.15, most=1500)
    boots = [("F005", 1.4), ("F020", 1.1), ("F017", 1.0)]  # F005 mesh, F017 and F020 knit (i // 16 == 1)
    assert m.snapshot().adjust("red hiking boots", boots, m.catalog).hits == boots
    assert m.snapshot().adjust("hiking boots", boots, m.catalog).applied["F020"] == ["footwear|material=knit"]
    learn_until(m, _Stating(shoppers, "red"), lambda s: s.effect("footwear[colour]|material=knit") >= 0.1, most=2500)
    snap = m.snapshot()
    assert snap.adjust("red hiking boots", boots, m.catalog).applied["F020"] == ["footwear[colour]|material=knit"]
    assert snap.adjust("hiking boots", boots, m.catalog).applied["F020"] == ["footwear|material=knit"]


class _Stating:
    """The same shoppers, each query with a word put in front (e.g. a colour they state)."""

    def __init__(self, shoppers: Shoppers, word: str):
        self.shoppers, self.word = shoppers, word

    def stream(self, n_sessions: int) -> list[dict]:
        return [{**r, "query": f"{self.word} {r['query']}"} for r in self.shoppers.stream(n_sessions)]


def test_a_family_word_states_its_field():
    """'green' states a colour when the catalog's greens are 'forest green' and 'sage green' (a family
    field's multi-word values end in their family); not for a field that is not a family field."""
    rows = [{"product_id": f"C{i}", "category": "outerwear", "product_type": "coat", "brand": brand,
             "colour": colour, "material": "wool"}
            for i, (brand, colour) in enumerate([("Maple Row", "forest green"), ("Oxley", "sage green"),
                                                 ("Oxley", "navy")])]
    cfg = ClickModelConfig()
    catalog = catalog_for(rows, cfg)
    assert catalog.stated_fields("belted coat stormhold green") == {"colour"}
    assert catalog.stated_fields("forest green coat") == {"colour"}
    assert catalog.stated_fields("wool coat") == {"material"}
    assert catalog.stated_fields("row of coats") == frozenset()  # brand is not a family field: 'Maple Row' only whole
    assert catalog_for(rows, ClickModelConfig(family_fields=[])).stated_fields("green coat") == frozenset()


def test_a_boost_never_lifts_what_the_reranker_finds_irrelevant():
    m = model(boost_min_score=0.5)
    shoppers = Shoppers(seed=2, queries=("running shoes", "walking shoes", "t-shirt"))
    shoppers.prefer = lambda p, segment: 3.0 if segment == "footwear" and p["colour"] == "navy" else 1.0
    learn_until(m, shoppers, lambda s: s.effect("footwear|colour=navy") >= 0.25, most=1500)
    snap = m.snapshot()
    adjusted = snap.adjust("hiking boots", [("F005", 1.4), ("F002", 0.4), ("F017", 0.6)], m.catalog)
    assert "F002" not in adjusted.applied and dict(adjusted.hits)["F002"] == 0.4  # navy, but scored irrelevant
    assert adjusted.applied["F017"] == ["footwear|colour=navy"] and dict(adjusted.hits)["F017"] > 0.6
    assert Snapshot.from_bytes(snap.to_bytes()).boost_min_score == 0.5


def test_segment_from_the_shown_products_when_the_text_names_none():
    m = model()
    hits = [("F001", 1.0), ("F004", 0.9), ("T001", 0.8)]
    assert m.catalog.text_segment("something comfy for jogging") is None
    assert m.catalog.query_segment("something comfy for jogging", hits, top_n=10) == "footwear"
    assert m.catalog.query_segment("Running-Shoes!", [], top_n=10) == "footwear"


# ------------------------------------------------------------------ credits and accounts
def test_a_key_with_too_few_distinct_users_stays_inactive():
    m = model(credit_interval_s=2.5)  # so 3 users can earn many credits: sessions are 3 s apart
    shoppers = Shoppers(seed=3, n_users=3, queries=("running shoes",))
    shoppers.prefer = lambda p, segment: 5.0 if p["product_id"] == "F006" else 1.0
    m.observe(shoppers.stream(400, step_s=3.0))
    lower = m.ratio(F006)[0]
    assert lower > m.ratio("footwear")[1]  # the evidence is strong ...
    assert m.snapshot().effect(F006) == 0.0  # ... but from 3 users
    assert not m.guard.is_active(F006) and not decisions(m, F006)


def test_one_user_clicking_a_hundred_times_counts_once_per_interval():
    m = model()
    shoppers = Shoppers(seed=4)
    impression = shoppers.record("u1", "s1", "impression", "F006", "running shoes", 3, 1.0)
    clicks = [shoppers.record("u1", "s1", "click", "F006", "running shoes", 3, None, 0.5 * i) for i in range(100)]
    counts = m.observe([impression, *clicks])
    assert counts == {"impression": 1, "click": 1, "repeat_credit": 99}
    assert m.keys[F006].observed.value == 1.0
    # a fresh impression after the credit interval opens a new unit: one more credit
    shoppers.ts += m.cfg.credit_interval_s + 60
    again = [shoppers.record("u1", "s2", "impression", "F006", "running shoes", 3, 1.0),
             shoppers.record("u1", "s2", "click", "F006", "running shoes", 3, None, 1.0)]
    assert m.observe(again) == {"impression": 1, "click": 1}
    assert m.keys[F006].observed.at(m.now, m.cfg.half_life_s) > 1.5


def test_flagged_unknown_and_unseen_events_are_left_out_by_reason():
    m = model()
    s = Shoppers(seed=5)
    flagged = {**s.record("u1", "s1", "click", "F006", "running shoes", 0, None), "flags": ["user_rate"]}
    no_query = {**s.record("u1", "s1", "impression", "F006", "running shoes", 0, 1.0), "query": None}
    unknown = s.record("u1", "s1", "impression", "X999", "running shoes", 0, 1.0)
    unseen = s.record("u1", "s1", "click", "F009", "running shoes", 2, None)
    assert m.observe([flagged, no_query, unknown, unseen]) == {
        "flagged": 1, "not_search": 1, "unknown_product": 1, "no_impression": 1}
    assert m.keys == {}


# ------------------------------------------------------------------ safeguards
def test_a_key_whose_evidence_comes_from_a_surge_is_frozen():
    """...and the accounts credited on it during the surge are suspects; the shoppers who clicked it
    before (none of them ever bought) are not: a surge says the moment is not genuine, not the key."""
    m = model()
    shoppers = Shoppers(seed=6, queries=("running shoes", "t-shirt"))
    ordinary = shoppers.stream(300)  # five minutes of ordinary traffic: the usual click rate
    m.observe(ordinary)
    flood = []
    for i in range(60):  # 60 fresh accounts within 12 s, each clicking F009 (a running shoe) shown last
        user, session = f"attacker{i}", f"attack{i}"
        flood.append(shoppers.record(user, session, "impression", "F009", "running shoes", 9, 0.3))
        flood.append(shoppers.record(user, session, "click", "F009", "running shoes", 9, None, 0.1))
        shoppers.ts += 0.2
    m.observe(flood)
    assert not m.guard.is_active("footwear|product=F009")  # too young to activate during the flood
    m.observe(shoppers.stream(150))  # ordinary shoppers see F009 again: the guard judges its evidence
    frozen = [r for r in decisions(m, "footwear|product=F009") if r["decision"] == "frozen"]
    assert frozen and frozen[0]["reason"].startswith("surge")
    assert m.guard.is_frozen("footwear|product=F009")
    assert m.snapshot().effect("footwear|product=F009") == 0.0
    attackers = {f"attacker{i}" for i in range(60)}
    genuine = {r["user"] for r in ordinary if r["type"] == "click" and r["product_id"] == "F009"}
    assert genuine and not genuine & set(m.suspects)
    assert len(attackers & set(m.suspects)) >= 40  # all but the first few, which came before the surge showed
    # frozen stays frozen, however the evidence looks later
    m.observe(shoppers.stream(50))
    assert m.guard.is_frozen("footwear|product=F009")


def test_an_event_stamped_after_its_arrival_does_not_move_the_clock_or_blind_the_surge_meter():
    """A client whose clock runs ahead (or a sender posting a session's later clicks and purchases
    at once) stamps events after their arrival. Event time is taken as at most the arrival time:
    otherwise one event 400 s ahead moves the model's clock there, and the surge meter, judging at
    that clock, no longer sees a flood arriving now (a freshness_bench run froze every key instead:
    its warm-up passed in 2 s and every click after it counted as a surge)."""
    m = model()
    shoppers = Shoppers(seed=6, queries=("running shoes", "t-shirt"))

    def arrived(records, ahead_s=0.0):
        return [{**r, "ts": r["ts"] + ahead_s, "ingested_at": r["ts"]} for r in records]

    m.observe(arrived(shoppers.stream(150)))
    m.observe(arrived(shoppers.stream(1), ahead_s=400.0))  # one shopper's events stamped 400 s ahead
    assert m.now < shoppers.ts + 60  # not 400 s ahead
    m.observe(arrived(shoppers.stream(150)))
    flood = []
    for i in range(60):
        user, session = f"attacker{i}", f"attack{i}"
        flood.append(shoppers.record(user, session, "impression", "F009", "running shoes", 9, 0.3))
        flood.append(shoppers.record(user, session, "click", "F009", "running shoes", 9, None, 0.1))
        shoppers.ts += 0.2
    m.observe(arrived(flood))
    m.observe(arrived(shoppers.stream(150)))
    frozen = [r for r in decisions(m, "footwear|product=F009") if r["decision"] == "frozen"]
    assert frozen and frozen[0]["reason"].startswith("surge")


def test_a_boost_whose_positions_stop_earning_clicks_is_frozen_with_an_audit_line(tmp_path):
    m = model()
    shoppers = Shoppers(seed=7, queries=("running shoes",))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    learn_until(m, shoppers, lambda s: m.guard.is_active(F006), chunk=5)
    activated = decisions(m, F006)
    assert [r["decision"] for r in activated] == ["activated"]
    assert activated[0]["metrics"]["users"] >= m.cfg.min_users
    shoppers.prefer = lambda p, segment: 0.1 if p["product_id"] == "F006" else 1.0  # shoppers stop clicking it
    learn_until(m, shoppers, lambda s: m.guard.is_frozen(F006), most=600)
    frozen = decisions(m, F006)[-1]
    assert frozen["decision"] == "frozen" and frozen["reason"].startswith("underdelivered")
    assert frozen["offset"] < m.offset
    assert m.snapshot().effect(F006) == 0.0
    path = tmp_path / "audit.jsonl"
    audit.append(path, frozen)
    line = format_record(audit.read(path)[-1])
    assert "frozen" in line and F006 in line and "underdelivered" in line


def test_admin_freeze_clear_and_off_switch():
    m = model()
    shoppers = Shoppers(seed=1, queries=("running shoes",), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    learn_until(m, shoppers, lambda s: s.effect(F006) > 0.1)
    before = m.snapshot()
    hits = [("F003", 1.3), ("F006", 1.1)]
    m.set_enabled(False)
    off = m.snapshot()
    assert off.version != before.version and off.effects == ()
    assert off.adjust("running shoes", hits, m.catalog).hits == hits
    m.set_enabled(True)
    m.freeze(F006)
    assert m.snapshot().effect(F006) == 0.0 and m.guard.is_frozen(F006)
    m.clear(F006)
    assert F006 not in m.keys and not m.guard.is_frozen(F006)
    assert [r["decision"] for r in m.drain_audit()][-4:] == ["disabled", "enabled", "frozen", "cleared"]
    with pytest.raises(ValueError, match="not a click-model key"):
        m.freeze("footwear|brand")


# ------------------------------------------------------------------ decay, snapshots, replay
def test_time_decay_halves_evidence_after_one_half_life():
    total = Decayed()
    total.add(8.0, START, 100.0)
    assert total.at(START + 100.0, 100.0) == pytest.approx(4.0)
    total.add(1.0, START - 100.0, 100.0)  # late event: decayed as of the latest time seen
    assert total.at(START, 100.0) == pytest.approx(8.5)

    m = model(half_life_s=600.0)
    shoppers = Shoppers(seed=8, queries=("running shoes",))
    m.observe(shoppers.stream(100))
    ev = m.keys["footwear"]
    observed, expected = ev.observed.at(m.now, 600.0), ev.expected.at(m.now, 600.0)
    ratio = m.ratio("footwear")
    shoppers.ts = m.now + 600.0  # one tops impression, one half-life later, moves the stream clock
    m.observe([shoppers.record("u1", "late", "impression", "T001", "t-shirt", 0, 1.0)])
    assert ev.observed.at(m.now, 600.0) == pytest.approx(observed / 2)
    assert ev.expected.at(m.now, 600.0) == pytest.approx(expected / 2)
    assert m.ratio("footwear")[1] == pytest.approx(ratio[1], rel=0.05)  # the ratio is unchanged, its certainty not
    assert m.ratio("footwear")[2] - m.ratio("footwear")[0] > ratio[2] - ratio[0]


def test_snapshot_round_trips_through_bytes_and_json():
    m = model()
    shoppers = Shoppers(seed=1, queries=("running shoes",), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    learn_until(m, shoppers, lambda s: s.effect(F006) > 0.1)
    snap = m.snapshot()
    again = Snapshot.from_bytes(snap.to_bytes())
    assert again == snap and again.version == snap.version == f"{m.offset}.0"
    assert Snapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    hits = [("F003", 1.3), ("F006", 1.1), ("F012", 1.0)]
    assert again.adjust("running shoes", hits, m.catalog) == snap.adjust("running shoes", hits, m.catalog)
    assert len(snap.to_bytes()) < 200 * (len(snap.effects) + 1)  # only active keys travel
    with pytest.raises(ValueError, match="format"):
        Snapshot.from_dict({**snap.to_dict(), "format": 99})


def test_checkpoint_and_replay_from_its_offset_match_an_uninterrupted_run():
    shoppers = Shoppers(seed=9, queries=("running shoes", "walking shoes", "t-shirt"), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["colour"] == "navy" else 1.0
    records = shoppers.stream(700)
    straight = model()
    straight.observe(records)

    restarted = model()
    cut = len(records) // 2
    restarted.observe(records[:cut])
    restarted.drain_audit()
    checkpoint = json.loads(json.dumps(restarted.state()))  # what the actor writes and reads back
    restarted = ClickModel.from_state(restarted.cfg, restarted.catalog, checkpoint)
    assert restarted.offset == cut
    counts = restarted.observe(records[cut - 300:])  # the log replays from before the checkpoint
    assert counts["replayed"] == 300
    assert restarted.snapshot().to_bytes() == straight.snapshot().to_bytes()
    assert straight.snapshot().effects  # something was learnt, so the comparison means something
    same = {k: v for k, v in straight.state().items() if k != "totals"}  # the restart counted its replays
    assert json.dumps({k: v for k, v in restarted.state().items() if k != "totals"}, sort_keys=True) == json.dumps(
        same, sort_keys=True)
    assert restarted.observe(records) == {"replayed": len(records)}


def test_queries_outside_active_keys_are_untouched():
    m = model()
    shoppers = Shoppers(seed=1, queries=("running shoes",), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    learn_until(m, shoppers, lambda s: s.effect(F006) > 0.1)
    snap = m.snapshot()
    assert {parse_key(k)[0] for k, _ in snap.effects} == {"footwear"}
    tops = [("T001", 1.234567), ("T002", 0.5), ("X999", 0.1)]
    assert snap.adjust("polo shirt", tops, m.catalog).hits == tops
    assert snap.adjust("polo shirt", tops, m.catalog).applied == {}
    shoes = [("F003", 1.3), ("F009", 1.2)]  # the active segment, but no active key of theirs
    assert snap.adjust("running shoes", shoes, m.catalog).hits == shoes
    assert empty_snapshot().adjust("running shoes", shoes + [("F006", 1.0)], m.catalog).hits == shoes + [("F006", 1.0)]


def test_effects_are_clipped():
    m = model(gain=5.0, max_boost=0.3, max_penalty=0.2)
    shoppers = Shoppers(seed=10, queries=("running shoes", "walking shoes"))
    shoppers.prefer = lambda p, segment: 6.0 if p["product_id"] == "F006" else (0.2 if p["brand"] == "Strivo" else 1.0)
    learn_until(m, shoppers, lambda s: s.effect(F006) > 0 and any(e < 0 for _, e in s.effects))
    snap = m.snapshot()
    assert max(e for _, e in snap.effects) <= 0.3 and min(e for _, e in snap.effects) >= -0.2
    assert snap.effect(F006) == pytest.approx(0.3)
    # several attribute keys on one product are clipped together
    many = Snapshot(offset=1, epoch=0, ts=START, enabled=True, max_boost=0.3, max_penalty=0.2, segment_top_n=10,
                    effects=(("footwear|brand=Acme", 0.25), ("footwear|colour=navy", 0.25)))
    assert many.adjust("running shoes", [("F000", 1.0)], m.catalog).hits == [("F000", 1.3)]


# ------------------------------------------------------------------ the numbers underneath
def test_ratio_bounds_match_the_gamma_posterior():
    stats = pytest.importorskip("scipy.stats")
    for observed, expected, parent in ((0.0, 2.0, 1.0), (12.0, 4.0, 0.9), (300.0, 100.0, 1.1)):
        lower, mean, upper = ratio_bounds(observed, expected, parent, 3.0, 0.975)
        shape, rate = 3.0 * parent + observed, 3.0 + expected
        assert mean == pytest.approx(shape / rate)
        assert lower == pytest.approx(stats.gamma.ppf(0.025, shape, scale=1 / rate), rel=0.03, abs=0.01)
        assert upper == pytest.approx(stats.gamma.ppf(0.975, shape, scale=1 / rate), rel=0.03)


def test_position_model_recovers_examination_and_click_curves():
    cfg = ClickModelConfig(refit_every=10**9)
    curves = PositionModel(cfg)
    rng = np.random.default_rng(0)
    for _ in range(40_000):  # scores independent of position: both factors identifiable
        position, score = int(rng.integers(10)), float(rng.uniform(0.0, 2.0))
        curves.record_impression(position, score)
        if rng.random() < (1 / (position + 1)) ** 0.7 * (0.05 + 0.15 * score):
            curves.record_click(position, score)
    curves.fit()
    assert curves.exam[:10] == pytest.approx([(1 / (p + 1)) ** 0.7 for p in range(10)], rel=0.15)
    centres = [(b + 0.5) * 2.0 / cfg.score_bins for b in range(cfg.score_bins)]
    assert curves.click[:cfg.score_bins] == pytest.approx([0.05 + 0.15 * c for c in centres], rel=0.15)


def test_config_is_validated():
    assert from_dict(ClickModelConfig, {"half_life_s": 60, "score_range": [0, 1]}).score_range == (0.0, 1.0)
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(ClickModelConfig, {"half_lfe_s": 60})
    for bad in ({"half_life_s": 0}, {"confidence": 0.4}, {"attribute_fields": ["brand", "brand"]},
                {"attribute_fields": ["category"]}, {"min_effective_users": 9}, {"score_range": [1, 1]},
                {"boost_confidence": 0.99}, {"boost_confidence": 0.4}):
        with pytest.raises(ConfigError):
            from_dict(ClickModelConfig, bad)


def _with_purchases(records: list[dict], rate: float, never: frozenset[str], seed: int = 0) -> list[dict]:
    """Each click followed by a purchase with probability `rate` (never for products in `never`); offsets renumbered."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        out.append(r)
        if r["type"] == "click" and r["product_id"] not in never and rng.random() < rate:
            out.append({**r, "type": "purchase", "event_id": r["event_id"] + "p", "ts": r["ts"] + 30.0})
    return [{**r, "offset": i} for i, r in enumerate(out)]


@pytest.mark.parametrize("farm_buys", [False, True])
def test_a_boost_whose_clicks_never_convert_is_frozen(farm_buys):
    m = model()
    shoppers = Shoppers(seed=1, queries=("running shoes", "t-shirt"), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    never = frozenset() if farm_buys else frozenset({"F006"})
    records = _with_purchases(shoppers.stream(800), rate=0.3, never=never)
    m.observe(records)
    lines = [r for r in m.drain_audit() if r["key"] == F006]
    if farm_buys:  # the same clicks, converting like the rest: a genuine preference
        assert m.snapshot().effect(F006) > 0 and not any(r["decision"] == "frozen" for r in lines)
    else:
        assert m.guard.is_frozen(F006) and m.snapshot().effect(F006) == 0.0
        frozen = next(r for r in lines if r["decision"] == "frozen")
        assert frozen["reason"].startswith("no_conversions: ")


def test_only_keys_active_for_the_watch_period_are_offered_for_consolidation():
    """A key serves its effect as soon as it activates, but the slow path consolidates it only after
    consolidate_after_s of event time unfrozen: an attack frozen within the watch never trains."""
    m = model(consolidate_after_s=120.0)
    shoppers = Shoppers(seed=1, queries=("running shoes", "t-shirt"), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["product_id"] == "F006" else 1.0
    learn_until(m, shoppers, lambda s: s.effect(F006) > 0)
    since = m.guard.status[F006]["since"]
    assert m.snapshot().effect(F006) > 0  # served at once
    assert m.snapshot(min_active_s=120.0).effect(F006) == 0.0  # not yet a training target
    while m.now - since < 120.0:
        m.observe(shoppers.stream(25))
    assert m.guard.is_active(F006) and m.snapshot(min_active_s=120.0).effect(F006) > 0
    # the activation time survives a checkpoint
    again = ClickModel.from_state(m.cfg, m.catalog, json.loads(json.dumps(m.state())))
    assert again.guard.status[F006]["since"] == since


def test_accounts_behind_a_key_frozen_as_an_attack_teach_nothing_afterwards():
    """A farm of accounts that click an irrelevant product at the shoppers' own rate and never buy:
    once its key is frozen (no_conversions), the farm's accounts are suspects and their later events
    are left out; shoppers who buy are never suspects. Suspects survive a checkpoint."""
    m = model()
    shoppers = Shoppers(seed=3, queries=("running shoes", "t-shirt"))
    m.observe(_with_purchases(shoppers.stream(300), rate=0.3, never=frozenset()))
    key = "footwear|product=F009"
    farm, n = [], 0
    while not m.guard.is_frozen(key) and n < 400:
        for i in range(3):
            user = f"farm{n % 60}"
            farm += [shoppers.record(user, f"farm-{n}", "impression", "F009", "running shoes", 9, 0.9),
                     shoppers.record(user, f"farm-{n}", "click", "F009", "running shoes", 9, None, 0.5)]
            n += 1
        batch = _with_purchases(shoppers.stream(2), rate=0.3, never=frozenset(), seed=n) + farm
        farm = []
        m.observe([{**r, "offset": m.offset + i} for i, r in enumerate(sorted(batch, key=lambda r: r["ts"]))])
    frozen = [r for r in m.drain_audit() if r["key"] == key and r["decision"] == "frozen"]
    assert frozen and frozen[0]["reason"].startswith("no_conversions")
    farm_users = {u for u in m.suspects if u.startswith("farm")}
    assert len(farm_users) >= 30 and not farm_users & set(m.keys[key].users)  # suspects, taken out of the key
    assert not set(m.suspects) & set(m.buyers)  # a shopper who bought is never a suspect
    shoppers_held = [u for u in m.suspects if not u.startswith("farm")]  # clicked F009, never bought: held too
    assert len(shoppers_held) < len(farm_users) / 4, (len(shoppers_held), len(farm_users))
    # the keys the farm's accounts dominated are frozen with it (F009's brand, colour...); no other
    held = {n for n, s in m.guard.status.items() if s.get("reason", "").startswith("suspect_accounts")}
    assert held and held <= set(m.catalog.keys("footwear", "F009")), held
    later = shoppers.record(next(iter(m.suspects)), "farm-late", "impression", "F006", "running shoes", 2, 1.2)
    assert m.observe([{**later, "offset": m.offset}]) == {"suspect_account": 1}
    # an account new to the farm clicking the frozen key later is caught then, its impression taken out
    newcomer = [shoppers.record("farm-new", "farm-new-s", "impression", "F009", "running shoes", 9, 0.9),
                shoppers.record("farm-new", "farm-new-s", "click", "F009", "running shoes", 9, None, 0.5)]
    assert m.observe([{**r, "offset": m.offset + i} for i, r in enumerate(newcomer)]) == {"impression": 1,
                                                                                          "suspect_account": 1}
    assert "farm-new" in m.suspects and not any("farm-new" in ev.exposure for ev in m.keys.values())
    again = ClickModel.from_state(m.cfg, m.catalog, json.loads(json.dumps(m.state())))
    assert again.suspects == m.suspects and list(again.buyers) == list(m.buyers)


def test_a_quarantined_farms_earlier_evidence_is_taken_out_of_every_key():
    """The farm clicks F009 and skips F003 shown above it. Until its key is frozen it has boosted F009
    and earned F003 a penalty (expected clicks without clicks); once quarantined, its accounts'
    clicks and exposures are taken out of every key: F003's evidence is what the genuine shoppers
    alone gave it (a model that never saw the farm), and one audit line says so."""
    m, oracle = model(), model()
    shoppers = Shoppers(seed=3, queries=("running shoes", "t-shirt"))
    genuine = _with_purchases(shoppers.stream(300), rate=0.3, never=frozenset())
    m.observe(genuine)
    oracle.observe(genuine)
    key, skipped = "footwear|product=F009", "footwear|product=F003"
    n = 0
    while not m.guard.is_frozen(key) and n < 400:
        batch = _with_purchases(shoppers.stream(2), rate=0.3, never=frozenset(), seed=n)
        for _ in range(3):
            user, session = f"farm{n % 60}", f"farm-{n}"
            batch += [shoppers.record(user, session, "impression", "F003", "running shoes", 0, 1.5),
                      shoppers.record(user, session, "impression", "F009", "running shoes", 9, 0.9),
                      shoppers.record(user, session, "click", "F009", "running shoes", 9, None, 0.5)]
            n += 1
        batch = [{**r, "offset": m.offset + i} for i, r in enumerate(sorted(batch, key=lambda r: r["ts"]))]
        m.observe(batch)
        oracle.observe([r for r in batch if not r["user"].startswith("farm")])
    assert m.guard.is_frozen(key)
    retracted = [r for r in m.drain_audit() if r["decision"] == "retracted"]
    assert retracted and retracted[0]["key"] == key and retracted[0]["metrics"]["accounts"] >= 30
    farm = {u for u in m.suspects if u.startswith("farm")}
    assert len(farm) >= 30
    for name, ev in m.keys.items():
        assert not farm & (set(ev.users) | set(ev.exposure)), name
    h = m.cfg.half_life_s
    ours, theirs = m.keys[skipped], oracle.keys[skipped]
    # the farm's 60+ impressions of F003 at the top made ~1 click each expected; what stays is the shoppers'
    assert ours.expected.at(m.now, h) == pytest.approx(theirs.expected.at(oracle.now, h), rel=0.05)
    assert ours.observed.at(m.now, h) == pytest.approx(theirs.observed.at(oracle.now, h), rel=0.05)
    assert m.ratio(skipped)[1] == pytest.approx(oracle.ratio(skipped)[1], abs=0.05)
    # and it survives a checkpoint
    again = ClickModel.from_state(m.cfg, m.catalog, json.loads(json.dumps(m.state())))
    assert again.keys[skipped].exposure == ours.exposure


def test_an_account_clicking_one_query_session_after_session_without_buying_is_quarantined():
    """A farm spread over products no key catches is still accounts searching one query again and
    again: past max_query_sessions sessions with a click (a decayed count) an account that never
    bought is a suspect (repeated_search), its evidence taken out; a buyer, or one session
    repeated, is not."""
    m = model(max_query_sessions=2)
    shoppers = Shoppers(seed=3, queries=("running shoes",))

    def session(user: str, name: str) -> dict:
        batch = [shoppers.record(user, name, "impression", "F003", "running shoes", 0, 1.5),
                 shoppers.record(user, name, "impression", "F009", "running shoes", 5, 0.9),
                 shoppers.record(user, name, "click", "F009", "running shoes", 5, None, 0.5)]
        shoppers.ts += 20.0
        return m.observe([{**r, "offset": m.offset + i} for i, r in enumerate(batch)])

    for n in range(2):
        assert "suspect_account" not in session("farm", f"farm-{n}")
        session("buyer", f"buyer-{n}")
        session("fan", "fan-0")  # clicks again and again, in one session
    m.observe([{**shoppers.record("buyer", "buyer-1", "purchase", "F009", "running shoes", 5, None), "offset": m.offset}])
    assert "farm" in m.keys["footwear|product=F009"].users
    assert session("farm", "farm-2") == {"impression": 2, "suspect_account": 1}
    assert m.suspects["farm"] == ["repeated_search: 'running shoes'"]
    assert not any("farm" in ev.users or "farm" in ev.exposure for ev in m.keys.values())
    retracted = [r for r in m.drain_audit() if r["decision"] == "retracted"]
    assert [r["key"] for r in retracted] == ["repeated_search: 'running shoes'"]
    session("buyer", "buyer-2")
    session("fan", "fan-0")
    assert set(m.suspects) == {"farm"}
    again = ClickModel.from_state(m.cfg, m.catalog, json.loads(json.dumps(m.state())))
    assert again.quarantine.searches == m.quarantine.searches
    assert model(max_query_sessions=0).cfg.max_query_sessions == 0  # 0: off (the helper's default here)


def test_a_key_whose_accounts_are_mostly_quarantined_searchers_is_frozen_though_they_were_taken_out():
    """Each repeated searcher is caught alone and taken out of the keys it credited; a key is still
    frozen once more than max_suspect_share of its credited accounts (at least min_users, those
    taken out included) are quarantined."""
    m = model(max_query_sessions=2)
    shoppers = Shoppers(seed=3, queries=("running shoes",))

    def session(user: str, name: str, buys: bool = False) -> None:
        batch = [shoppers.record(user, name, "impression", "F009", "running shoes", 5, 0.9),
                 shoppers.record(user, name, "click", "F009", "running shoes", 5, None, 0.5)]
        if buys:
            batch.append(shoppers.record(user, name, "purchase", "F009", "running shoes", 5, None, 1.0))
        shoppers.ts += 20.0
        m.observe([{**r, "offset": m.offset + i} for i, r in enumerate(batch)])

    for user in ("shopper0", "shopper1", "shopper2"):
        session(user, f"{user}-s", buys=True)
    farm = ("farm0", "farm1", "farm2", "farm3")
    for n in range(3):
        for user in farm:
            session(user, f"{user}-{n}")
    key = "footwear|product=F009"
    assert set(m.suspects) == set(farm) and m.keys[key].retracted == 4
    frozen = [r for r in m.drain_audit() if r["key"] == key and r["decision"] == "frozen"]
    assert len(frozen) == 1 and frozen[0]["reason"].startswith("suspect_accounts: 4 of the 7 accounts")
