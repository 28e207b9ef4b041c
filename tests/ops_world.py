"""A small stream world for `aisle status` / `aisle report` tests, built without Ray.

50 minutes of simulated shoppers (data_pipelines.simulator over a 150-product catalog) written
through the real FeedbackStore (screened: a click farm's events get flagged), a registry with two
tasks, four audited update decisions (promoted, rejected, failed, promoted) and a saved Prometheus
scrape with latency histograms. Ranking gets better at each promotion, so CTR rises where the
report draws its promotion lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import audit
from core.feedback_store import FeedbackStore
from core.registry import ADAPTER_DIR, AdapterRegistry
from core.screening import AnomalyScreen
from data_pipelines.catalog import generate_catalog
from data_pipelines.simulator import ShopperSimulator, bm25_pool_ranker

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
MINUTE = 60.0
PROMOTED_AT = (START + 20.5 * MINUTE, START + 41 * MINUTE)

METRICS_PROM = """# HELP ray_aisle_request_latency_ms time from request to response at the ingress, in ms
# TYPE ray_aisle_request_latency_ms histogram
{latency}
# TYPE ray_aisle_events_total counter
ray_aisle_events_total{{outcome="accepted",SessionName="s"}} {events}
ray_aisle_events_total{{outcome="duplicate",SessionName="s"}} 12
ray_aisle_events_total{{outcome="rejected",SessionName="s"}} 3
# TYPE ray_aisle_adapters_loaded gauge
ray_aisle_adapters_loaded{{replica="aisle_TaskModel#kq3x",WorkerId="w1"}} 2
ray_aisle_adapters_loaded{{replica="aisle_TaskModel#p0z9",WorkerId="w2"}} 1
# TYPE ray_aisle_adapter_resident gauge
ray_aisle_adapter_resident{{replica="aisle_TaskModel#kq3x",model_id="relevance@v4"}} 1
ray_aisle_adapter_resident{{replica="aisle_TaskModel#kq3x",model_id="sentiment@v2"}} 1
ray_aisle_adapter_resident{{replica="aisle_TaskModel#kq3x",model_id="relevance@v2"}} 0
ray_aisle_adapter_resident{{replica="aisle_TaskModel#p0z9",model_id="relevance@v4"}} 1
"""
LATENCY_BOUNDS = (1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000, 10000)
# route, task, per-bucket (not cumulative) counts for the bounds above plus +Inf
LATENCY = {
    ("/v1/search", "relevance"): (0, 0, 0, 0, 4, 40, 120, 210, 90, 30, 6, 0, 0, 0, 0, 0),
    ("/v1/predict/{task}", "sentiment"): (0, 0, 2, 30, 60, 20, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0),
    ("/v1/recommend", "retrieval"): (0, 3, 25, 40, 10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ("/v1/events", ""): (5, 60, 90, 20, 4, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0),
}


@dataclass
class World:
    root: Path
    log_dir: Path
    audit_log: Path
    registry: Path
    metrics_file: Path
    end_offset: int
    committed: dict[str, int]
    flagged: int
    events: int

    def overrides(self, **extra: str) -> list[str]:
        base = {"log_dir": self.log_dir, "audit_log": self.audit_log, "registry": self.registry,
                "metrics_file": self.metrics_file, "server": "http://127.0.0.1:9", "metrics_url": ""}
        return [f"{k}={v}" for k, v in {**base, **extra}.items()]


def _latency_text() -> str:
    lines = []
    for (route, task), per_bucket in LATENCY.items():
        labels = f'route="{route}",task="{task}"'
        cumulative = np.cumsum(per_bucket)
        for bound, count in zip([*map(str, LATENCY_BOUNDS), "+Inf"], cumulative):
            lines.append(f'ray_aisle_request_latency_ms_bucket{{le="{bound}",{labels}}} {count}')
        mids = [b / 1.5 for b in LATENCY_BOUNDS] + [15000]
        lines.append(f"ray_aisle_request_latency_ms_sum{{{labels}}} {float(np.dot(per_bucket, mids)):.1f}")
        lines.append(f"ray_aisle_request_latency_ms_count{{{labels}}} {int(cumulative[-1])}")
    return "\n".join(lines)


def _write_log(log_dir: Path) -> tuple[int, int, int]:
    catalog = generate_catalog(seed=0, n_products=150, n_queries=30, candidates_per_query=20)
    sim = ShopperSimulator(catalog, seed=1)
    bm25 = bm25_pool_ranker(catalog, sim)
    best = lambda text, qid: sorted(sim.pool(qid), key=lambda p: -sim.truth(qid, [p])[0])  # noqa: E731

    def mixed(share_best: float):
        rng = np.random.default_rng(int(share_best * 100))
        return lambda text, qid: best(text, qid) if rng.random() < share_best else bm25(text, qid)

    events = (sim.sessions(120, bm25, START, rate_sessions_per_s=0.1)
              + sim.sessions(120, mixed(0.5), PROMOTED_AT[0], rate_sessions_per_s=0.1)
              + sim.sessions(60, best, PROMOTED_AT[1], rate_sessions_per_s=0.1)
              + sim.sessions(40, bm25, START + 27 * MINUTE, rate_sessions_per_s=1.0, behaviour="random_bot"))
    events.sort(key=lambda e: e["ts"])
    now = [START]
    store = FeedbackStore(log_dir, salt="ops-test", screen=AnomalyScreen(), clock=lambda: now[0])
    try:
        flagged, minute = 0, np.floor((np.array([e["ts"] for e in events]) - START) / MINUTE)
        for m in np.unique(minute):
            batch = [e for e, bm in zip(events, minute) if bm == m]
            now[0] = max(e["ts"] for e in batch) + 0.5
            flagged += store.append(batch)["flagged"]
        end = store.stats()["end_offset"]
        store.commit("coordinator", end - 400)
        store.commit("sessions", end)
    finally:
        store.close()
    return end, flagged, len(events)


def _write_registry(root: Path) -> None:
    registry = AdapterRegistry(root)

    def version(task: str, metrics: dict, lineage: dict) -> str:
        return registry.create_version(task, lambda d: (d / ADAPTER_DIR).mkdir(), config={"task": task},
                                       metrics=metrics, lineage=lineage).version

    v1 = version("relevance", {"val_ndcg@10": 0.8185}, {"trigger": "offline", "parent": None})
    registry.promote("relevance", v1, reason="first version of the task")
    v2 = version("relevance", {"val_ndcg@10": 0.877, "gate_original_ndcg_candidate": 0.8699},
                 {"trigger": "stream", "parent": "v1", "update_id": "update-00001"})
    registry.promote("relevance", v2, reason="update-00001: no regression beyond 0.02")
    version("relevance", {"val_ndcg@10": 0.70, "gate_original_ndcg_candidate": 0.8370},
            {"trigger": "stream", "parent": "v2", "update_id": "update-00002"})
    v4 = version("relevance", {"val_ndcg@10": 0.9012, "gate_original_ndcg_candidate": 0.8744},
                 {"trigger": "stream", "parent": "v2", "update_id": "update-00004"})
    registry.promote("relevance", v4, reason="update-00004: no regression beyond 0.02")
    s1 = version("sentiment", {"val_macro_f1": 0.551, "val_accuracy": 0.80}, {"trigger": "offline"})
    registry.promote("sentiment", s1, reason="first version of the task")
    s2 = version("sentiment", {"val_macro_f1": 0.579, "val_accuracy": 0.83}, {"trigger": "offline"})
    registry.promote("sentiment", s2, reason="serve_bench: demo-budget adapter")


def _write_audit(path: Path) -> None:
    def gate(orig_cur, orig_cand, fresh_cur, fresh_cand):
        return {"original_ndcg_current": orig_cur, "original_ndcg_candidate": orig_cand, "original_ndcg_offline": 0.857,
                "fresh_ndcg_current": fresh_cur, "fresh_ndcg_candidate": fresh_cand, "fresh_lists": 9,
                "original_queries": 32, "train_examples": 180, "holdout_examples": 40}

    lines = [
        (PROMOTED_AT[0], "update-00001", "promoted", "v1", "relevance@v2", gate(0.857, 0.8699, 0.811, 0.842),
         "no regression beyond 0.02 on the original set or fresh held-out lists", 412, 0, 118.2),
        (START + 33 * MINUTE, "update-00002", "rejected", "v2", "relevance@v3", gate(0.8699, 0.8370, 0.842, 0.851),
         "original-set nDCG@10 0.8370 < CURRENT 0.8699 - 0.02", 530, 96, 106.3),
        (START + 37 * MINUTE, "update-00003", "failed", "v2", None, {},
         "FileNotFoundError: artifacts/prepared/relevance/val", 0, 0, 3.1),
        (PROMOTED_AT[1], "update-00004", "promoted", "v2", "relevance@v4", gate(0.8699, 0.8744, 0.855, 0.889),
         "no regression beyond 0.02 on the original set or fresh held-out lists", 498, 4, 121.7),
    ]
    for ts, update_id, decision, parent, candidate, metrics, reason, examples, flagged, seconds in lines:
        audit.append(path, {"ts": ts, "update_id": update_id, "decision": decision, "trigger": f"{examples} labelled "
                            "examples >= 96", "parent": parent, "candidate": candidate, "reason": reason,
                            "metrics": metrics, "examples": {"examples": examples, "flagged": flagged, "events": 2000},
                            "seconds": seconds})


def build_world(root: Path) -> World:
    log_dir, audit_log, registry = root / "log", root / "audit.jsonl", root / "registry"
    end, flagged, events = _write_log(log_dir)
    _write_registry(registry)
    _write_audit(audit_log)
    metrics_file = root / "metrics.prom"
    metrics_file.write_text(METRICS_PROM.format(latency=_latency_text(), events=events))
    return World(root, log_dir, audit_log, registry, metrics_file, end,
                 {"coordinator": end - 400, "sessions": end}, flagged, events)
