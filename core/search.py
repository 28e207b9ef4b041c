"""The pure logic of /v1/search, shared by the ingress and benchmarks/search_bench.py (no Ray here).

A search is two stages. The **first stage** is cheap: the bi-encoder's cosine scores and BM25
scores over the catalog, each min-max scaled within the pooled candidates and blended
(`blend_first_stage`); its top `n` go to the **reranker** (the relevance cross-encoder), which costs
one transformer forward per (query, product text) pair and is what a search's latency is made of.
Two things keep that cost down without changing what is ranked:

* `ScoreCache`: reranker scores keyed by (model id, query, product id, product text). A model id
  names one immutable adapter version, so a new version reads none of the old one's scores; a
  product whose text changed in a catalog update misses (its key changed) while every other
  product keeps its cached score. Nothing else needs invalidating, and nothing stale can be read.
* Single flight (`ScoreCache.scores`): a pair already being scored for another search (the same
  version, query and product text) is awaited, not scored again. A popular query arriving several
  times while its first reranking runs (a cold cache, a new version) costs one forward, not one per
  arrival; with the cache off it still coalesces what is in flight.
* `pair_text`: the product side of a pair cut to its first words (title and attributes lead the
  text; the description tail is what goes), so a forward runs over shorter sequences.

`rerank_weights` says which reranker versions score a search (CURRENT, its student, or CURRENT
blended with the newest offline version) and `blend_scores` blends them; `rerank` and
`rerank_candidates` put the reranked candidates first by their scores, the rest after them in
first-stage order; `served_ndcg` scores a served top-k against graded judgements (benchmarks and tests).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Awaitable, Callable, Mapping, Sequence

import numpy as np

from core.metrics import ndcg_at_k

Hit = tuple[str, float]


def query_key(query: str) -> str:
    """The cache's spelling of a query: whitespace runs collapsed (every tokenizer splits on them, so
    the reranker sees the same tokens); case and accents are kept (a cased backbone tells them apart)."""
    return " ".join(query.split())


def pair_text(text: str, max_words: int | None) -> str:
    """`text` cut to its first `max_words` whitespace-separated words (None or 0: whole)."""
    if not max_words:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def min_max_scaled(scores: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..1 within the pool (a constant pool scales to 0)."""
    if scores.size == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


def blend_first_stage(dense: Sequence[Hit], lexical: Sequence[Hit], lexical_weight: float, n: int) -> list[Hit]:
    """The top `n` of the pooled candidates (dense hits and lexical hits, ids deduplicated) by
    (1 - w) * scaled cosine + w * scaled BM25, best first; a candidate missing from one list scores
    that list's pool minimum there. w = 0 returns the dense hits' top `n` as they came."""
    if not 0.0 <= lexical_weight <= 1.0:
        raise ValueError("lexical_weight must be within 0..1")
    if lexical_weight == 0.0 or not lexical:
        return list(dense[:n])
    ids = list(dict.fromkeys([p for p, _ in dense] + [p for p, _ in lexical]))
    cos, bm = dict(dense), dict(lexical)
    cos_arr = np.array([cos.get(p, min(cos.values(), default=0.0)) for p in ids], dtype=np.float64)
    bm_arr = np.array([bm.get(p, min(bm.values(), default=0.0)) for p in ids], dtype=np.float64)
    blended = (1.0 - lexical_weight) * min_max_scaled(cos_arr) + lexical_weight * min_max_scaled(bm_arr)
    order = np.argsort(-blended, kind="stable")[:n]  # ties: dense order first
    return [(ids[i], float(blended[i])) for i in order]


def first_stage_hits(index, bm25, ids: Sequence[str], vector: np.ndarray, query: str, k: int,
                     lexical_weight: float, pool: int = 100) -> list[Hit]:
    """The first stage's top `k` for a query: the bi-encoder's cosine top `k` (`lexical_weight` 0),
    else the blend of the cosine and BM25 top `pool` each (`blend_first_stage`). `index` is a
    core.retrieval.EmbeddingIndex, `bm25` a core.bm25.BM25 over the texts of `ids`, in that order;
    `vector` the query's embedding. Shared by the retriever deployment and the student's data."""
    if lexical_weight <= 0.0:
        return list(index.search(vector, k)[0])
    size = max(pool, k)
    dense = index.search(vector, size)[0]
    bm = bm25.score(query)
    top = np.argpartition(-bm, min(size, len(bm) - 1))[:size]
    lexical = [(ids[i], float(bm[i])) for i in top if bm[i] > 0 and ids[i] in index]
    return blend_first_stage(dense, lexical, lexical_weight, k)


