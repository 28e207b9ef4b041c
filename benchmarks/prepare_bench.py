"""Ray Data prepare vs a single-process pandas version of the same work, in the same run.
Target: ray/pandas rows/s >= 1.3 on 2 cores.

Both sides read the same Parquet file and run the same functions from `data_pipelines.prepare` and
`core.tasks` (clean + validate -> split by group hash -> dedupe with conflicting-label detection ->
write train/val/test/rejected Parquet and count rows for the report). The input is the bundled reviews file repeated `--copies`
times with each copy's product ids and texts made distinct (so dedupe and splitting do real work);
making it is not timed. Ray is started before timing (its start-up is printed separately).

    python benchmarks/prepare_bench.py [--copies 20] [--rounds 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_input(path: Path, copies: int) -> int:
    import pandas as pd

    base = pd.read_parquet(ROOT / "data/reviews/womens_clothing_reviews.parquet")
    parts = []
    for k in range(copies):
        part = base.copy()
        part["Clothing ID"] = part["Clothing ID"] + 10_000 * k
        part["Review Text"] = part["Review Text"] + f" (batch {k})"
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(path, row_group_size=20_000)
    return len(frame)


def pandas_prepare(source: Path, out: Path, cfg) -> int:
    """The same work, single process: the functions the Ray job maps, applied to one DataFrame."""
    import pandas as pd

    from core.tasks import TASKS
    from data_pipelines.prepare import SPLITS, DuplicateDecision, examples_batch, write_split_files

    rows = examples_batch(pd.read_parquet(source), TASKS["sentiment"].make_examples, cfg.split)
    usable = rows[rows["drop_reason"].isna()]
    decision = DuplicateDecision.from_keys(usable[["_key", "_fp", "_row", "label"]])
    for split in (*SPLITS, "rejected"):
        (out / split).mkdir(parents=True)
    counts = write_split_files(decision.apply(rows), str(out))
    return int(counts["rows"].sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="prepare config overrides, e.g. rows_per_block=50000")
    args = parser.parse_args()

    from aisle.runtime import ensure_ray
    from core.config import load_config
    from core.job_configs import PrepareConfig
    from data_pipelines import prepare

    start = time.perf_counter()
    ensure_ray(include_dashboard=False)
    ray_start = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_input(tmp / "reviews.parquet", args.copies)
        cfg = load_config(PrepareConfig, ROOT / "configs/prepare.yaml",
                          ["tasks=[sentiment]", f"sources.sentiment={tmp / 'reviews.parquet'}",
                           f"output_dir={tmp / 'ray_out'}", *args.overrides])
        timings = {"pandas": [], "ray": []}
        kept = {}
        for r in range(args.rounds):
            shutil.rmtree(tmp / "pandas_out", ignore_errors=True)
            t0 = time.perf_counter()
            pandas_prepare(tmp / "reviews.parquet", tmp / "pandas_out", cfg)
            timings["pandas"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = prepare.prepare_one("sentiment", cfg)
            timings["ray"].append(time.perf_counter() - t0)
            kept = report.kept
            print(f"round {r + 1}: pandas {timings['pandas'][-1]:.1f} s, ray {timings['ray'][-1]:.1f} s", flush=True)
        import pandas as pd

        same = all(len(pd.read_parquet(tmp / "pandas_out" / s)) == kept[s] for s in kept)

    pandas_s, ray_s = min(timings["pandas"]), min(timings["ray"])
    print()
    print(f"{n} review rows ({args.copies} distinct copies of the bundled file), {os.cpu_count()} CPUs, "
          f"best of {args.rounds}; Ray start-up {ray_start:.1f} s (not timed)")
    print(f"{'path':<28} {'seconds':>8} {'rows/s':>10}")
    print(f"{'pandas, single process':<28} {pandas_s:>8.1f} {n / pandas_s:>10.0f}")
    print(f"{'Ray Data prepare':<28} {ray_s:>8.1f} {n / ray_s:>10.0f}")
    print(f"same rows kept per split on both paths: {same}")
    print(f"ratio ray/pandas (rows/s): {pandas_s / ray_s:.2f}   (target >= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
