"""Simulated shoppers against a running Aisle, over HTTP: the traffic of the demo and the freshness benchmark.

A shopper session asks `POST /v1/search` (so what it sees is what Aisle ranks, by whichever version
is CURRENT at that moment), browses the answer with the simulator's position-biased click model
(`data_pipelines.simulator`), and its impressions, clicks and purchases go to `POST /v1/events`.
Attackers (`random_bot`, `adversarial`) fabricate their events over the query's judged pool without
searching, as a click farm would. Every search answer's model is recorded with its time, so the
first answer by a newly promoted version can be found.

`cache_s` > 0 puts a result cache in front of search, as shops do: a query answered less than
`cache_s` ago shows the same list again. It lets one 2-core machine stream events at a shop's rate
while it also trains: every search reranks 50 candidates, about an eighth of a core-second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from data_pipelines.simulator import ShopperSimulator


@dataclass
class Traffic:
    sessions: int = 0
    events: int = 0
    new: int = 0
    duplicate: int = 0
    flagged: int = 0
    searches: list[tuple[float, str]] = field(default_factory=list)

    def first_served(self, model: str, after: float = 0.0) -> float | None:
        """Wall time of the first search answered by `model` (at or after `after`)."""
        return next((t for t, m in self.searches if m == model and t >= after), None)


class Shoppers:
    def __init__(self, url: str, ingest_token: str, simulator: ShopperSimulator, timeout: float = 60.0,
                 cache_s: float = 0.0):
        self.sim, self.cache_s = simulator, cache_s
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self.client = httpx.Client(base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {ingest_token}"})
        self.traffic = Traffic()

    def close(self) -> None:
        self.client.close()

    def run(self, n_sessions: int, rate: float | None = None, behaviour: str = "shopper", post_every: int = 4) -> Traffic:
        """`n_sessions` sessions at `rate` sessions/s (None: as fast as they go); events are posted
        every `post_every` sessions."""
        pending: list[dict] = []
        start = time.perf_counter()
        for i in range(n_sessions):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            session = self.sim.next_session(behaviour)
            shown = self._search(session.query_text) if behaviour == "shopper" else self.sim.pool(session.query_id)
            pending += self.sim.browse(session, shown, time.time(), behaviour)
            self.traffic.sessions += 1
            if (i + 1) % post_every == 0 or i == n_sessions - 1:
                self.post(pending)
                pending = []
        return self.traffic

    def _search(self, query: str) -> list[str]:
        hit = self._cache.get(query)
        if hit is not None and time.time() - hit[0] < self.cache_s:
            return hit[1]
        r = self.client.post("/v1/search", json={"query": query, "k": self.sim.k})
        for _ in range(5):  # shed under overload (503 + Retry-After): a shop's front end retries later
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
            r = self.client.post("/v1/search", json={"query": query, "k": self.sim.k})
        r.raise_for_status()
        answer = r.json()
        self.traffic.searches.append((time.time(), answer["model"]))
        shown = [p["product_id"] for p in answer["products"]]
        self._cache[query] = (time.time(), shown)
        return shown

    def post(self, events: list[dict], chunk: int = 500) -> None:
        for i in range(0, len(events), chunk):
            r = self.client.post("/v1/events", json={"events": events[i:i + chunk]})
            r.raise_for_status()
            answer = r.json()
            self.traffic.events += len(events[i:i + chunk])
            for key in ("new", "duplicate", "flagged"):
                setattr(self.traffic, key, getattr(self.traffic, key) + answer[key])