def rerank_weights(current: str, student: str | None = None, offline: str | None = None,
                   offline_weight: float = 0.0) -> tuple[dict[str, float], dict[str, float] | None]:
    """Which reranker models score a search, and how their scores blend: (model id -> weight, the
    ensemble the answer reports or None). A student distilled from CURRENT replaces it alone; else
    the newest offline version, when it is not CURRENT itself, takes `offline_weight` of the score
    (`serve.ensemble_offline_weight`: an anchor against what the stream's updates drifted to)."""
    if student is not None:
        return {student: 1.0}, None
    if offline is not None and offline != current and offline_weight > 0:
        weights = {current: 1.0 - offline_weight, offline: offline_weight}
        return weights, dict(weights)
    return {current: 1.0}, None


def blend_scores(weights: Mapping[str, float], per_model: Sequence[Mapping[str, float]],
                 product_ids: Sequence[str]) -> dict[str, float]:
    """{product id: sum over models of weight x that model's score}, `per_model` in `weights`' order."""
    scores = dict.fromkeys(product_ids, 0.0)
    for weight, model_scores in zip(weights.values(), per_model):
        for product_id, score in model_scores.items():
            scores[product_id] += weight * score
    return scores


def rerank_candidates(candidates: Sequence[dict], served: Mapping[str, float],
                      model_scores: Mapping[str, float]) -> list[dict]:
    """The first stage's candidates (dicts with `product_id`) in served order (`rerank`), each
    reranked one carrying `score` (what it was ranked by: the model's, moved by the online layer)
    and `model_score` (the reranker's alone). New dicts: the candidates are not changed."""
    by_id = {c["product_id"]: dict(c) for c in candidates}
    for product_id, score in served.items():
        by_id[product_id].update(score=score, model_score=model_scores[product_id])
    return [by_id[p] for p in rerank([c["product_id"] for c in candidates], served)]


def rerank(first_stage: Sequence[str], scores: Mapping[str, float]) -> list[str]:
    """Product ids: those with a reranker score by score (best first, ties in first-stage order),
    then the rest in first-stage order."""
    scored = [p for p in first_stage if p in scores]
    scored.sort(key=lambda p: -scores[p])  # stable: ties keep first-stage order
    return scored + [p for p in first_stage if p not in scores]


class FirstStageCache:
    """The first stage's candidates by (query, how many), least recently used evicted past
    `max_entries` (0: off), kept by the ingress so that a repeated query skips the hop to the
    retriever. Every answer is stamped with the catalog it came from (`catalog`: when the retriever
    last changed its catalog, an increasing number); a newer stamp, seen in an answer or by
    `observe`, empties the cache (a catalog change may change any query's candidates), and an answer
    with an older one is not kept (it was found before the change)."""

    def __init__(self, max_entries: int):
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries, self.catalog = max_entries, None
        self._entries: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, query: str, n: int) -> list[dict] | None:
        key = (query_key(query), n)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found

    def put(self, query: str, n: int, catalog: int, candidates: list[dict]) -> None:
        self.observe(catalog)
        if self.max_entries and catalog == self.catalog:
            self._entries[(query_key(query), n)] = candidates
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def observe(self, catalog: int | None) -> None:
        """The retriever's catalog is `catalog` now: entries of an older one are dropped."""
        if catalog is not None and (self.catalog is None or catalog > self.catalog):
            self._entries.clear()
            self.catalog = catalog

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


