"""The ingress's side of the online click layer: the newest snapshot, fetched in the background.

Searches never wait on the click layer: a task asks the ClickLayer actor every `refresh_s` for a
snapshot newer than the one held (bytes only when the version moved) and swaps it in; `apply` is
dictionary look-ups on the reranked scores (`core.click_snapshot.Snapshot.adjust`). When the
actor is down (not started, or restarting after a crash) the last snapshot keeps serving and the
task keeps asking; with no snapshot yet, scores pass through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time

from core.click_snapshot import ProductCatalog, Snapshot

FETCH_TIMEOUT_S = 2.0
LOOKUP_RETRY_S = 2.0  # a missing actor is looked up again this often
log = logging.getLogger(__name__)


class OnlineSnapshots:
    def __init__(self, refresh_s: float):
        self.refresh_s = refresh_s
        self.snapshot: Snapshot | None = None
        self.catalog: ProductCatalog | None = None
        self.fetched_at: float | None = None  # wall time of the last successful ask
        self._handle = None
        self._next_lookup = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Starts the background refresh (on the first request: the replica's event loop runs by then)."""
        if self._task is None and self.refresh_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> bool:
        """Asks the actor once; True if a newer snapshot was swapped in."""
        handle = self._actor()
        if handle is None:
            return False
        try:
            if self.catalog is None:
                self.catalog = await asyncio.wait_for(handle.product_catalog.remote(), 5 * FETCH_TIMEOUT_S)
            have = self.snapshot.version if self.snapshot is not None else None
            data = await asyncio.wait_for(handle.snapshot.remote(have), FETCH_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - restarting or gone: keep serving the last snapshot
            self._handle = None
            self._next_lookup = time.monotonic() + LOOKUP_RETRY_S / 4
            return False
        self.fetched_at = time.time()
        if data is None:
            return False
        self.snapshot = Snapshot.from_bytes(data)
        return True

    def _actor(self):
        if self._handle is None and time.monotonic() >= self._next_lookup:
            from actors.click_layer import get_click_layer

            try:
                self._handle = get_click_layer()
            except Exception:  # noqa: BLE001 - no stream running: searches go without the layer
                self._next_lookup = time.monotonic() + LOOKUP_RETRY_S
        return self._handle

    def apply(self, query: str, scores: dict[str, float]) -> tuple[dict[str, float], dict | None]:
        """`scores` adjusted by the held snapshot, and what the answer says of it (None: no snapshot)."""
        snap, catalog = self.snapshot, self.catalog
        if snap is None or catalog is None:
            return scores, None
        adjusted = snap.adjust(query, list(scores.items()), catalog)
        return dict(adjusted.hits), {"snapshot": snap.version, "offset": snap.offset, "enabled": snap.enabled,
                                     "adjusted": len(adjusted.applied)}
