"""Freshness: how fast stream feedback reaches serving, and whether it helps, after a drift.

One run, on the artifacts `make demo` leaves (catalog, embeddings, prepared relevance data, an
offline relevance adapter), in a scratch registry seeded with that offline adapter:
1. the shoppers' taste drifts (`data_pipelines.simulator.pick_trend`: a brand becomes what they
   want in one category); a third of the affected queries is held out of the traffic for step 3;
2. simulated shoppers search over HTTP and their events stream into `POST /v1/events`; the
   UpdateCoordinator runs gated updates (configs/stream.yaml policy). Per promoted update it prints
   event-to-serving time: from the first event of the update's batch (its ingest time in the log)
   to the first `/v1/search` answer by the promoted version (target p50 <= 30 s, ~512 events);
3. nDCG@10 against the simulator's drifted truth on the held-out affected queries, for the offline
   adapter, the online (final CURRENT) one and their blend, all measured now (target online >=
   offline + 0.05), and nDCG@10 of both on the original held-out test split (no regression beyond
   the gate's tolerance);
4. poisoning: a 10x flood of bot clicks, then of adversarial clicks; prints the audit lines (none
   may be promoted).

    .venv/bin/python benchmarks/freshness_bench.py [--updates 6] [--rate 4] [--skip-poisoning] [--smoke]

`--smoke`: every step on the tiny random backbone, with a small relevance world (catalog, its
embeddings, prepared data, an untrained offline adapter) built in a temporary directory instead of
the demo's artifacts; 2 small updates before the poisoning, a gate tolerance that promotes any
candidate (so the event-to-serving lines print) and a surge factor of 6 (the 10x floods are still
held; a busy machine's catch-up bursts of shoppers are not); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aisle.runtime import ensure_ray  # noqa: E402
from core import audit  # noqa: E402
from core.config import load_config  # noqa: E402
from core.job_configs import StreamConfig  # noqa: E402
from core.registry import AdapterRegistry  # noqa: E402

WORK = ROOT / "artifacts" / "bench" / "freshness"
TOKEN = "bench-ingest-token"


def seed_registry(source: str, target: Path) -> str:
    """A scratch registry holding only the newest offline relevance adapter, CURRENT."""
    src = AdapterRegistry(source)
    offline = [v for v in src.versions("relevance") if v.lineage.get("trigger") == "offline"]
    if not offline:
        sys.exit("error: no offline relevance adapter in artifacts/registry: run `make demo` first")
    v = offline[-1]
    reg = AdapterRegistry(target)
    info = reg.create_version("relevance", lambda d: shutil.copytree(Path(v.path) / "adapter", d / "adapter"),
                              config=v.config, metrics=v.metrics, lineage={**v.lineage, "copied_from": v.model_id})
    reg.promote("relevance", info.version, reason=f"benchmark start: offline {v.model_id}")
    return info.version


def stream_config(args, work: Path = WORK) -> StreamConfig:
    return load_config(StreamConfig, str(ROOT / "configs" / "stream.yaml"), [
        f"log_dir={work / 'log'}", f"updates_dir={work / 'updates'}", f"audit_log={work / 'audit.jsonl'}",
        f"registry={work / 'registry'}", f"serve.registry={work / 'registry'}", f"serve.ingest_token={TOKEN}",
        f"serve.port={args.port}", *args.set])


def new_decisions(cfg: StreamConfig, seen: int) -> list[dict]:
    return [d for d in audit.read(cfg.audit_log)[seen:] if d.get("decision") != "interrupted"]


def stream_until(shoppers, cfg, n_updates: int, rate: float, budget_s: float, behaviour="shopper",
                 attack_rate: float = 0.0) -> list[dict]:
    """Stream sessions (plus an attack at `attack_rate` sessions/s) until n_updates decisions on
    windows that began after this call (a window already pending holds none of the attack)."""
    seen, start = len(audit.read(cfg.audit_log)), time.time()
    deadline = start + budget_s

    def decided() -> list[dict]:
        return [d for d in new_decisions(cfg, seen)
                if d["examples"].get("span", {}).get("first_ingested_at", start) >= start]

    while len(decided()) < n_updates and time.time() < deadline:
        shoppers.run(4, rate=rate)
        if attack_rate:
            shoppers.run(max(1, round(4 * attack_rate / rate)), rate=None, behaviour=behaviour, post_every=50)
    time.sleep(1.0)
    return decided()


def freshness_rows(decisions: list[dict], traffic) -> list[dict]:
    rows = []
    for d in decisions:
        span = d["examples"].get("span", {})
        row = {"update": d["update_id"], "decision": d["decision"], "events": span.get("events"),
               "examples": d["examples"].get("examples"), "update_s": d["seconds"], "to_serving_s": None}
        if d["decision"] == "promoted":
            served = traffic.first_served(d["candidate"], after=span["first_ingested_at"])
            if served is not None:
                row["to_serving_s"] = round(served - span["first_ingested_at"], 1)
        rows.append(row)
    return rows


def rank_scores(bank, model_id: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    from core.tasks import expected_grade

    return expected_grade(bank.predict_proba(model_id, pairs))


def quality(cfg: StreamConfig, sim, query_sets: dict[str, list[str]], offline: str, online: str, weight: float) -> dict:
    """nDCG@10 of offline, online and blend on the held-out affected queries (drifted truth) and
    of offline and online on the original test split (catalog grades)."""
    from core.adapter_bank import AdapterBank
    from core.tasks import get_task
    from data_pipelines.embed_catalog import product_texts

    reg = AdapterRegistry(cfg.registry)
    versions = {name: reg.get("relevance", v) for name, v in (("offline", offline), ("online", online))}
    bank = AdapterBank(versions["offline"].config["model"]["backbone"], threads=2)
    for name, info in versions.items():
        bank.load(name, Path(info.path) / "adapter")
    products = pd.read_parquet(Path(cfg.catalog_dir) / "products.parquet")
    texts = dict(zip(products["product_id"], product_texts(products)))
    queries = pd.read_parquet(Path(cfg.catalog_dir) / "queries.parquet").set_index("query_id")["text"]
    drifted = {}
    for set_name, eval_queries in query_sets.items():
        per = drifted[set_name] = {k: [] for k in ("offline", "online", "ensemble")}
        for q in eval_queries:
            pool = sim.pool(q)
            pairs = [(queries[q], texts[p]) for p in pool]
            s = {n: rank_scores(bank, n, pairs) for n in ("offline", "online")}
            s["ensemble"] = weight * s["offline"] + (1 - weight) * s["online"]
            for name, scores in s.items():
                per[name].append(sim.ndcg(q, [pool[i] for i in np.argsort(-scores, kind="stable")]))
    task = get_task("relevance")
    test = pd.read_parquet(Path(cfg.data_dir) / "relevance" / "test")
    keep = sorted(test["query_id"].unique())[:60]
    test = test[test["query_id"].isin(keep)]
    labels = list(versions["offline"].config["labels"])
    y = np.array([labels.index(v) for v in test["label"].astype(str)])
    original = {n: task.score_report(labels, y, bank.predict_proba(n, task.to_inputs(test)), test["query_id"].tolist())["ndcg@10"]
                for n in ("offline", "online")}
    return {"drifted": {name: {k: float(np.mean(v)) for k, v in per.items()} for name, per in drifted.items()},
            "original": original, "original_queries": len(keep)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6, help="decided updates to stream for after the drift")
    parser.add_argument("--rate", type=float, default=4.0, help="shopper sessions per second (~12 events each)")
    parser.add_argument("--cache-s", type=float, default=30.0, help="shoppers' search result cache (0: every session searches)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of streaming at most")
    parser.add_argument("--ensemble-weight", type=float, default=0.3, help="offline weight of the blend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--skip-poisoning", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="StreamConfig overrides, e.g. policy.min_examples=64")
    parser.add_argument("--smoke", action="store_true", help="check that every step runs, on the tiny model (numbers mean nothing)")
    args = parser.parse_args()
    if not args.smoke:
        return run(args)
    import _smoke
    from aisle.runtime import free_port

    _smoke.banner()
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        _smoke.relevance_world(world)

        def embed() -> None:  # needs Ray: after ensure_ray
            from core.job_configs import EmbedCatalogConfig
            from data_pipelines import embed_catalog

            embed_catalog.run(load_config(EmbedCatalogConfig, None, [
                f"catalog_dir={world / 'catalog'}", f"output={world / 'embeddings'}", f"backbone={_smoke.BACKBONE}",
                "cpus_per_actor=0.5"]))

        args.updates, args.cache_s, args.budget = 2, 0.0, min(args.budget, 120.0)
        args.port = free_port("127.0.0.1", 0)  # any free port: 8011 may be another run's
        args.set = [f"data_dir={world / 'prepared'}", f"catalog_dir={world / 'catalog'}",
                    f"serve.embeddings={world / 'embeddings'}", f"serve.catalog_dir={world / 'catalog'}",
                    f"serve.backbone={_smoke.BACKBONE}", "serve.threads_per_replica=1", "serve.current_ttl_s=0.2",
                    "policy.min_examples=24", "policy.cooldown_s=0", "policy.poll_s=0.2", "update.epochs=1",
                    "update.batch_size=8", "update.replay_examples=40", "update.threads_per_worker=1",
                    "update.top_layers=1", "gate.original_queries=3", "gate.tolerance=1.0",
                    "policy.surge_factor=6", *args.set]  # floods (10x) still held; a stalled machine's catch-up burst not
        ensure_ray(include_dashboard=False)  # as the other benchmarks' Ray: its dozen processes cost a smoke run ~1 GB
        return run(args, Path(tmp) / "work", world / "registry", embed)


def run(args, work: Path = WORK, source_registry: Path = ROOT / "artifacts" / "registry", before_stream=None) -> int:
    """The benchmark in `work` (emptied first), from the newest offline relevance adapter of `source_registry`;
    `before_stream`: called once Ray is up, before the stream starts."""
    from aisle.shoppers import Shoppers
    from aisle.streaming import start_stream, stop_stream
    from data_pipelines.catalog import read_catalog
    from data_pipelines.simulator import ShopperSimulator, pick_trend

    shutil.rmtree(work, ignore_errors=True)
    cfg = stream_config(args, work)
    offline = seed_registry(str(source_registry), work / "registry")
    catalog = read_catalog(cfg.catalog_dir)
    drift = pick_trend(catalog, seed=args.seed)
    sim = ShopperSimulator(catalog, seed=args.seed, drift=drift)
    affected = sorted(sim.affected_queries())
    eval_queries = affected[::3]
    sim.hold_out(eval_queries)
    print(f"drift: {drift.name}; {len(affected)} affected queries, {len(eval_queries)} held out of the traffic "
          f"for evaluation")

    ensure_ray()
    if before_stream is not None:
        before_stream()
    url = start_stream(cfg)
    shoppers = Shoppers(url, TOKEN, sim, cache_s=args.cache_s)
    try:
        start = time.time()
        decisions = stream_until(shoppers, cfg, args.updates, args.rate, args.budget)
        print(f"\nstreamed {shoppers.traffic.sessions} sessions, {shoppers.traffic.events} events in "
              f"{time.time() - start:.0f} s ({shoppers.traffic.flagged} flagged)")
        rows = freshness_rows(decisions, shoppers.traffic)
        print(pd.DataFrame(rows).to_string(index=False))
        times = [r["to_serving_s"] for r in rows if r["to_serving_s"] is not None]
        events = [r["events"] for r in rows if r["to_serving_s"] is not None]
        if times:
            print(f"\nevent-to-serving over {len(times)} promoted updates: p50 {statistics.median(times):.1f} s, "
                  f"max {max(times):.1f} s (target p50 <= 30 s), events per update: median "
                  f"{statistics.median(events):.0f}")
        online = AdapterRegistry(cfg.registry).current("relevance")
        sets = {"held out of the traffic": eval_queries, "searched by the shoppers": [q for q in affected if q not in eval_queries]}
        q = quality(cfg, sim, sets, offline, online, args.ensemble_weight)
        o = q["original"]
        for name, d in q["drifted"].items():
            print(f"\nnDCG@10 vs the drifted truth, {len(sets[name])} affected queries {name} (judged pools):")
            print(f"  offline relevance@{offline}: {d['offline']:.4f}")
            print(f"  online  relevance@{online}: {d['online']:.4f}   (online - offline = {d['online'] - d['offline']:+.4f}, "
                  f"target >= +0.05)")
            print(f"  ensemble w_offline={args.ensemble_weight}: {d['ensemble']:.4f}")
        print(f"nDCG@10 on the original test split ({q['original_queries']} queries, catalog grades): "
              f"offline {o['offline']:.4f}, online {o['online']:.4f} ({o['online'] - o['offline']:+.4f}; gate tolerance "
              f"{cfg.gate.tolerance} per update)")
        if not args.skip_poisoning:
            for behaviour in ("random_bot", "adversarial"):
                before = AdapterRegistry(cfg.registry).current("relevance")
                lines = stream_until(shoppers, cfg, 1, args.rate, args.budget / 2, behaviour, attack_rate=10 * args.rate)
                after = AdapterRegistry(cfg.registry).current("relevance")
                print(f"\npoisoning, {behaviour} flood at 10x the shoppers' rate: CURRENT {before} -> {after}")
                for line in lines:
                    print("  " + audit.format_line(line))
        print("\naudit log:")
        for line in audit.read(cfg.audit_log):
            print("  " + audit.format_line(line))
    finally:
        shoppers.close()
        stop_stream()
    return 0


if __name__ == "__main__":
    sys.exit(main())
