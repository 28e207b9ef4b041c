"""core.search (the pure logic of /v1/search) and core.admission: no Ray, no model."""

from __future__ import annotations

import asyncio
import math

import pytest

from core.admission import InflightLimit, PaceBudget, answer_within
from core.search import FirstStageCache, ScoreCache, blend_first_stage, pair_text, query_key, rerank, served_ndcg

PRODUCTS = [("p1", "red shoe | size 9"), ("p2", "blue shoe | size 8"), ("p3", "green hat")]


def test_cache_hits_what_it_stored_and_misses_the_rest():
    cache = ScoreCache(100)
    cache.store("relevance@v1", "red shoe", PRODUCTS[:2], [1.5, 0.2])
    assert cache.lookup("relevance@v1", "red shoe", PRODUCTS) == {"p1": 1.5, "p2": 0.2}
    assert cache.lookup("relevance@v1", "  red   shoe ", PRODUCTS[:1]) == {"p1": 1.5}  # whitespace only
    assert cache.lookup("relevance@v1", "Red shoe", PRODUCTS[:1]) == {}  # case kept: a cased backbone differs
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 2
    # holds: all of them or not, without counting
    assert cache.holds("relevance@v1", "red shoe", PRODUCTS[:2]) and not cache.holds("relevance@v1", "red shoe", PRODUCTS)
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 2


def test_a_new_version_reads_none_of_the_old_versions_scores():
    cache = ScoreCache(100)
    cache.store("relevance@v1", "red shoe", PRODUCTS, [1.0, 2.0, 0.0])
    assert cache.lookup("relevance@v2", "red shoe", PRODUCTS) == {}
    cache.store("relevance@v2", "red shoe", PRODUCTS, [0.5, 0.5, 0.5])
    # the old version's scores stay right for a request pinned to it
    assert cache.lookup("relevance@v1", "red shoe", PRODUCTS) == {"p1": 1.0, "p2": 2.0, "p3": 0.0}
    assert cache.lookup("relevance@v2", "red shoe", PRODUCTS) == {"p1": 0.5, "p2": 0.5, "p3": 0.5}


def test_a_catalog_change_invalidates_exactly_the_changed_products():
    cache = ScoreCache(100)
    cache.store("relevance@v1", "red shoe", PRODUCTS, [1.0, 2.0, 0.0])
    changed = [PRODUCTS[0], ("p2", "blue shoe | size 8 | now waterproof"), PRODUCTS[2]]
    assert cache.lookup("relevance@v1", "red shoe", changed) == {"p1": 1.0, "p3": 0.0}


def test_cache_evicts_least_recently_used_and_zero_is_off():
    cache = ScoreCache(2)
    cache.store("m", "q", PRODUCTS[:2], [1.0, 2.0])
    cache.lookup("m", "q", PRODUCTS[:1])  # p1 used: p2 is the oldest
    cache.store("m", "q", PRODUCTS[2:], [3.0])
    assert cache.lookup("m", "q", PRODUCTS) == {"p1": 1.0, "p3": 3.0} and len(cache) == 2
    off = ScoreCache(0)
    off.store("m", "q", PRODUCTS, [1.0, 2.0, 3.0])
    assert off.lookup("m", "q", PRODUCTS) == {} and len(off) == 0
    with pytest.raises(ValueError):
        ScoreCache(-1)


class Scorer:
    """A reranker stand-in that counts what it is asked to score: a pair's score is its text's length."""

    def __init__(self, delay: float = 0.05, fail: BaseException | None = None):
        self.calls: list[list[str]] = []
        self.delay, self.fail = delay, fail

    async def __call__(self, pairs):
        self.calls.append([p for p, _ in pairs])
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [float(len(t)) for _, t in pairs]


PRODUCTS = [("p1", "navy sneakers"), ("p2", "red dress"), ("p3", "wool socks")]


