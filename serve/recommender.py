"""The recommender deployment: the CURRENT `recommend` adapter over the shop's item catalog.

Loads the adapter (core.rec_model), the prepared item table and the shoppers' stored histories
(`<data_dir>/recommend/`, from `aisle prepare tasks=[recommend]`) with the search catalog's products
(`catalog_dir`, when given: `data_pipelines.interactions.serving_items`), its item vectors from
`aisle embed recommend` when they were made by CURRENT (`vectors`; else it embeds them), and answers with exact top-k over
the whole catalog (core.rec_index): for a shopper from their stored history merged with their live
session, or items like given ones through the trained item tower. A promotion is picked up within
`reload_s` (the new version's index is built aside, then swapped in).

Catalog changes (`upsert`, `delete`) are appended to `<data_dir>/recommend/catalog_changes.jsonl`
and fsynced before they are applied, and replayed at start: an acknowledged change survives a restart.

Without a recommend adapter or prepared data the deployment still starts: `status()` says what is
missing and the ingress falls back to the frozen-embedding recommendations.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve

from core.registry import ADAPTER_DIR
from core import catalog_changes, storage
from core.events import pseudonym

TASK = "recommend"


@serve.deployment(name="Recommender", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64,
                  max_queued_requests=256)
class Recommender:
    def __init__(self, registry: str, data_dir: str, catalog_dir: str | None = None, salt: str = "aisle-dev-salt",
                 session_weight: float = 1.0, vectors: str | None = None, threads: int = 1, reload_s: float = 2.0):
        import torch

        from core.registry import AdapterRegistry

        torch.set_num_threads(threads)
        self.registry, self.data_dir, self.salt, self.reload_s = AdapterRegistry(registry), data_dir, salt, reload_s
        self.catalog_dir, self.session_weight, self.vectors = catalog_dir, session_weight, vectors
        self.index, self.version, self.missing = None, None, None
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._reloading: asyncio.Task | None = None
        self._load()

    def _load(self) -> None:
        from core import modeling as Mo
        from core import rec_model as R
        from core.rec_index import RecIndex, stored_histories
        from data_pipelines.interactions import read_prepared, serving_items
        from data_pipelines.rec_item_vectors import read_vectors

        current = self.registry.current(TASK) if TASK in self.registry.tasks() else None
        if current is None:
            self.missing = "no recommend adapter (run `aisle prepare tasks=[recommend]` and `aisle train recommend`)"
            return
        if current == self.version:
            return
        try:
            data = read_prepared(self.data_dir)
        except Exception as e:  # noqa: BLE001 - a missing prepared dir is reported, not raised
            self.missing = str(e)
            return
        model = R.load(self.registry.local_dir(TASK, current) / ADAPTER_DIR)
        items = serving_items(self.data_dir, self.catalog_dir)
        histories = stored_histories(data["events"], model.meta.history)
        precomputed = read_vectors(self.vectors, str(self.registry.root), current) if self.vectors else None
        self.index = RecIndex(model, Mo.load_tokenizer(model.meta.backbone), items, histories, precomputed)
        self.version, self.missing = current, None

    def _log_change(self, change: dict) -> None:
        from data_pipelines.interactions import changes_path

        if not storage.is_remote(self.data_dir):   # the log is a local file: s3:// data has none
            catalog_changes.append(changes_path(self.data_dir), change)

    async def _fresh(self) -> None:
        """Look for a new CURRENT at most every `reload_s`, in the background: requests go on being
        answered by the index in place while the next one is built (a promotion's catalog embedding
        took about a minute on 2 cores beside a training stream, and every request waited for it)."""
        if self.index is None:   # nothing to serve meanwhile: wait for it
            if time.monotonic() - self._checked >= self.reload_s:
                self._checked = time.monotonic()
                await self._reload()
            return
        if time.monotonic() - self._checked < self.reload_s or self._reloading is not None:
            return
        self._checked = time.monotonic()
        self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            async with self._lock:   # catalog changes wait for it: the new index replays the change log
                await asyncio.to_thread(self._load)
        finally:
            self._reloading = None

    def status(self) -> dict:
        return {"ready": self.index is not None, "missing": self.missing, "version": self.version}

    def _products(self, hits) -> list[dict]:
        return [{"product_id": item_id, "title": self.index.text(item_id), "score": score} for item_id, score in hits]

    async def for_user(self, user_id: str, live: list[str], k: int) -> dict:
        """Top `k` for a shopper: stored history (by pseudonym) then the live session's items, newest last."""
        await self._fresh()
        if self.index is None:
            return {"missing": self.missing}
        stored = self.index.stored_history(pseudonym(user_id, self.salt))
        hits = await asyncio.to_thread(self.index.recommend, stored, k, (), list(live), self.session_weight)
        return {"model": f"{TASK}:{self.version}", "products": self._products(hits), "history": len(stored) + len(live)}

    async def similar(self, product_ids: list[str], k: int) -> dict:
        await self._fresh()
        if self.index is None:
            return {"missing": self.missing}
        unknown = [p for p in product_ids if p not in self.index]
        if unknown:
            return {"unknown": unknown}
        hits = await asyncio.to_thread(self.index.similar, product_ids, k)
        return {"model": f"{TASK}:{self.version}", "products": self._products(hits)}

    async def upsert(self, items: list[dict]) -> dict:
        """[{item_id, text}] -> logged (fsynced), then embedded and live in every answer."""
        if self.index is None:
            return {"missing": self.missing}
        async with self._lock:
            await asyncio.to_thread(self._log_change, {"op": "upsert", "items": items})
            await asyncio.to_thread(self.index.upsert, [(i["item_id"], i["text"]) for i in items])
        return {"model": f"{TASK}:{self.version}", "items": len(self.index)}

    async def delete(self, item_ids: list[str]) -> dict:
        if self.index is None:
            return {"missing": self.missing}
        async with self._lock:
            await asyncio.to_thread(self._log_change, {"op": "delete", "item_ids": item_ids})
            removed = await asyncio.to_thread(self.index.delete, item_ids)
        return {"model": f"{TASK}:{self.version}", "removed": removed, "items": len(self.index)}
