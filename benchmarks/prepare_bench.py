"""Ray Data prepare vs the same work in one pandas process and in a 2-process multiprocessing pool,
in the same run. Targets: ray/pandas rows/s >= 1.3 on 2 cores; ray/pool rows/s >= 0.9 (Ray's own cost
against plain 2-process parallelism of the same blocks: ray/pandas alone mostly measures 2 cores vs 1).

All three read the same Parquet file and run the same functions from `data_pipelines.prepare` and
`core.tasks` (clean + validate -> split by group hash -> dedupe with conflicting-label detection ->
write train/val/test/rejected Parquet and count rows for the report). pandas applies them to the
whole file at once; the pool maps `examples_batch` and then `_finalize` (the functions the Ray job
maps) over the same blocks as Ray's (`rows_per_block`, cut as `read_source` cuts them; checked
before timing), with the dedupe decision made in between from the blocks' key columns, as the Ray
job makes it. The input is the bundled reviews file repeated `--copies` times with each copy's
product ids and texts made distinct (so dedupe and splitting do real work); making it is not timed.
Ray and the pool's processes are started before timing (Ray's start-up is printed separately).

    python benchmarks/prepare_bench.py [--copies 20] [--rounds 2] [--pool 2] [--smoke] [key=value ...]

`--smoke`: a seconds-long run of every step (1 copy, 1 round, 4 blocks) to check the script works;
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMOKE_BANNER = "SMOKE RUN (--smoke): tiny data, a few seconds of work; every step runs, the numbers mean nothing"


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


# ---- the multiprocessing pool: Ray's blocks, Ray's per-block functions ------------------------------

def block_bounds(num_rows: int, rows_per_block: int) -> list[tuple[int, int]]:
    """(offset, length) of each block, cut as `data_pipelines.sources.read_source` cuts a local file."""
    n_blocks = max(1, -(-num_rows // rows_per_block))
    size = max(1, -(-num_rows // n_blocks))
    return [(i, min(size, num_rows - i)) for i in range(0, max(num_rows, 1), size)]


def _pool_warm() -> None:
    """Pool initializer: import what the blocks need, as a Ray worker has after the first round."""
    import data_pipelines.prepare  # noqa: F401


def _pool_examples(block, split):
    """One block -> its example rows: `examples_batch` on the block as pandas, as Ray's map_batches calls it."""
    from core.tasks import TASKS
    from data_pipelines.prepare import examples_batch

    return examples_batch(block.to_pandas(), TASKS["sentiment"].make_examples, split)


def _pool_finalize(rows, decision, directory):
    from data_pipelines.prepare import _finalize

    return _finalize(rows, decision, directory)


def pool_prepare(pool, source: Path, out: Path, cfg):
    """prepare_one's steps over a process pool: read, examples per block, dedupe decision from the
    key columns, mark and write per block, count for the report. Returns the report."""
    import pandas as pd

    from data_pipelines import prepare
    from data_pipelines.sources import _read_table, source_format
    from core.tasks import TASKS

    table = _read_table(source, source_format(source), TASKS["sentiment"].required_columns)
    if cfg.max_rows:
        table = table.slice(0, cfg.max_rows)
    blocks = [table.slice(i, n) for i, n in block_bounds(table.num_rows, cfg.rows_per_block)]
    rows = pool.starmap(_pool_examples, [(b, cfg.split) for b in blocks], chunksize=1)
    keys = pd.concat([r[["_key", "_fp", "_row", "label", "drop_reason"]] for r in rows], ignore_index=True)
    decision = prepare.DuplicateDecision.from_keys(keys.loc[keys["drop_reason"].isna()].drop(columns=["drop_reason"]))
    for split in (*prepare.SPLITS, "rejected"):
        (out / split).mkdir(parents=True)
    counts = pool.starmap(_pool_finalize, [(r, decision, str(out)) for r in rows], chunksize=1)
    return prepare._report("sentiment", str(source), pd.concat(counts, ignore_index=True))