@pytest.mark.parametrize("entries", [100, 0])
def test_searches_in_flight_for_the_same_pairs_score_them_once(entries):
    async def main():
        cache, scorer = ScoreCache(entries), Scorer()
        first, second, wider = await asyncio.gather(
            cache.scores("relevance@v1", "shoes", PRODUCTS[:2], scorer),
            cache.scores("relevance@v1", "shoes ", PRODUCTS[:2], scorer),    # the same query, spelled wider
            cache.scores("relevance@v1", "shoes", PRODUCTS, scorer))        # one more product
        assert first == second == {"p1": 13.0, "p2": 9.0} and wider == {**first, "p3": 10.0}
        assert scorer.calls == [["p1", "p2"], ["p3"]] and cache.stats()["joined"] == 4
        await cache.scores("relevance@v2", "shoes", PRODUCTS[:1], scorer)  # another version: its own scores
        assert scorer.calls[-1] == ["p1"] and len(cache) == (4 if entries else 0)
        await cache.scores("relevance@v1", "shoes", PRODUCTS[:1], scorer)  # later: the cache, when it is on
        assert len(scorer.calls) == (3 if entries else 4)
    asyncio.run(main())


@pytest.mark.parametrize("error", [RuntimeError("model down"), asyncio.CancelledError()])
def test_when_the_scoring_search_fails_its_waiters_score_for_themselves(error):
    async def main():
        cache, failing, working = ScoreCache(100), Scorer(fail=error), Scorer()
        owner = asyncio.create_task(cache.scores("relevance@v1", "shoes", PRODUCTS, failing))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(cache.scores("relevance@v1", "shoes", PRODUCTS, working))
        with pytest.raises(type(error)):
            await owner
        assert await waiter == {"p1": 13.0, "p2": 9.0, "p3": 10.0}
        assert working.calls == [["p1", "p2", "p3"]] and not cache._pending
    asyncio.run(main())


def test_pair_text_and_query_key():
    assert pair_text("a b c d", 2) == "a b" and pair_text("a b", 5) == "a b" and pair_text("a  b", 0) == "a  b"
    assert query_key(" red\tshoe  ") == "red shoe"


def test_blend_first_stage():
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    lexical = [("c", 12.0), ("d", 6.0)]
    assert blend_first_stage(dense, lexical, 0.0, 2) == dense[:2]
    ids = [p for p, _ in blend_first_stage(dense, lexical, 0.5, 4)]
    assert set(ids) == {"a", "b", "c", "d"} and ids[0] in ("a", "c")
    assert blend_first_stage(dense, lexical, 1.0, 1)[0][0] == "c"
    with pytest.raises(ValueError):
        blend_first_stage(dense, lexical, 1.5, 2)


def test_rerank_puts_scored_first_then_first_stage_order():
    assert rerank(["a", "b", "c", "d"], {"b": 0.1, "c": 0.9}) == ["c", "b", "a", "d"]
    assert rerank(["a", "b"], {"a": 1.0, "b": 1.0}) == ["a", "b"]  # ties: first-stage order


def test_served_ndcg():
    judged = {"a": 2, "b": 1, "c": 0}
    assert served_ndcg(["a", "b", "c"], judged, k=3) == pytest.approx(1.0)
    assert served_ndcg(["c", "b", "a"], judged, k=3) < 1.0
    # an unjudged served product is graded by the catalog's function (here: exact), raising the ideal too
    assert served_ndcg(["x", "a", "b"], judged, lambda p: 2, k=3) == pytest.approx(served_ndcg(["a", "x", "b"], judged, lambda p: 2, k=3), rel=0.5)
    assert served_ndcg(["a"], judged, k=3) < 1.0  # a short answer loses the places it left empty
    assert math.isnan(served_ndcg(["c"], {"c": 0}, k=3))


def test_inflight_limit():
    limit = InflightLimit(3, {"search": 2})
    assert limit.try_enter("search") and limit.try_enter("search") and not limit.try_enter("search")
    assert all(limit.try_enter("predict") for _ in range(3)) and not limit.try_enter("predict")
    assert limit.refused == 2
    limit.leave("search")
    assert limit.inflight("search") == 1 and limit.try_enter("search")
    unlimited = InflightLimit(0)
    assert all(unlimited.try_enter("search") for _ in range(1000))


def test_pace_budget_waits_until_it_knows_the_pace_then_allows_twice_it_or_the_floor():
    budget = PaceBudget(0.12, factor=2.0, window=20, min_seen=4)
    for seconds in (0.01, 0.5, 0.02):
        budget.record(seconds)
    assert budget.budget_s() is None            # 3 scorings seen: the pace is not known yet: wait
    budget.record(0.04)
    assert budget.budget_s() == 0.12            # a fast reranker (its best 10 ms, queued 500): the floor
    for _ in range(20):
        budget.record(0.3)                      # a slow machine: its own pace, not a cut
    assert budget.budget_s() == pytest.approx(0.6)
    assert PaceBudget(0.0).budget_s() is None   # 0: no budget at all
    fixed = PaceBudget(0.12, factor=0)           # a hard latency target: the floor from the first search on
    assert fixed.budget_s() == 0.12
    for _ in range(20):
        fixed.record(0.3)
    assert fixed.budget_s() == 0.12
    with pytest.raises(ValueError):
        PaceBudget(0.12, factor=0.5)


