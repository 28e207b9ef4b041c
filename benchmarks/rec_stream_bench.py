"""The recommend task learning from the stream: shoppers with lasting tastes, gated updates, before/after.

One run, in process (no Ray, no HTTP: the learning, not the serving, is measured here), on what
`make demo` leaves: the CURRENT recommend adapter (trained on the retail log), its prepared data,
and the generated catalog, whose products become recommendable beside the retail items
(`data_pipelines.interactions.serving_items`, as the Recommender deployment serves them).
1. Probe shoppers (`--probe-users`, tastes of their own, never streamed) each get a short history
   of products that suit them; their recommendations' NDCG@10 against their tastes
   (`data_pipelines.tastes`) is read before and after the stream, by whichever version is CURRENT.
2. `--sessions` multi-step sessions of `--users` streaming shoppers: each step asks the ranker of
   CURRENT for 10 products from the shopper's trail so far, and the shopper's clicks and purchases
   go through the stream's own code: `core.rec_stream` turns them into next-item examples, and
   when the window is due `train.rec_update` trains a candidate from CURRENT, gates it (held-out
   shoppers and offline retail users) and promotes it or not; a promoted version ranks the next
   sessions.
The ranker is the gate's: item text vectors from the cached lower layers (bfloat16), the rest as
the Recommender computes it. The registry is a scratch copy: the project's CURRENT never moves.
Prints, exactly:

    recommend stream: <n> sessions, <e> events, <x> next-item examples (<h> held out); <u> updates, <p> promoted; update p50 <s> s
    recommend stream probe shoppers taste NDCG@10: before <x>, after <y> (after - before = <+d>)
    recommend stream offline validation NDCG@10: before <x>, after <y>

    .venv/bin/python benchmarks/rec_stream_bench.py [--sessions 400] [--users 300] [--smoke]

`--smoke`: a tiny random recommend model (untrained) on 6,000 rows of the retail log and a
120-product catalog, every step in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import workspace  # noqa: E402
from core.registry import ADAPTER_DIR  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK = "recommend"


def smoke_world(root: Path) -> None:
    """prepared/recommend (6,000 retail rows, in process), catalog/ (120 products) and a registry with an
    untrained tiny recommend adapter as CURRENT."""
    import pandas as pd

    from core import modeling as Mo
    from core import rec_model as R
    from core.interactions import CleanRules, LogColumns, clean_log, item_texts_from_log, leave_last_out
    from core.registry import AdapterRegistry
    from data_pipelines.catalog import generate_catalog, write_catalog

    log = pd.read_parquet(ROOT / "data/retail/online_retail.parquet").head(6000)
    cols = LogColumns(user="CustomerID", item="StockCode", timestamp="InvoiceDate", basket="InvoiceNo",
                      quantity="Quantity", item_text=("Description",))
    items = item_texts_from_log(log, cols)
    events, _ = clean_log(log, cols, CleanRules(cancel_prefix="C"), items)
    split = leave_last_out(events)
    base = root / "prepared" / TASK
    for name, frame in (("train", split.train), ("val", split.val), ("test", split.test)):
        (base / name).mkdir(parents=True)
        frame.to_parquet(base / name / "part-0.parquet")
    items.to_parquet(base / "items.parquet")
    events.to_parquet(base / "events.parquet")
    write_catalog(generate_catalog(seed=0, n_products=120, n_queries=20, candidates_per_query=10), root / "catalog")
    meta = R.RecMeta(backbone=Mo.TINY_BACKBONE, max_length=16, dim=32, history=20, top_layers=1,
                     lora=Mo.LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("query", "value")))
    model = R.build(meta, items["item_id"].tolist())
    registry = AdapterRegistry(root / "registry")
    info = registry.create_version(TASK, lambda d: R.save(model, d / ADAPTER_DIR),
                                   config={"model": {"backbone": Mo.TINY_BACKBONE}}, metrics={}, lineage={"trigger": "smoke"})
    registry.promote(TASK, info.version, reason="smoke world")


def run(args) -> int:
    import numpy as np

    from core.config import load_config
    from core.rec_stream import RecWindow, Trails
    from core.registry import AdapterRegistry
    from core.stream_config import StreamConfig
    from data_pipelines.catalog import read_catalog
    from data_pipelines.interactions import read_prepared, serving_items
    from data_pipelines.tastes import DEFAULT_START_TS, TasteShoppers
    from train.rec_update import WarmRecTrainer

    # Sessions run back to back here, faster than a shop's: no cooldown between updates (in wall time).
    stream = load_config(StreamConfig, None, ["recommend.cooldown_s=0", *args.set])
    cfg = stream.recommend
    with tempfile.TemporaryDirectory(prefix="aisle-rec-stream-") as tmp:
        registry_dir = Path(tmp) / "registry"
        shutil.copytree(Path(args.registry) / TASK, registry_dir / TASK)  # the recommend versions and CURRENT
        registry = AdapterRegistry(registry_dir)
        start_version = registry.current(TASK)
        if start_version is None:
            sys.exit(f"no CURRENT recommend version in {args.registry} (run `make demo` or `aisle train recommend`)")
        t0 = time.perf_counter()
        items = serving_items(args.data_dir, args.catalog_dir)
        trainer = WarmRecTrainer(registry.get(TASK).config["model"]["backbone"], items, cfg, read_prepared(args.data_dir),
                                 seed=args.seed)

        def ranker(version: str):
            model = trainer.load(registry.local_dir(TASK, version) / ADAPTER_DIR)
            return trainer.scorer(model, trainer.table(model, version))

        scorer = ranker(start_version)
        print(f"{len(items)} items ({len(trainer.texts)} ranked), CURRENT {TASK}@{start_version}; "
              f"warm trainer ready in {time.perf_counter() - t0:.0f} s", flush=True)
        products = read_catalog(Path(args.catalog_dir)).products
        shoppers = TasteShoppers(products, n_users=args.users, seed=args.seed)
        probes = TasteShoppers(products, n_users=args.probe_users, seed=args.seed + 1, first_user=args.users)
        rng = np.random.default_rng(args.seed)
        probe_hist = {}
        for user in probes.users:
            pool = [p for p in probes._by_category[probes.users[user].category] if probes.grade(user, p) == 2]
            pool = pool or [probes.landing(user)]
            probe_hist[user] = [pool[int(i)] for i in rng.choice(len(pool), min(3, len(pool)), replace=False)]

        def top(sc, history: list[str], k: int) -> list[str]:
            positions = trainer.catalog.encode(history)
            if not positions:
                return []
            scores = sc([positions])[0]
            best = np.argpartition(-scores, k - 1)[:k]
            return [trainer.catalog.ids[i] for i in best[np.argsort(-scores[best], kind="stable")]]

        def probe_ndcg(sc) -> float:
            return float(np.mean([probes.ndcg(u, top(sc, h, 10)) for u, h in probe_hist.items()]))

        before, offline_before = probe_ndcg(scorer), trainer.offline_ndcg(scorer, start_version)
        print(f"before: probe shoppers taste NDCG@10 {before:.4f}, offline validation NDCG@10 {offline_before:.4f}",
              flush=True)
        trails, window = Trails(50), RecWindow(stream.salt, cfg.holdout_share, cfg.train_buffer, cfg.fresh_buffer)
        counts = {"events": 0, "examples": 0, "fresh": 0}
        offset, updates, last_end = 0, [], None
        current = start_version

        def feed(events: list[dict]) -> None:
            nonlocal offset
            records = []
            for e in events:
                records.append({"user": e["user_id"], "type": e["type"], "product_id": e["product_id"],
                                "position": e.get("position"), "query": None, "flags": [], "offset": offset})
                offset += 1
            examples, skipped = trails.add(records, known=trainer.catalog.index)
            before_fresh = window.new_fresh
            window.add(examples, skipped, offset, time.time())
            counts["events"] += len(events)
            counts["examples"] += len(examples)
            counts["fresh"] += window.new_fresh - before_fresh

        ts = DEFAULT_START_TS
        for i in range(args.sessions):
            user = shoppers.pick_user()
            shoppers.run_session(user, lambda u, k: top(scorer, trails.recent(u), k), ts, post=feed)
            ts += 30.0
            reason = window.due(time.time(), cfg.min_examples, cfg.max_wait_s, cfg.min_examples_on_timeout,
                                last_end, cfg.cooldown_s)
            if reason:
                result = trainer.update(registry, window.train, window.judged(cfg.judge_unlisted_only),
                                        lineage={"bench": "rec_stream"})
                updates.append(result)
                g = result.gate
                fresh = (f"fresh AUC {g.fresh_current:.4f} -> {g.fresh_candidate:.4f}" if g.fresh_current is not None
                         else "fresh -")
                print(f"  session {i + 1}: update {len(updates)} ({reason}): {result.candidate} "
                      f"{'PROMOTED' if result.promoted else 'rejected'}; {fresh}, offline {g.offline_current:.4f} -> "
                      f"{g.offline_candidate:.4f}; {result.seconds['total']:.1f} s", flush=True)
                if result.promoted:
                    current = result.candidate
                    scorer = ranker(current)
                window.decided()
                last_end = time.time()
        after, offline_after = probe_ndcg(scorer), trainer.offline_ndcg(scorer, current)
        promoted = sum(u.promoted for u in updates)
        p50 = statistics.median([u.seconds["total"] for u in updates]) if updates else float("nan")
        print(f"recommend stream: {args.sessions} sessions, {counts['events']} events, {counts['examples']} next-item "
              f"examples ({counts['fresh']} held out); {len(updates)} updates, {promoted} promoted; update p50 {p50:.1f} s")
        print(f"recommend stream probe shoppers taste NDCG@10: before {before:.4f}, after {after:.4f} "
              f"(after - before = {after - before:+.4f})")
        print(f"recommend stream offline validation NDCG@10: before {offline_before:.4f}, after {offline_after:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=workspace.path("registry", workspace.default_root(ROOT)))
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--catalog-dir", default=workspace.path("catalog", workspace.default_root(ROOT)))
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--users", type=int, default=300, help="streaming shoppers")
    parser.add_argument("--probe-users", type=int, default=200, help="shoppers never streamed, whose recommendations are scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="StreamConfig overrides, e.g. recommend.min_examples=128")
    parser.add_argument("--smoke", action="store_true", help="every step on a tiny untrained model (numbers mean nothing)")
    args = parser.parse_args(argv)
    if not args.smoke:
        for name in ("registry", "data_dir", "catalog_dir"):
            if not Path(getattr(args, name)).exists():
                parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} does not exist (run `make demo` first)")
        return run(args)
    from _smoke import banner

    banner()
    with tempfile.TemporaryDirectory(prefix="aisle-rec-stream-smoke-") as tmp:
        smoke_world(Path(tmp))
        args.registry, args.data_dir, args.catalog_dir = (str(Path(tmp) / n) for n in ("registry", "prepared", "catalog"))
        args.sessions, args.users, args.probe_users = 60, 20, 10
        args.set = ["recommend.min_examples=16", "recommend.min_holdout=2", "recommend.cooldown_s=0",
                    "recommend.offline_users=50", "recommend.replay_examples=32", "recommend.tolerance=1.0", *args.set]
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