def ray_block_rows(source: Path, cfg) -> list[int]:
    """Rows of each batch the Ray job's examples_batch gets (one per block), sorted; not timed."""
    from core.tasks import TASKS
    from data_pipelines.sources import read_source

    ds = read_source(source, TASKS["sentiment"].required_columns, cfg.max_rows, cfg.rows_per_block)
    counts = ds.map_batches(lambda b: {"n": [len(b)]}, batch_format="pandas", batch_size=None,
                            num_cpus=cfg.num_cpus_per_task).to_pandas()
    return sorted(int(n) for n in counts["n"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", type=int, default=2, help="processes in the multiprocessing pool")
    parser.add_argument("--smoke", action="store_true", help="seconds-long check that every step runs (numbers mean nothing)")
    parser.add_argument("overrides", nargs="*", help="prepare config overrides, e.g. rows_per_block=50000")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.smoke:
        print(SMOKE_BANNER, flush=True)
        args.copies, args.rounds = 1, 1
        if not any(o.startswith("rows_per_block=") for o in overrides):
            overrides.append("rows_per_block=6000")  # 4 blocks of one copy's rows, as 20 copies make of 100,000

    from ops.runtime import ensure_ray
    from core.config import load_config
    from core.job_configs import PrepareConfig
    from data_pipelines import prepare

    start = time.perf_counter()
    ensure_ray(include_dashboard=False)
    ray_start = time.perf_counter() - start
    # spawn, not fork: this process runs Ray's threads. Started (and warm) before timing, as Ray is.
    with tempfile.TemporaryDirectory() as tmp, \
            multiprocessing.get_context("spawn").Pool(args.pool, initializer=_pool_warm) as pool:
        tmp = Path(tmp)
        n = make_input(tmp / "reviews.parquet", args.copies)
        cfg = load_config(PrepareConfig, ROOT / "configs/prepare.yaml",
                          ["tasks=[sentiment]", f"sources.sentiment={tmp / 'reviews.parquet'}",
                           f"output_dir={tmp / 'ray_out'}", *overrides])
        bounds = block_bounds(n if not cfg.max_rows else min(n, cfg.max_rows), cfg.rows_per_block)
        ray_blocks = ray_block_rows(tmp / "reviews.parquet", cfg)
        if sorted(length for _, length in bounds) != ray_blocks:
            sys.exit(f"error: the pool's blocks {[b for _, b in bounds]} are not Ray's {ray_blocks}")
        timings = {"pandas": [], "pool": [], "ray": []}
        kept, pool_kept = {}, {}
        for r in range(args.rounds):
            shutil.rmtree(tmp / "pandas_out", ignore_errors=True)
            t0 = time.perf_counter()
            pandas_prepare(tmp / "reviews.parquet", tmp / "pandas_out", cfg)
            timings["pandas"].append(time.perf_counter() - t0)
            shutil.rmtree(tmp / "pool_out", ignore_errors=True)
            t0 = time.perf_counter()
            pool_kept = pool_prepare(pool, tmp / "reviews.parquet", tmp / "pool_out", cfg).kept
            timings["pool"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = prepare.prepare_one("sentiment", cfg)
            timings["ray"].append(time.perf_counter() - t0)
            kept = report.kept
            print(f"round {r + 1}: pandas {timings['pandas'][-1]:.1f} s, pool {timings['pool'][-1]:.1f} s, "
                  f"ray {timings['ray'][-1]:.1f} s", flush=True)
        import pandas as pd

        same = all(len(pd.read_parquet(tmp / out / s)) == kept[s] for s in kept for out in ("pandas_out", "pool_out"))
        same = same and pool_kept == kept

    pandas_s, pool_s, ray_s = min(timings["pandas"]), min(timings["pool"]), min(timings["ray"])
    print()
    print(f"{n} review rows ({args.copies} distinct copies of the bundled file), {os.cpu_count()} CPUs, "
          f"best of {args.rounds}; Ray start-up {ray_start:.1f} s (not timed)")
    print(f"{len(bounds)} blocks of {', '.join(str(b) for _, b in bounds)} rows (rows_per_block={cfg.rows_per_block}), "
          f"the same for the pool and Ray")
    print(f"{'path':<28} {'seconds':>8} {'rows/s':>10}")
    print(f"{'pandas, single process':<28} {pandas_s:>8.1f} {n / pandas_s:>10.0f}")
    print(f"{f'multiprocessing pool of {args.pool}':<28} {pool_s:>8.1f} {n / pool_s:>10.0f}")
    print(f"{'Ray Data prepare':<28} {ray_s:>8.1f} {n / ray_s:>10.0f}")
    print(f"same rows kept per split on all three paths: {same}")
    print(f"ratio ray/pandas (rows/s): {pandas_s / ray_s:.2f}   (target >= 1.3)")
    print(f"ratio ray/pool (rows/s): {pool_s / ray_s:.2f}   (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