class ScoreCache:
    """Reranker scores by (model id, query, product id, product text), least recently used evicted
    past `max_entries` (0: the cache is off: nothing is kept, every lookup misses).

    The product text is part of the key (as a digest), so a catalog change invalidates exactly the
    products whose text changed; the model id is, so a new adapter version starts cold and the old
    version's entries, still correct for it, age out."""

    def __init__(self, max_entries: int):
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._scores: OrderedDict[tuple, float] = OrderedDict()
        self._pending: dict[tuple, asyncio.Future] = {}
        self.hits = self.misses = self.joined = 0

    @staticmethod
    def _key(model_id: str, query: str, product_id: str, text: str) -> tuple:
        return model_id, query_key(query), product_id, hash(text)  # str hashes are stable within a process

    def lookup(self, model_id: str, query: str, products: Sequence[tuple[str, str]]) -> dict[str, float]:
        """{product id: cached score} for the (product id, text) pairs the cache holds."""
        found: dict[str, float] = {}
        for product_id, text in products:
            key = self._key(model_id, query, product_id, text)
            score = self._scores.get(key)
            if score is None:
                self.misses += 1
                continue
            self._scores.move_to_end(key)
            found[product_id] = score
            self.hits += 1
        return found

    def holds(self, model_id: str, query: str, products: Sequence[tuple[str, str]]) -> bool:
        """Whether every (product id, text) pair's score is cached (no hit or miss is counted)."""
        return all(self._key(model_id, query, p, t) in self._scores for p, t in products)

    def store(self, model_id: str, query: str, products: Sequence[tuple[str, str]], scores: Sequence[float]) -> None:
        if not self.max_entries:
            return
        for (product_id, text), score in zip(products, scores):
            key = self._key(model_id, query, product_id, text)
            self._scores[key] = float(score)
            self._scores.move_to_end(key)
        while len(self._scores) > self.max_entries:
            self._scores.popitem(last=False)

    async def scores(self, model_id: str, query: str, products: Sequence[tuple[str, str]],
                     compute: Callable[[list[tuple[str, str]]], Awaitable[Sequence[float]]]) -> dict[str, float]:
        """{product id: score} for (product id, text) pairs: cached ones from the cache; pairs another
        search is scoring now awaited from it; the rest scored by one `compute(pairs)` call (and
        stored). If that call fails, this search raises its error and every search waiting on it
        scores those pairs itself."""
        found = self.lookup(model_id, query, products)
        mine: list[tuple[str, str]] = []
        waits: dict[str, tuple[tuple[str, str], asyncio.Future]] = {}
        for product_id, text in products:
            if product_id in found:
                continue
            key = self._key(model_id, query, product_id, text)
            if key in self._pending:
                waits[product_id] = ((product_id, text), self._pending[key])
            else:
                mine.append((product_id, text))
        if mine:
            found.update(await self._compute(model_id, query, mine, compute))
        self.joined += len(waits)
        retry = []
        for product_id, (pair, future) in waits.items():
            try:
                found[product_id] = await asyncio.shield(future)
            except Exception:  # noqa: BLE001 - the other search failed (or went away): score it here
                retry.append(pair)
        if retry:
            found.update(await self._compute(model_id, query, retry, compute))
        return found

    async def _compute(self, model_id: str, query: str, pairs: list[tuple[str, str]], compute) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        keys = [self._key(model_id, query, p, t) for p, t in pairs]
        futures = [self._pending.setdefault(k, loop.create_future()) for k in keys]
        try:
            values = [float(v) for v in await compute(pairs)]
        except BaseException as error:  # cancelled too: the waiters must not hang
            for key, future in zip(keys, futures):
                self._pending.pop(key, None)
                if not future.done():
                    future.set_exception(RuntimeError(f"scoring failed: {type(error).__name__}"))
                    future.exception()  # retrieved: no "never retrieved" log when nobody waits
            raise
        self.store(model_id, query, pairs, values)
        for key, future, value in zip(keys, futures, values):
            self._pending.pop(key, None)
            if not future.done():
                future.set_result(value)
        return {p: v for (p, _), v in zip(pairs, values)}

    def clear(self) -> None:
        self._scores.clear()
        self.hits = self.misses = self.joined = 0

    def __len__(self) -> int:
        return len(self._scores)

    def stats(self) -> dict:
        looked = self.hits + self.misses
        return {"entries": len(self), "hits": self.hits, "misses": self.misses, "joined": self.joined,
                "hit_rate": self.hits / looked if looked else 0.0}


def served_ndcg(served: Sequence[str], judged: Mapping[str, int], grade: Callable[[str], int] | None = None,
                k: int = 10) -> float:
    """nDCG@k (exponential gains, core.metrics) of a served ranking. A served product takes its
    judged grade, else `grade(product_id)` (the catalog's own grading of unjudged products), else 0;
    the ideal ranking is made from the judged products and the served ones together. nan when
    nothing relevant is known for the query."""
    top = list(dict.fromkeys(served))[:k]
    grades = [judged[p] if p in judged else (grade(p) if grade else 0) for p in top]
    grades += [0] * (k - len(top))  # a short answer: its empty places gain nothing
    rest = [g for p, g in judged.items() if p not in set(top)]
    scores = np.concatenate([np.arange(k, 0, -1, dtype=np.float64), np.full(len(rest), -1.0)])
    return ndcg_at_k(scores, np.array(grades + rest, dtype=np.float64), k)
