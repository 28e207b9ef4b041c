"""Simulated shoppers against a running Aisle, over HTTP: the traffic of the demo and the freshness benchmark.

A shopper session asks `POST /v1/search` (so what it sees is what Aisle ranks, by whichever version
is CURRENT at that moment), browses the answer with the simulator's position-biased click model
(`data_pipelines.simulator`), and its impressions (with the reranker's score each was shown with),
clicks and purchases go to `POST /v1/events`. Flooding attackers (`random_bot`, `adversarial`)
fabricate their events over the query's judged pool without searching, as a click farm would; the
`stealthy` farm searches like a shopper. Every search answer's model and online-layer snapshot
offset are recorded with its time, and every acknowledged batch with the log offset it reached, so
the first answer by a newly promoted version, or covering an event, can be found.

`cache_s` > 0 puts a result cache in front of search, as shops do: a query answered less than
`cache_s` ago shows the same list again. It lets one 2-core machine stream events at a shop's rate
while it also trains: every search reranks 50 candidates, about an eighth of a core-second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from data_pipelines.simulator import ShopperSimulator

SEARCHING = ("shopper", "stealthy")  # behaviours that see what Aisle ranks (the floods fabricate)


@dataclass
class Traffic:
    sessions: int = 0
    events: int = 0
    new: int = 0
    duplicate: int = 0
    flagged: int = 0
    searches: list[tuple[float, str, int | None]] = field(default_factory=list)  # (answered at, model, snapshot offset)
    acks: list[tuple[float, int, int]] = field(default_factory=list)  # (acknowledged at, log end offset, new events)

    def first_served(self, model: str, after: float = 0.0) -> float | None:
        """Wall time of the first search answered by `model` (at or after `after`)."""
        return next((t for t, m, _ in self.searches if m == model and t >= after), None)

    def effects(self) -> list[tuple[float, float, int, float]]:
        """(acknowledged at, seconds from then to the first search answer whose online snapshot covers
        the batch's end offset, new events, seconds from then to the next answer the layer applied to)
        per acknowledged batch with new events; batches no answer covered yet are left out."""
        out, i = [], 0
        answers = sorted((t, o) for t, _, o in self.searches if o is not None)
        for acked, end, new in sorted(self.acks):
            while i < len(answers) and answers[i][0] < acked:
                i += 1
            served = next((t for t, o in answers[i:] if o >= end), None)
            if served is not None and new:
                out.append((acked, served - acked, new, answers[i][0] - acked))
        return out

    def effect_delays(self) -> list[tuple[float, int]]:
        """(seconds, new events) per acknowledged batch: `effects`' event-to-effect delays."""
        return [(delay, new) for _, delay, new, _ in self.effects()]


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
            scores: dict[str, float] = {}
            if behaviour in SEARCHING:
                shown, scores = self._search(session.query_text)
            else:
                shown = self.sim.pool(session.query_id)
            for event in self.sim.browse(session, shown, time.time(), behaviour):
                if event["type"] == "impression" and event["product_id"] in scores:
                    event["score"] = scores[event["product_id"]]
                pending.append(event)
            self.traffic.sessions += 1
            if (i + 1) % post_every == 0 or i == n_sessions - 1:
                self.post(pending)
                pending = []
        return self.traffic

    def search(self, query: str, k: int, **options) -> dict:
        """One `/v1/search` answer (503s retried after Retry-After, as a shop's front end would)."""
        body = {"query": query, "k": k, **options}
        r = self.client.post("/v1/search", json=body)
        for _ in range(5):
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
            r = self.client.post("/v1/search", json=body)
        r.raise_for_status()
        return r.json()

    def _search(self, query: str) -> tuple[list[str], dict[str, float]]:
        hit = self._cache.get(query)
        if hit is not None and time.time() - hit[0] < self.cache_s:
            return hit[1], hit[2]
        answer = self.search(query, self.sim.k)
        online = answer.get("online")
        self.traffic.searches.append((time.time(), answer["model"], online["offset"] if online else None))
        shown = [p["product_id"] for p in answer["products"]]
        scores = {p["product_id"]: p["model_score"] for p in answer["products"] if p.get("model_score") is not None}
        self._cache[query] = (time.time(), shown, scores)
        return shown, scores

    def post(self, events: list[dict], chunk: int = 500) -> None:
        for i in range(0, len(events), chunk):
            r = self.client.post("/v1/events", json={"events": events[i:i + chunk]})
            r.raise_for_status()
            answer = r.json()
            self.traffic.acks.append((time.time(), answer["end_offset"], answer["new"]))
            self.traffic.events += len(events[i:i + chunk])
            for key in ("new", "duplicate", "flagged"):
                setattr(self.traffic, key, getattr(self.traffic, key) + answer[key])
