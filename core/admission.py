"""Load shedding at the door: a bounded number of requests in flight per route, the rest refused at
once (the ingress answers 503 with Retry-After) instead of queued until clients time out.

Queueing past capacity only adds waiting: with a limit near what the replicas serve within the
latency budget, accepted requests keep their latency and refused ones learn it in milliseconds, so a
shop's front end can fall back (cached results, plain lexical search) instead of hanging. No Ray here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable


class InflightLimit:
    """Counts requests in flight per key; `try_enter` refuses past the key's limit (`limits[key]`,
    else `default`; 0: no limit)."""

    def __init__(self, default: int = 0, limits: dict[str, int] | None = None):
        self.limits = dict(limits or {})
        if min([default, *self.limits.values()]) < 0:
            raise ValueError("limits must be >= 0 (0: no limit)")
        self.default = default
        self._inflight: dict[str, int] = {}
        self.refused = 0

    def limit(self, key: str) -> int:
        return self.limits.get(key, self.default)

    def try_enter(self, key: str) -> bool:
        now, limit = self._inflight.get(key, 0), self.limit(key)
        if limit and now >= limit:
            self.refused += 1
            return False
        self._inflight[key] = now + 1
        return True

    def leave(self, key: str) -> None:
        left = self._inflight.get(key, 0) - 1
        if left > 0:
            self._inflight[key] = left
        else:
            self._inflight.pop(key, None)

    def inflight(self, key: str) -> int:
        return self._inflight.get(key, 0)


class PaceBudget:
    """How long a search waits for its reranker: `floor_s`, or `factor` times the reranker's pace at
    its best (the fastest of its last `window` whole scorings: a queue slows the others, not that
    one), whichever is longer; None (wait) until it has seen `min_seen` of them. On a slow CPU the
    pace is slow and so is the budget: it cuts only when the reranker is behind its own pace (a
    queue), never because the machine is slow. `factor` 0: `floor_s` alone, from the first search
    (a hard latency target: on a slow machine most searches then answer in first-stage order)."""

    def __init__(self, floor_s: float, factor: float = 2.0, window: int = 64, min_seen: int = 4):
        if floor_s < 0 or not (factor == 0 or factor >= 1) or window < 1 or min_seen < 1:
            raise ValueError("floor_s >= 0, factor 0 (the floor alone) or >= 1, window >= 1, min_seen >= 1")
        self.floor_s, self.factor, self.min_seen = floor_s, factor, min_seen
        self._seen: deque[float] = deque(maxlen=window)

    def record(self, seconds: float) -> None:
        """The time one whole scoring took (every candidate of a search, none from the cache)."""
        self._seen.append(seconds)

    def budget_s(self) -> float | None:
        if not self.floor_s or (self.factor and len(self._seen) < self.min_seen):
            return None
        return max(self.floor_s, self.factor * min(self._seen)) if self.factor else self.floor_s


async def answer_within(work: "asyncio.Future", budget_s: float | None,
                        late: Callable[["asyncio.Future"], None]) -> tuple[bool, object]:
    """(True, `work`'s result), or (False, None) when it is not done within `budget_s` seconds (None:
    wait for it); then `late(work)` is called and the work goes on (it is not cancelled: its result
    still serves whoever waits on it, a cache for instance)."""
    if budget_s is not None and not work.done():
        done, _ = await asyncio.wait({work}, timeout=budget_s)
        if not done:
            late(work)
            return False, None
    return True, await work
