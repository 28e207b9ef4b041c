"""How `benchmarks/freshness_bench.py` reads what `/v1/search` serves: nDCG@10 of each answer against
the simulator's truth, readings over time, and the lines that break a reading down (which queries
the online layer moved, what entered and left an attacked query's top 10)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np


class Prober:
    """nDCG@10 of what `/v1/search` answers, on its own connection (the shoppers keep shopping)."""

    def __init__(self, url: str, sim, texts: dict[str, str]):
        self.client = httpx.Client(base_url=url, timeout=60)
        self.sim, self.texts = sim, texts
        self.first_stage = 0  # answers in first-stage order, asked again

    def answers(self, queries: list[str], served: dict[str, str] | None = None, **options) -> dict[str, list[dict]]:
        """The products `/v1/search` answers for each query, reranked: past a 503 it waits its
        Retry-After, and an answer in the first stage's order (the reranker past its budget, e.g. on a
        new version's cold score cache under the shoppers' load) is asked again once the late scores
        are cached, so that every reading is of the adapter's ranking (plus the layer), not of the
        fallback's (counted in `first_stage`). `served`, when given, gets what answered each query
        (the model, and "first-stage order" when even the last ask was not reranked)."""
        out = {}
        for q in queries:
            for attempt in range(20):
                r = self.client.post("/v1/search", json={"query": self.texts[q], "k": 10, **options})
                if r.status_code == 503:
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                r.raise_for_status()
                body = r.json()
                if body.get("reranked") or body.get("model") == "retrieval-only" or attempt >= 10:
                    break
                self.first_stage += 1
                time.sleep(0.25)
            r.raise_for_status()
            out[q] = body["products"]
            if served is not None:
                served[q] = body.get("model", "?") + ("" if body.get("reranked") or body.get("model") == "retrieval-only"
                                                      else " in first-stage order")
        return out

    def score(self, answers: dict[str, list[dict]]) -> dict[str, float]:
        return {q: self.sim.ndcg(q, [p["product_id"] for p in products]) for q, products in answers.items()}

    def ndcg(self, queries: list[str], **options) -> float:
        values = list(self.score(self.answers(queries, **options)).values())
        return float(np.mean(values)) if values else float("nan")


def changed_queries(prober: Prober, before: dict[str, list[dict]], after: dict[str, list[dict]],
                    alone: tuple[dict[str, list[dict]], dict[str, list[dict]]],
                    served: tuple[dict[str, str], dict[str, str]]) -> list[str]:
    """One line per query: its nDCG@10 before and after, the same without the online layer (`alone`:
    the answers of online=false at both readings: what the reranker's order did), what answered it
    at both readings (`served`: a version promoted in between changes the order without the layer),
    and what entered and left its top 10 (true grades)."""
    lines, old, new = [], prober.score(before), prober.score(after)
    old_alone, new_alone = prober.score(alone[0]), prober.score(alone[1])
    for q in before:
        ids_before, ids_after = [p["product_id"] for p in before[q]], [p["product_id"] for p in after[q]]
        entered = [f"{p} grade {prober.sim.truth(q, [p])[0]}" for p in ids_after if p not in ids_before]
        left = [f"{p} grade {prober.sim.truth(q, [p])[0]}" for p in ids_before if p not in ids_after]
        moved = [f"{p['product_id']} grade {prober.sim.truth(q, [p['product_id']])[0]} {p['score'] - p['model_score']:+.2f}"
                 for p in after[q] if p.get("model_score") is not None and abs(p["score"] - p["model_score"]) > 1e-6]
        lines.append(f"  {prober.texts[q]!r}: nDCG@10 {old[q]:.3f} -> {new[q]:.3f} (without the layer "
                     f"{old_alone[q]:.3f} -> {new_alone[q]:.3f}; served by {served[0].get(q, '?')} -> "
                     f"{served[1].get(q, '?')}); entered the top 10: "
                     f"{', '.join(entered) or 'none'}; left: {', '.join(left) or 'none'}"
                     + ("; same products, reordered" if not entered and ids_before != ids_after else "")
                     + f"; the layer moves now: {', '.join(moved) or 'none'}")
    return lines


def moved_by_layer(prober: Prober, with_layer: dict[str, list[dict]], alone: dict[str, list[dict]],
                   most: int = 5) -> list[str]:
    """Lines on the queries whose top 10 the online layer changed: how many gained and lost nDCG@10,
    then the `most` worst losses with the products it moved (score - model score) and their true grade."""
    ours, theirs = prober.score(with_layer), prober.score(alone)
    diff = {q: ours[q] - theirs[q] for q in ours if abs(ours[q] - theirs[q]) > 1e-9}
    lines = [f"untouched queries the online layer moved: {sum(d > 0 for d in diff.values())} gained, "
             f"{sum(d < 0 for d in diff.values())} lost nDCG@10 (sum {sum(diff.values()):+.3f})"]
    for q in sorted((q for q in diff if diff[q] < 0), key=diff.get)[:most]:
        moved = [f"{p['product_id']} grade {prober.sim.truth(q, [p['product_id']])[0]} {p['score'] - p['model_score']:+.2f}"
                 for p in with_layer[q] if p.get("model_score") is not None and abs(p["score"] - p["model_score"]) > 1e-6]
        gone = {p["product_id"] for p in alone[q]} - {p["product_id"] for p in with_layer[q]}
        left = [f"{p} grade {prober.sim.truth(q, [p])[0]}" for p in sorted(gone)]
        lines.append(f"  {prober.texts[q]!r}: {diff[q]:+.3f}; moved {', '.join(moved) or 'nothing in its top 10'}"
                     f"; out of the top 10: {', '.join(left) or 'none'}")
    return lines


class Watch(threading.Thread):
    """Served nDCG@10 on `queries` every `every` s, from `start` on; the first time it reached `target`."""

    def __init__(self, prober: Prober, queries: list[str], every: float, target: float, start: float):
        super().__init__(daemon=True)
        self.prober, self.queries, self.every, self.target, self.start_t = prober, queries, every, target, start
        self.readings: list[tuple[float, float]] = []
        self.reached: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            value = self.prober.ndcg(self.queries)
            elapsed = time.time() - self.start_t
            self.readings.append((elapsed, value))
            if self.reached is None and value >= self.target:
                self.reached = elapsed
            self.stop.wait(self.every)
