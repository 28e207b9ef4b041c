"""Freshness: the stream's two speeds after a drift, on one machine that serves, shops and learns.

One run, on the artifacts `make demo` leaves (catalog, embeddings, prepared relevance data, an
offline relevance adapter), in a scratch registry seeded with that offline adapter:
1. shoppers search over HTTP and stream their events into `POST /v1/events` for `--warmup` s;
   then their taste drifts (`--drift <kind>`: configs/drift/<kind>.yaml, or `--drift-spec`). The
   affected queries that `data_pipelines.drift.hold_out_queries` keeps back (by normalised text and
   intent) are never searched by the shoppers: what serving gains on them was learnt, not memorised;
2. for `--seconds` the fast path (the ClickLayer actor and its snapshots) and the slow path (the
   UpdateCoordinator's gated LoRA updates) learn from the stream, while a prober asks `/v1/search`
   for the held-out affected queries every `--eval-every` s;
3. three poisoning attacks (unless `--skip-poisoning`): a 10x random-bot flood, a 10x adversarial
   flood, and a stealthy farm (60 shopper-like accounts clicking irrelevant products on 3 chosen
   queries at the shoppers' own rate for `--stealthy-s` s).

Every nDCG@10 is of the top 10 that `/v1/search` answers (what the ingress serves, scored by its own
function), against the simulator's drifted truth: "offline" asks for the offline version without
the online layer, "served" asks as a shop does (CURRENT plus the online layer). It prints, exactly:

    fast path: event-to-effect p50 <s> s, p99 <s> s
    consolidation: window-to-serving p50 <s> s over <n> promoted updates
    held-out affected queries nDCG@10: offline <x>, served <y> (served - offline = <+d>)
    untouched queries nDCG@10: offline <x>, served <y> (served - offline = <+d>)
    time to offline+0.05 on held-out affected queries: <s> s
    poisoning <flood|adversarial|stealthy>: promoted <n>, attacked queries nDCG@10 change <+d>, frozen after <s> s

event-to-effect: from an events batch's acknowledgement to the first search answer whose snapshot
covers the batch's end offset (per event). window-to-serving: from the moment an update's window
closed (the update started) to the first search answered by the version it promoted. "frozen
after": from the attack's start to the first freeze of a click-layer key ("n/a": none froze).

    .venv/bin/python benchmarks/freshness_bench.py --drift brand_trend [--seconds 240] [--smoke]

`--smoke`: every step on the tiny random backbone and a small generated world, seconds instead of
minutes, and a gate tolerance that promotes any candidate; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import workspace  # noqa: E402

from ops.runtime import ensure_ray  # noqa: E402
from core import audit  # noqa: E402
from core.config import load_config  # noqa: E402
from core.registry import ADAPTER_DIR, AdapterRegistry  # noqa: E402
from core.stream_config import StreamConfig  # noqa: E402
from _freshness_probe import Prober, Watch, changed_queries, moved_by_layer  # noqa: E402  (benchmarks/)

WORK = Path(workspace.path("bench", workspace.default_root(ROOT))) / "freshness"
TOKEN = "bench-ingest-token"
TARGET_GAIN = 0.05
UNTOUCHED_QUERIES = 40
FLOOD_QUERIES = 30
ATTACKS = (("flood", "random_bot"), ("adversarial", "adversarial"), ("stealthy", "stealthy"))


def seed_registry(source: str, target: Path) -> str:
    """A scratch registry holding only the newest offline relevance adapter, CURRENT."""
    src = AdapterRegistry(source)
    offline = [v for v in src.versions("relevance") if v.lineage.get("trigger") == "offline"]
    if not offline:
        sys.exit(f"error: no offline relevance adapter in {source}: run `make demo` first")
    v = offline[-1]
    reg = AdapterRegistry(target)
    info = reg.create_version("relevance", lambda d: shutil.copytree(Path(v.path) / ADAPTER_DIR, d / ADAPTER_DIR),
                              config=v.config, metrics=v.metrics, lineage={**v.lineage, "copied_from": v.model_id})
    reg.promote("relevance", info.version, reason=f"benchmark start: offline {v.model_id}")
    return info.version


def stream_config(args, work: Path) -> StreamConfig:
    return load_config(StreamConfig, str(ROOT / "configs" / "stream.yaml"), [
        f"log_dir={work / 'log'}", f"updates_dir={work / 'updates'}", f"audit_log={work / 'audit.jsonl'}",
        f"registry={work / 'registry'}", f"serve.registry={work / 'registry'}", f"serve.ingest_token={TOKEN}",
        f"data_dir={args.data_dir}", f"catalog_dir={args.catalog_dir}", f"serve.catalog_dir={args.catalog_dir}",
        f"serve.embeddings={args.embeddings}", f"serve.port={args.port}", *args.set])


def shop(shoppers, seconds: float, rate: float, behaviour: str | None = None, attack_rate: float | None = None) -> None:
    """Shoppers at `rate` sessions/s for `seconds`, with an attack interleaved: a flood (attack_rate
    > rate: unthrottled bursts of `attack_rate / rate` times the shoppers' sessions) or a farm at the
    shoppers' own rate (equal chunks, both at twice the rate)."""
    end = time.time() + seconds
    while time.time() < end:
        if behaviour is None:
            shoppers.run(4, rate=rate)
        elif attack_rate and attack_rate > rate:
            shoppers.run(4, rate=rate)
            shoppers.run(max(1, round(4 * attack_rate / rate)), rate=None, behaviour=behaviour, post_every=50)
        else:
            shoppers.run(4, rate=2 * rate)
            shoppers.run(4, rate=2 * rate, behaviour=behaviour)


def percentile(delays: list[tuple[float, int]], q: float) -> float:
    """The q-th percentile over events (each batch's delay counted once per event in it)."""
    values = np.repeat([d for d, _ in delays], [n for _, n in delays])
    return float(np.percentile(values, q)) if len(values) else float("nan")


def slowest_effects(traffic, since: float, share: float = 0.01) -> str:
    """Where the event-to-effect tail comes from: for the slowest `share` of acknowledged batches, when
    each was acknowledged (seconds after `since`), its delay, and how long until the next answer the
    online layer applied to (a long one: searches answered slowly, or in first-stage order, which the
    layer does not adjust; a short one: the snapshot lagged)."""
    rows = sorted(((delay, acked - since, nxt) for acked, delay, _, nxt in traffic.effects()), reverse=True)
    return ", ".join(f"{at:.0f} s: {d:.1f} s (next reranked answer {nxt:.1f} s)"
                     for d, at, nxt in rows[:max(1, int(share * len(rows)))])


def consolidation(cfg: StreamConfig, traffic, since: float) -> tuple[list[float], list[dict]]:
    """Window-to-serving seconds of the updates promoted since `since`, and every decision since."""
    decisions = [d for d in audit.read(cfg.audit_log) if d.get("ts", 0) >= since and d.get("decision") != "interrupted"]
    times = []
    for d in decisions:
        if d["decision"] == "promoted":
            closed = d["ts"] - d.get("seconds", 0.0)
            served = traffic.first_served(d["candidate"], after=closed)
            if served is not None:
                times.append(served - closed)
    return times, decisions


def _log_end() -> int:
    import ray

    from actors.feedback_log import get_feedback_log

    return int(ray.get(get_feedback_log().stats.remote())["end_offset"])


def _committed() -> int:
    """The update coordinator's committed log offset: every event below it is in a decided window."""
    import ray

    from actors.feedback_log import get_feedback_log
    from actors.update_coordinator import CONSUMER

    return int(ray.get(get_feedback_log().committed.remote(CONSUMER)))


def first_freeze(cfg: StreamConfig, since: float) -> float | None:
    frozen = [r["ts"] for r in audit.read(Path(cfg.click_state_dir) / "audit.jsonl")
              if r.get("decision") == "frozen" and r.get("ts", 0) >= since]
    return min(frozen) - since if frozen else None


def attack(name: str, behaviour: str, args, cfg, shoppers, prober, sim, pool: list[str]) -> str:
    """One attack and its line: promotions of windows that overlap it, the attacked queries' served
    nDCG@10 after minus before, and how long until the click layer froze a key."""
    if behaviour == "stealthy":
        targets = list(sim.attack_queries or [])
        if not targets:
            sim.next_session("stealthy")  # picks and remembers the farm's queries
            targets = list(sim.attack_queries)
        seconds, attack_rate = args.stealthy_s, args.rate
    else:
        rng = np.random.default_rng(args.seed + len(name))
        targets = sorted(rng.choice(pool, size=min(FLOOD_QUERIES, len(pool)), replace=False).tolist())
        seconds, attack_rate = args.attack_s, 10 * args.rate
    served_before, served_after = {}, {}
    before_answers = prober.answers(targets, served=served_before)
    before = float(np.mean(list(prober.score(before_answers).values())))
    before_alone = prober.answers(targets, online=False) if behaviour == "stealthy" else {}
    start = time.time()
    shop(shoppers, seconds, args.rate, behaviour, attack_rate)
    end = time.time()
    attack_end = _log_end()
    shop(shoppers, args.settle_s, args.rate)
    # Every window holding the attack's events is decided before the attack is judged: windows take
    # events only once policy.watch_s old, so shoppers keep shopping until the coordinator has
    # committed past the attack (at most watch + 3 minutes).
    deadline = time.time() + (args.decide_wait_s if args.decide_wait_s is not None else cfg.policy.watch_s + 180.0)
    while _committed() < attack_end and time.time() < deadline:
        shop(shoppers, 5.0, args.rate)
    _, decisions = consolidation(cfg, shoppers.traffic, start)
    def overlaps(d: dict) -> bool:  # the window took in events while the attack ran
        span = d["examples"].get("span") or {}
        return span.get("first_ingested_at", end + 1) <= end and span.get("last_ingested_at", start - 1) >= start

    overlapping = [d for d in decisions if overlaps(d)]
    promoted = sum(d["decision"] == "promoted" for d in overlapping)
    after_answers = prober.answers(targets, served=served_after)
    after = float(np.mean(list(prober.score(after_answers).values())))
    if behaviour == "stealthy":  # a few queries: one moving shows in the line, so each is shown
        for line in changed_queries(prober, before_answers, after_answers,
                                    (before_alone, prober.answers(targets, online=False)),
                                    (served_before, served_after)):
            print(line)
    frozen = first_freeze(cfg, start)
    frozen_text = f"{frozen:.1f}" if frozen is not None else "n/a"
    for d in overlapping:
        print("  " + audit.format_line(d))
    return (f"poisoning {name}: promoted {promoted}, attacked queries nDCG@10 change {after - before:+.4f}, "
            f"frozen after {frozen_text} s")


def run(args, work: Path = WORK, before_stream=None) -> int:
    """The benchmark in `work` (emptied first); `before_stream`: called once Ray is up."""
    import pandas as pd

    from aisle.shoppers import Shoppers
    from aisle.streaming import start_stream, stop_stream
    from data_pipelines.catalog import read_catalog
    from data_pipelines.drift import hold_out_queries, load_drift
    from data_pipelines.simulator import ShopperSimulator

    shutil.rmtree(work, ignore_errors=True)
    cfg = stream_config(args, work)
    offline = seed_registry(args.registry, work / "registry")
    catalog = read_catalog(cfg.catalog_dir)
    spec = args.drift_spec or str(ROOT / "configs" / "drift" / f"{args.drift}.yaml")
    drift = load_drift(spec, catalog, seed=args.seed)
    sim = ShopperSimulator(catalog, seed=args.seed, drift=drift)
    affected = sorted(sim.affected_queries())
    held = hold_out_queries(catalog, affected)
    sim.hold_out(held.excluded)
    texts = dict(zip(catalog.queries["query_id"], catalog.queries["text"]))
    searchable = sorted(set(texts) - set(held.excluded))
    untouched = [q for q in searchable if q not in set(affected)]
    untouched = untouched[::max(1, len(untouched) // UNTOUCHED_QUERIES)][:UNTOUCHED_QUERIES]
    sim.set_drift(None)  # the taste moves after the warm-up
    print(f"drift: {drift.name} ({drift.kind}); {len(affected)} affected queries, {len(held.evaluation)} held out "
          f"for evaluation ({len(held.excluded)} queries never searched); {len(untouched)} untouched queries")

    ensure_ray()
    if before_stream is not None:
        before_stream()
    url = start_stream(cfg, recommend=False)   # relevance is measured here; recommend: rec_stream_bench.py
    shoppers = Shoppers(url, TOKEN, sim, cache_s=0.0)
    prober = Prober(url, sim, texts)
    watch = None
    try:
        # The offline adapter's answers (pinned, without the layer) do not depend on the stream: asked
        # before the shoppers start, scored against the drifted truth once it holds. Asked at the
        # drift's start instead, they would pause the shoppers (and their searches) for as long.
        offline_answers = prober.answers([*held.evaluation, *untouched], version=offline, online=False)
        shop(shoppers, args.warmup, args.rate)
        sim.set_drift(drift)
        drift_start = time.time()
        offline_scores = prober.score(offline_answers)
        base = {name: float(np.mean([offline_scores[q] for q in queries]))
                for name, queries in (("affected", held.evaluation), ("untouched", untouched))}
        watch = Watch(prober, held.evaluation, args.eval_every, base["affected"] + TARGET_GAIN, drift_start)
        watch.start()
        shop(shoppers, args.seconds, args.rate)
        watch.stop.set()
        watch.join(120)
        untouched_answers = {"served": prober.answers(untouched), "alone": prober.answers(untouched, online=False)}
        served = {"affected": prober.ndcg(held.evaluation),
                  "untouched": float(np.mean(list(prober.score(untouched_answers["served"]).values())))}
        adapter = {"affected": prober.ndcg(held.evaluation, online=False),
                   "untouched": float(np.mean(list(prober.score(untouched_answers["alone"]).values())))}
        delays = shoppers.traffic.effect_delays()
        windows, decisions = consolidation(cfg, shoppers.traffic, drift_start - args.warmup)
        t = shoppers.traffic
        print(f"streamed {t.sessions} sessions, {t.events} events ({t.flagged} flagged), {len(t.searches)} searches; "
              f"served nDCG@10 on the held-out affected queries over time: "
              + ", ".join(f"{s:.0f} s {v:.3f}" for s, v in watch.readings))
        for d in decisions:
            print("  " + audit.format_line(d))
        print("where the gain comes from (nDCG@10): " + "; ".join(
            f"{name}: offline {base[name]:.4f}, CURRENT {AdapterRegistry(cfg.registry).current('relevance')} alone "
            f"{adapter[name]:.4f}, with the online layer {served[name]:.4f}" for name in base))
        print(f"event-to-effect, slowest 1 % of batches (acknowledged at, seconds after the warm-up began at "
              f"{drift_start - args.warmup:.0f}): "
              f"{slowest_effects(t, drift_start - args.warmup)}")
        for line in moved_by_layer(prober, untouched_answers["served"], untouched_answers["alone"]):
            print(line)
        lines = [f"fast path: event-to-effect p50 {percentile(delays, 50):.1f} s, p99 {percentile(delays, 99):.1f} s",
                 f"consolidation: window-to-serving p50 {np.median(windows) if windows else float('nan'):.1f} s "
                 f"over {len(windows)} promoted updates"]
        for name, label in (("affected", "held-out affected queries"), ("untouched", "untouched queries")):
            lines.append(f"{label} nDCG@10: offline {base[name]:.4f}, served {served[name]:.4f} "
                         f"(served - offline = {served[name] - base[name]:+.4f})")
        reached = f"{watch.reached:.0f}" if watch.reached is not None else f"not within {args.seconds:.0f}"
        lines.append(f"time to offline+0.05 on held-out affected queries: {reached} s")
        if not args.skip_poisoning:
            for name, behaviour in ATTACKS:
                lines.append(attack(name, behaviour, args, cfg, shoppers, prober, sim, searchable))
        print(f"prober: {prober.first_stage} answers in first-stage order (the reranker past its budget) asked again")
        click_lines = audit.read(Path(cfg.click_state_dir) / "audit.jsonl")
        print(f"click layer: {Counter(r['decision'] for r in click_lines)} audit lines in {cfg.click_state_dir}")
        print()
        for line in lines:
            print(line)
    finally:
        if watch is not None:
            watch.stop.set()
        shoppers.close()
        prober.client.close()
        stop_stream()
    pd.DataFrame(watch.readings if watch else [], columns=["seconds", "ndcg"]).to_csv(work / "watch.csv", index=False)
    return 0


def main() -> int:
    from data_pipelines.drift import DRIFT_KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drift", choices=DRIFT_KINDS, default="brand_trend", help="configs/drift/<kind>.yaml")
    parser.add_argument("--drift-spec", help="a drift spec file instead (data_pipelines.drift.DriftSpec)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of shopping before the drift")
    parser.add_argument("--seconds", type=float, default=240.0, help="seconds of shopping after the drift starts")
    parser.add_argument("--rate", type=float, default=4.0, help="shopper sessions per second (~12 events each)")
    parser.add_argument("--eval-every", type=float, default=10.0, help="seconds between held-out readings")
    parser.add_argument("--attack-s", type=float, default=30.0, help="seconds of each flood")
    parser.add_argument("--stealthy-s", type=float, default=300.0, help="seconds of the stealthy farm")
    parser.add_argument("--settle-s", type=float, default=60.0, help="shopping after each attack before it is judged")
    parser.add_argument("--decide-wait-s", type=float, default=None,
                        help="then at most this long until every window holding the attack is decided "
                             "(default: policy.watch_s + 180)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--catalog-dir", default=workspace.path("catalog", workspace.default_root(ROOT)))
    parser.add_argument("--embeddings", default=workspace.path("embeddings", workspace.default_root(ROOT)))
    parser.add_argument("--registry", default=workspace.path("registry", workspace.default_root(ROOT)))
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--skip-poisoning", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="StreamConfig overrides, e.g. policy.min_examples=64")
    parser.add_argument("--smoke", action="store_true", help="check that every step runs, on the tiny model (numbers mean nothing)")
    args = parser.parse_args()
    if args.drift_spec and not Path(args.drift_spec).is_file():
        parser.error(f"--drift-spec: no file at {args.drift_spec}")
    if not args.smoke:
        for name in ("catalog_dir", "embeddings", "registry", "data_dir"):
            if not Path(getattr(args, name)).exists():
                parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} does not exist (run `make demo` first)")
        return run(args, WORK / (args.drift if not args.drift_spec else Path(args.drift_spec).stem))
    import _smoke
    from ops.runtime import free_port

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

        args.warmup, args.seconds, args.eval_every = 4.0, 20.0, 3.0
        args.attack_s, args.stealthy_s, args.settle_s, args.decide_wait_s = 3.0, 6.0, 4.0, 5.0
        args.port = free_port("127.0.0.1", 0)  # any free port: 8011 may be another run's
        args.catalog_dir, args.embeddings = str(world / "catalog"), str(world / "embeddings")
        args.registry, args.data_dir = str(world / "registry"), str(world / "prepared")
        args.set = [f"serve.backbone={_smoke.BACKBONE}", "serve.threads_per_replica=1", "serve.current_ttl_s=0.2",
                    "policy.min_examples=24", "policy.cooldown_s=0", "policy.poll_s=0.2", "update.epochs=1",
                    "update.batch_size=8", "update.replay_examples=40", "update.threads_per_worker=1",
                    "update.top_layers=1", "gate.original_queries=3", "gate.tolerance=1.0", "gate.min_mean_change=null",
                    "policy.surge_factor=6", "policy.watch_s=1", *args.set]  # floods (10x) still held; a stalled machine's catch-up burst not
        ensure_ray(include_dashboard=False)  # as the other benchmarks' Ray: its dozen processes cost a smoke run ~1 GB
        return run(args, Path(tmp) / "work", embed)


if __name__ == "__main__":
    sys.exit(main())
