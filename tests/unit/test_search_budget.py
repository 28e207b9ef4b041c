"""The ingress's /v1/search under a reranker that falls behind, in process: the Ingress class itself
with its deployment handles replaced by plain async functions of the same calling shape.

Past its budget a search answers in the first stage's order (`reranked: 0`) and returns; the late
scoring goes on and serves the next search of that query from the cache. While `max_late` late
scorings go on the reranker is behind: a search whose scores are not all cached answers in
first-stage order at once and starts no scoring; a cached one is still reranked. A late scoring
that fails is forgotten: the next search scores again."""

from __future__ import annotations

import asyncio
import types

import pytest

from core.registry import ADAPTER_DIR, AdapterRegistry
from serve.ingress import Ingress
from serve.schemas import SearchRequest

CANDIDATES = [{"product_id": p, "title": p, "category": "c", "price": 1.0, "score": s, "text": t}
              for p, s, t in (("a", 0.9, "x"), ("b", 0.8, "xxx"), ("c", 0.7, "xx"))]


class Handle:
    """A deployment handle's calling shape (`h.options(...).method.remote(...)`) over async functions."""

    def __init__(self, **methods):
        self.methods = methods

    def options(self, **_):
        return self

    def __getattr__(self, name):
        return types.SimpleNamespace(remote=self.__dict__["methods"][name])


class Reranker:
    """Scores a pair by its text's length after `delay` seconds (or raises `fail`); counts its calls."""

    def __init__(self):
        self.delay, self.fail, self.calls = 0.001, None, 0

    async def predict(self, pairs):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail
        return [{"score": float(len(text))} for _, text in pairs]


class Retriever:
    """The first stage: CANDIDATES, stamped with the catalog's `stamp`; counts its calls."""

    def __init__(self):
        self.stamp, self.calls = 1, 0

    async def first_stage(self, query, k, lexical_weight):
        self.calls += 1
        return {"catalog": self.stamp, "candidates": [dict(c) for c in CANDIDATES]}

    async def status(self):
        return {"ready": True, "missing": None, "catalog": self.stamp}


@pytest.fixture()
def ingress(tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    registry.create_version("relevance", lambda d: (d / ADAPTER_DIR).mkdir(), config={}, metrics={})
    registry.promote("relevance", "v1")
    reranker, retriever = Reranker(), Retriever()
    # the class as written (Serve's ingress wrapper subclasses it with an async __init__ for the replica)
    cls = next(c for c in Ingress.func_or_class.__mro__[1:] if c.__module__ == "serve.ingress")
    made = cls(Handle(predict=reranker.predict), Handle(first_stage=retriever.first_stage, status=retriever.status),
               str(tmp_path / "registry"), rerank_candidates=3, score_cache_entries=100,
               first_stage_cache_entries=100, max_inflight_search=2, rerank_budget_ms=50, current_ttl_s=0.05)
    made.test_retriever = retriever
    return made, reranker


def _search(ingress, query):
    request = types.SimpleNamespace(state=types.SimpleNamespace(request_id="r"))
    return ingress.search(SearchRequest(query=query, k=3), request)


def test_a_late_reranker_answers_in_first_stage_order_then_fills_the_cache(ingress):
    ingress, reranker = ingress

    async def main():
        for i in range(4):
            answer = await _search(ingress, f"warm {i}")
            assert answer.reranked == 3 and [p.product_id for p in answer.products] == ["b", "c", "a"]
        reranker.delay = 0.5
        answer = await _search(ingress, "slow")
        assert answer.reranked == 0 and [p.product_id for p in answer.products] == ["a", "b", "c"]
        assert ingress.late == ingress.late_pending == 1                  # answered; the scoring goes on
        answer = await _search(ingress, "slow too")
        assert answer.reranked == 0 and ingress.late_pending == 2 == ingress.max_late
        calls = reranker.calls
        answer = await _search(ingress, "warm 0")       # behind, but every score is cached: reranked
        assert answer.reranked == 3 and reranker.calls == calls
        answer = await _search(ingress, "slow three")   # behind: first-stage order at once, no scoring started
        assert answer.reranked == 0 and ingress.late == 3 and reranker.calls == calls
        assert ingress.late_pending == 2
        await asyncio.sleep(0.6)
        assert ingress.late_pending == 0
        answer = await _search(ingress, "slow")   # from the cache the late scoring filled
        assert answer.reranked == 3 and [p.product_id for p in answer.products] == ["b", "c", "a"]
        assert reranker.calls == calls

        reranker.fail = RuntimeError("replica gone")
        answer = await _search(ingress, "failing")
        assert answer.reranked == 0
        await asyncio.sleep(0.6)
        assert ingress.late_pending == 0 and ingress.late == 4
        reranker.fail, reranker.delay = None, 0.001
        answer = await _search(ingress, "failing")   # nothing was cached: it scores again
        assert answer.reranked == 3 and reranker.calls == calls + 2
    asyncio.run(main())


def test_a_repeated_query_skips_the_retriever_until_the_catalog_changes(ingress):
    """The ingress keeps each query's first stage; the retriever's status, asked again in the
    background once current_ttl_s has passed, shows a newer catalog: the next search asks again."""
    ingress, _ = ingress
    retriever = ingress.test_retriever

    async def main():
        for query in ("red shoes", "red  shoes", "red shoes", "blue hat"):   # the same spelling twice, then another
            await _search(ingress, query)
        asked = retriever.calls
        retriever.stamp = 2                  # changed through another ingress replica
        await asyncio.sleep(0.06)
        await _search(ingress, "red shoes")  # answered from the cache; its status poll starts
        await asyncio.sleep(0.01)
        await _search(ingress, "red shoes")  # the poll saw catalog 2: asked again
        return asked, retriever.calls

    assert asyncio.run(main()) == (2, 3)