def test_a_search_past_its_budget_answers_without_the_scores_which_still_fill_the_cache():
    async def main():
        cache, scorer, late = ScoreCache(100), Scorer(delay=0.2), []
        work = asyncio.ensure_future(cache.scores("relevance@v1", "shoes", PRODUCTS, scorer))
        assert await answer_within(work, 0.01, late.append) == (False, None) and late == [work]
        assert await answer_within(asyncio.ensure_future(asyncio.sleep(0, "x")), 0.01, late.append) == (True, "x")
        assert await answer_within(asyncio.ensure_future(asyncio.sleep(0.05, "y")), None, late.append) == (True, "y")
        await work                                # the late scoring went on to the end...
        again = await cache.scores("relevance@v1", "shoes", PRODUCTS, scorer)
        assert again == {"p1": 13.0, "p2": 9.0, "p3": 10.0} and len(scorer.calls) == 1   # ...into the cache
    asyncio.run(main())


def test_rerank_weights_student_alone_or_current_blended_with_the_offline_anchor():
    from core.search import rerank_weights

    assert rerank_weights("relevance@v5") == ({"relevance@v5": 1.0}, None)
    assert rerank_weights("relevance@v5", student="relevance_student@v2") == ({"relevance_student@v2": 1.0}, None)
    weights, ensemble = rerank_weights("relevance@v5", offline="relevance@v1", offline_weight=0.3)
    assert weights == ensemble == {"relevance@v5": 0.7, "relevance@v1": 0.3} and next(iter(weights)) == "relevance@v5"
    assert rerank_weights("relevance@v1", offline="relevance@v1", offline_weight=0.3)[1] is None  # CURRENT is offline
    assert rerank_weights("relevance@v5", offline="relevance@v1", offline_weight=0.0)[1] is None


def test_blend_and_rerank_candidates_leave_the_unscored_in_first_stage_order():
    from core.search import blend_scores, rerank_candidates

    weights = {"a": 0.7, "b": 0.3}
    blended = blend_scores(weights, [{"p1": 1.0, "p2": 2.0}, {"p1": 2.0, "p2": 0.0}], ["p1", "p2"])
    assert blended == pytest.approx({"p1": 1.3, "p2": 1.4})
    candidates = [{"product_id": p, "text": p} for p in ("p1", "p2", "p3", "p4")]
    served = {"p1": 1.3, "p2": 1.9}  # p2 moved up by the online layer
    out = rerank_candidates(candidates, served, blended)
    assert [c["product_id"] for c in out] == ["p2", "p1", "p3", "p4"]
    assert out[0]["score"] == 1.9 and out[0]["model_score"] == pytest.approx(1.4) and "score" not in out[2]
    assert "score" not in candidates[1]  # the first stage's candidates are not changed


def test_first_stage_cache_keeps_a_query_until_a_newer_catalog_and_never_an_older_answer():
    cache = FirstStageCache(2)
    assert cache.get("red shoes", 20) is None
    cache.put("red shoes", 20, 5, [{"product_id": "a"}])
    assert cache.get(" red   shoes ", 20) == [{"product_id": "a"}] and cache.get("red shoes", 30) is None
    cache.put("blue hat", 20, 5, [])
    assert cache.get("red shoes", 20) is not None     # used after blue hat was kept...
    cache.put("green", 20, 5, [])                     # ...so past max_entries blue hat goes
    assert cache.get("red shoes", 20) is not None and cache.get("blue hat", 20) is None and len(cache) == 2
    cache.put("late", 20, 4, [{"product_id": "old"}])   # found before the catalog 5: not kept
    assert cache.get("late", 20) is None and cache.catalog == 5
    cache.observe(6)                                  # a newer catalog: every entry goes
    assert len(cache) == 0 and cache.catalog == 6
    cache.observe(5)                                  # an older stamp changes nothing
    assert cache.catalog == 6
    off = FirstStageCache(0)
    off.put("red shoes", 20, 1, [])
    assert off.get("red shoes", 20) is None
    with pytest.raises(ValueError):
        FirstStageCache(-1)
