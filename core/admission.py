"""Load shedding at the door: a bounded number of requests in flight per route, the rest refused at
once (the ingress answers 503 with Retry-After) instead of queued until clients time out.

Queueing past capacity only adds waiting: with a limit near what the replicas serve within the
latency budget, accepted requests keep their latency and refused ones learn it in milliseconds, so a
shop's front end can fall back (cached results, plain lexical search) instead of hanging. No Ray here.
"""

from __future__ import annotations


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
