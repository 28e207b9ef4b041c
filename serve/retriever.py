"""The retriever deployment: the first stage of /v1/search, and "more like these".

Loads the output of `data_pipelines.embed_catalog`, embeds queries with the same frozen backbone
and length (those that arrive together in one forward; recent queries' vectors and first-stage hits
kept in small LRUs, the hits until the catalog changes: shop queries repeat), and returns candidates
with the product text the relevance reranker reads. With a `lexical_weight` the candidates are the
bi-encoder's and BM25's (core.bm25, over the same product texts) blended (core.search).

Without catalog embeddings (`aisle embed` not run yet) the deployment still starts, so the app
and `serve run configs/serve.yaml` come up: `status()` says what is missing and the ingress answers
search and recommendations with 503 naming the step, while the other routes work.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from ray import serve

from core import catalog_changes, storage
from core.bm25 import BM25
from core.modeling import embed, load_backbone, load_tokenizer
from core.retrieval import EmbeddingIndex
from core.search import first_stage_hits, query_key
from data_pipelines.embed_catalog import catalog_texts

EMBED_WAIT_S = 0.002
"""How long the first query to miss waits for others to embed with it."""
CHANGES = "catalog_changes.jsonl"
"""Catalog changes made while serving (POST/DELETE /v1/products), beside the catalog, replayed at start."""


@serve.deployment(name="Retriever", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64,
                  max_queued_requests=256)
class Retriever:
    def __init__(self, embeddings: str, catalog_dir: str, threads: int = 1, query_cache: int = 4096):
        import torch

        torch.set_num_threads(threads)
        self.missing = None
        if not storage.exists(embeddings):
            self.missing = f"no catalog embeddings at {embeddings} (run `aisle embed`, which `make demo` runs)"
            return
        self.index = EmbeddingIndex.from_parquet(embeddings)
        self.backbone_name = self.index.info.get("backbone", "minilm")
        self.max_length = int(self.index.info.get("max_length", 128))
        self.backbone, self.tokenizer = load_backbone(self.backbone_name), load_tokenizer(self.backbone_name)
        self.texts = catalog_texts(catalog_dir)
        self.model_id = f"retrieval:{self.backbone_name}"
        self._changes = storage.join(catalog_dir, CHANGES)
        self._lock = asyncio.Lock()
        replayed = catalog_changes.read(self._changes) if not storage.is_remote(catalog_dir) else []
        self._apply(*self._changed(replayed))
        self._vectors: OrderedDict[str, object] = OrderedDict()
        self._query_cache = query_cache
        self._embed_waiting: list[tuple[str, asyncio.Future]] = []
        self._embed_lock = asyncio.Lock()

    def _changed(self, changes: list[dict]):
        """(new index, new texts) with the logged changes applied: the work, off the event loop."""
        upserts: dict[str, dict] = {}
        deleted: set[str] = set()
        for change in changes:
            if change["op"] == "upsert":
                for item in change["items"]:
                    upserts[item["item_id"]] = item
                    deleted.discard(item["item_id"])
            else:
                for item_id in change["item_ids"]:
                    upserts.pop(item_id, None)
                    deleted.add(item_id)
        items = list(upserts.values())
        vectors = embed(self.backbone, self.tokenizer, [i["text"] for i in items], self.max_length) if items else []
        index = self.index.with_changes([(i["item_id"], v, {"title": i.get("title", i["text"])})
                                         for i, v in zip(items, vectors)], deleted)
        texts = {p: t for p, t in self.texts.items() if p not in deleted}
        texts.update({i["item_id"]: i["text"] for i in items})
        return index, texts

    def _apply(self, index, texts) -> None:
        """Swap in a new catalog: called on the event loop, so no search sees half of it (nor a
        first stage of the old one: those are forgotten)."""
        self.index, self.texts = index, texts
        self.catalog = time.time_ns()   # the stamp of this catalog (core.search.FirstStageCache): increasing
        self._ids = list(texts)
        self._bm25 = BM25([texts[p] for p in self._ids])
        self._hits: OrderedDict[tuple, list] = OrderedDict()

    async def upsert(self, items: list[dict]) -> dict:
        """[{item_id, title, text}] -> logged (fsynced), embedded, searchable and recommendable."""
        if self.missing:
            return {"missing": self.missing}
        return await self._change({"op": "upsert", "items": items})

    async def delete(self, item_ids: list[str]) -> dict:
        if self.missing:
            return {"missing": self.missing}
        removed = sum(1 for i in item_ids if i in self.index)
        return {**await self._change({"op": "delete", "item_ids": item_ids}), "removed": removed}

    async def _change(self, change: dict) -> dict:
        async with self._lock:
            if not storage.is_remote(self._changes):   # the log is a local file: s3:// catalogs have none
                await asyncio.to_thread(catalog_changes.append, self._changes, change)
            index, texts = await asyncio.to_thread(self._changed, [change])
            self._apply(index, texts)
        return {"model": self.model_id, "items": len(self.index), "catalog": self.catalog}

    def status(self) -> dict:
        """{"ready": bool, "missing": what to run first, or None, "catalog": the catalog's stamp}."""
        return {"ready": self.missing is None, "missing": self.missing, "catalog": getattr(self, "catalog", None)}

    def _products(self, hits) -> list[dict]:
        out = []
        for product_id, score in hits:
            info = self.index.product(product_id)
            out.append({"product_id": product_id, "title": str(info.get("title", "")), "category": info.get("category"),
                        "price": info.get("price"), "score": score, "text": self.texts.get(product_id, "")})
        return out

    async def _vector(self, query: str):
        key = query_key(query)
        vector = self._vectors.get(key)
        if vector is None:
            vector = await self._embed_queries(key)
            self._vectors[key] = vector
            while len(self._vectors) > self._query_cache:
                self._vectors.popitem(last=False)
        self._vectors.move_to_end(key)
        return vector

    async def _embed_queries(self, query: str):
        """`query`'s (1, dim) embedding. Queries that miss together are embedded in one forward (a
        flood's new queries come at once: one at a time, each waited for the CPU the others held):
        the first starts a flush that waits `EMBED_WAIT_S`, and the one before, then takes them all.
        (Not `@serve.batch`: the benchmarks run this class in process, outside a replica.)"""
        future = asyncio.get_running_loop().create_future()
        self._embed_waiting.append((query, future))
        if len(self._embed_waiting) == 1:
            asyncio.ensure_future(self._embed_flush())
        return await future

    async def _embed_flush(self) -> None:
        await asyncio.sleep(EMBED_WAIT_S)
        async with self._embed_lock:
            batch, self._embed_waiting = self._embed_waiting, []
            unique = list(dict.fromkeys(q for q, _ in batch))
            try:
                vectors = await asyncio.to_thread(embed, self.backbone, self.tokenizer, unique, self.max_length)
            except Exception as e:  # noqa: BLE001 - every waiting search gets the error
                for _, future in batch:
                    if not future.done():   # done: its search was cancelled (a client gone)
                        future.set_exception(e)
                return
            row = {q: i for i, q in enumerate(unique)}
            for q, future in batch:
                if not future.done():
                    future.set_result(vectors[row[q]:row[q] + 1])

    async def first_stage(self, query: str, k: int, lexical_weight: float = 0.0, pool: int = 100) -> dict:
        """{"catalog": the catalog's stamp, "candidates": `search`'s answer}: what the ingress caches."""
        catalog = self.catalog   # before the await: a change meanwhile makes this answer older than it
        return {"catalog": catalog, "candidates": await self.search(query, k, lexical_weight, pool)}

    async def search(self, query: str, k: int, lexical_weight: float = 0.0, pool: int = 100) -> list[dict]:
        """The first stage's top `k`: cosine only (lexical_weight 0), else the blend of the cosine
        and BM25 top `pool` each (core.search.blend_first_stage)."""
        key = (query_key(query), k, lexical_weight, pool)
        hits = self._hits.get(key)
        if hits is None:   # shop queries repeat: the first stage (a BM25 pass over the catalog) once per query
            vector = await self._vector(query)
            hits = first_stage_hits(self.index, self._bm25, self._ids, vector, query, k, lexical_weight, pool)
            self._hits[key] = hits
            while len(self._hits) > self._query_cache:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        return self._products(hits)

    async def similar(self, product_ids: list[str], k: int, skip_unknown: bool = False) -> dict:
        """Nearest products to the given ones (excluded from the answer). `skip_unknown`: a shopper's
        history may name products the catalog no longer has; recommend from the known ones."""
        unknown = [p for p in product_ids if p not in self.index]
        if unknown and not skip_unknown:
            return {"unknown": unknown}
        known = [p for p in product_ids if p in self.index]
        if not known:
            return {"model": self.model_id, "products": []}
        return {"model": self.model_id, "products": self._products(self.index.similar(known, k))}

    async def lookup(self, product_ids: list[str]) -> list[dict]:
        """Catalog entries of known product ids, in the given order (score 0: not a similarity)."""
        return self._products([(p, 0.0) for p in product_ids if p in self.index])
