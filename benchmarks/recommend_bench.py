"""Recommendation on a real purchase log: the trained recommend adapter against its baselines, and served.

Runs the real jobs in order on the retail log (data/retail, UCI Online Retail): `aisle prepare
tasks=[recommend]` (Ray Data), `aisle train recommend` (Ray Train), `aisle evaluate recommend`
(full-catalog ranking of each user's last purchase from their history, beside popularity, repeat
purchase, item-knn and the zero-shot backbone), then serves the adapter (`aisle serve`, embedded)
and measures /v1/recommend for one user at a time at half the measured throughput, and how long a
new product takes from `POST /v1/products` to its first appearance in an answer.

Prints, exactly (checked by script):
  recommend test users <n>: NDCG@10 model <x>, popularity <x>, repeat <x>, item-knn <x>, zero-shot <x>
  recommend new-to-user NDCG@10: model <x>, best baseline <x> (<name>)
  recommend cold-start items HR@10: model <x>, item-knn <x>
  recommend serving: p99 <ms> ms at half load, 1-user requests; catalog upsert to first answer <s> s
Targets: model >= 1.1 x the best baseline on all and on new-to-user targets; cold-start HR@10 above
zero; p99 <= 100 ms; upsert <= 2 s.

    python benchmarks/recommend_bench.py [--log data/retail/online_retail.parquet] [--epochs 2] [--seconds 20]
    python benchmarks/recommend_bench.py --smoke      (tiny random model, 6,000 log rows: every step, numbers mean nothing)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def prepare(work: Path, log: str, max_rows: int | None) -> None:
    from core.config import load_config
    from core.job_configs import PrepareConfig
    from data_pipelines import prepare as job

    overrides = ["tasks=[recommend]", f"output_dir={work / 'prepared'}", f"sources.recommend.log={log}"]
    if max_rows:
        overrides.append(f"max_rows={max_rows}")
    job.run(load_config(PrepareConfig, str(ROOT / "configs/prepare.yaml"), overrides))


def train(work: Path, smoke: bool, epochs: int) -> str:
    from core.config import load_config
    from core.job_configs import RecommendTrainConfig
    from train import recommend

    overrides = [f"data_dir={work / 'prepared'}", f"registry={work / 'registry'}", f"storage_path={work / 'runs'}",
                 f"train.epochs={epochs}"]
    if smoke:
        overrides += ["model.backbone=tiny-random-bert", "model.dim=32", "train.batch_size=64", "train.refresh_every=5"]
    return recommend.run(load_config(RecommendTrainConfig, str(ROOT / "configs/recommend.yaml"), overrides)).version


def evaluate(work: Path) -> dict:
    from core.config import load_config
    from core.job_configs import RecommendEvalConfig
    from train import recommend_eval

    cfg = load_config(RecommendEvalConfig, str(ROOT / "configs/evaluate_recommend.yaml"),
                      [f"data_dir={work / 'prepared'}", f"registry={work / 'registry'}"])
    return recommend_eval.run(cfg).results


def print_quality(results: dict) -> None:
    names = ("popularity", "repeat", "item-knn", "zero-shot")
    n = results["model"]["all"]["n"]
    print(f"recommend test users {n}: NDCG@10 model {results['model']['all']['ndcg@10']:.4f}, "
          + ", ".join(f"{b} {results[b]['all']['ndcg@10']:.4f}" for b in names))
    best = max(names, key=lambda b: results[b]["new"]["ndcg@10"])
    print(f"recommend new-to-user NDCG@10: model {results['model']['new']['ndcg@10']:.4f}, "
          f"best baseline {results[best]['new']['ndcg@10']:.4f} ({best})")
    print(f"recommend cold-start items HR@10: model {results['model']['cold']['hr@10']:.4f}, "
          f"item-knn {results['item-knn']['cold']['hr@10']:.4f}")


def serving(work: Path, seconds: float, smoke: bool) -> tuple[float, float]:
    """(p99 ms of 1-user /v1/recommend at half the measured closed-loop rate, seconds from
    POST /v1/products to the new product's first appearance in a /v1/recommend answer)."""
    from benchmarks._recommend_serving import measure

    return measure(work, seconds, smoke)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=str(ROOT / "data/retail/online_retail.parquet"))
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: configs/recommend.yaml)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load seconds of the serving measurement")
    parser.add_argument("--work-dir", default=None, help="keep the prepared data, registry and runs here")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the prepared data and the CURRENT version already in --work-dir (skip prepare and train)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.reuse and not (args.work_dir and (Path(args.work_dir) / "registry" / "recommend" / "CURRENT").is_file()):
        parser.error("--reuse needs a --work-dir holding prepared/ and registry/ with a CURRENT recommend version")
    if args.smoke:
        from benchmarks._smoke import banner

        banner()
    from ops.runtime import ensure_ray
    from core.config import load_config
    from core.job_configs import RecommendTrainConfig

    epochs = args.epochs or (1 if args.smoke else load_config(RecommendTrainConfig, str(ROOT / "configs/recommend.yaml")).train.epochs)
    with tempfile.TemporaryDirectory(prefix="aisle-recommend-bench-") as tmp:
        work = Path(args.work_dir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        ensure_ray(include_dashboard=False if args.smoke else None)  # as the other smoke runs: no dashboard
        t0 = time.perf_counter()
        if args.reuse:
            from core.registry import AdapterRegistry

            version = AdapterRegistry(work / "registry").current("recommend")
            t1 = time.perf_counter()
            print(f"reusing {work}: prepared data and recommend@{version}")
        else:
            prepare(work, args.log, 6000 if args.smoke else None)
            t1 = time.perf_counter()
            version = train(work, args.smoke, epochs)
        t2 = time.perf_counter()
        results = evaluate(work)
        t3 = time.perf_counter()
        print(f"timings: prepare {t1 - t0:.0f} s, train {version} {t2 - t1:.0f} s ({epochs} epochs), evaluate {t3 - t2:.0f} s")
        print_quality(results)
        p99, upsert = serving(work, 3.0 if args.smoke else args.seconds, args.smoke)
        print(f"recommend serving: p99 {p99:.1f} ms at half load, 1-user requests; catalog upsert to first answer {upsert:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
