"""Prepare training data with Ray Data: read -> clean -> dedupe -> pseudonymise -> split -> Parquet.

For each task in the config: check the source file, read it in parallel, turn rows into the task's
examples (`core.tasks`), drop unusable rows with a reason, drop duplicates (and texts whose copies
disagree on the label), assign train/val/test by a hash of the task's group (product for reviews,
query for relevance, user for events) so no group straddles two splits, and write
`<output_dir>/<task>/{train,val,test}/` Parquet plus the dropped rows under `rejected/` and a
`report.json`. Nothing is dropped silently: every dropped row is counted by reason, printed, and kept.

Refuses (one error line, exit 2, nothing written): a missing, empty or non-UTF-8 file, a missing
column, an unknown config key. Output for a task appears atomically (written aside, then renamed).

    python -m data_pipelines.prepare --config configs/prepare.yaml [key=value ...]
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from aisle.runtime import ensure_ray, job_main
from core.config import to_dict
from core.job_configs import PrepareConfig, SplitConfig
from core.tasks import TASKS
from core.text import bucket
from data_pipelines import events as event_rows
from data_pipelines.outputs import swap_into_place
from data_pipelines.sources import check_source, read_source

SPLITS = ("train", "val", "test")
_INTERNAL = ["dedupe_key", "drop_reason", "split"]


@dataclass
class SourceReport:
    name: str
    source: str
    rows_read: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


# ---- per-batch work (runs in Ray Data tasks; pure pandas) -------------------------------------

def assign_split(groups: pd.Series, cfg: SplitConfig) -> pd.Series:
    """test / val / train by a hash of the group: a whole product (or query, or user) lands on one side."""
    b = groups.map(lambda g: bucket(g, cfg.seed)).astype("int64") / 10_000.0
    out = pd.Series("train", index=groups.index, dtype="object")
    out[b < cfg.test_fraction + cfg.val_fraction] = "val"
    out[b < cfg.test_fraction] = "test"
    return out


def examples_batch(batch: pd.DataFrame, make: Callable[[pd.DataFrame], pd.DataFrame], split: SplitConfig) -> pd.DataFrame:
    out = make(batch)
    out["split"] = assign_split(out["split_group"].astype(str), split)
    return out


def resolve_duplicates(block: pd.DataFrame) -> pd.DataFrame:
    """Rows sharing a dedupe key (all in this block, after the hash shuffle): keep one; if their
    labels disagree, keep none - we cannot know which copy is right."""
    block = block.reset_index(drop=True)
    usable = block[block["drop_reason"].isna()]
    if usable.empty:
        return block
    n_labels = usable.groupby("dedupe_key")["label"].transform("nunique")
    block.loc[usable.index[n_labels > 1], "drop_reason"] = "conflicting_label"
    rest = usable[n_labels <= 1]
    # A deterministic survivor, whatever order the shuffle delivered the copies in.
    fingerprint = pd.util.hash_pandas_object(rest.astype(str), index=False).to_numpy()
    ordered = rest.assign(_fp=fingerprint).sort_values(["dedupe_key", "_fp"], kind="stable")
    block.loc[ordered.index[ordered.duplicated("dedupe_key", keep="first")], "drop_reason"] = "duplicate"
    return block


def join_catalog(judgements: pd.DataFrame, queries: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Judgement rows + query text + product fields; unknown ids leave empty fields (dropped, counted)."""
    q = queries.set_index("query_id")["text"].rename("query")
    p = products.set_index("product_id")[["title", "description", "attributes"]]
    out = judgements.join(q, on="query_id").join(p, on="product_id")
    return out


# ---- the job -----------------------------------------------------------------------------------

def _ensure_catalog(cfg: PrepareConfig) -> Path:
    from data_pipelines.catalog import generate_catalog, write_catalog

    directory = Path(cfg.sources.catalog_dir)
    if not (directory / "judgements.parquet").is_file():
        c = cfg.sources.catalog
        print(f"generating catalog (seed {c.seed}, {c.n_products} products, {c.n_queries} queries) -> {directory}")
        write_catalog(generate_catalog(seed=c.seed, n_products=c.n_products, n_queries=c.n_queries,
                                       candidates_per_query=c.candidates_per_query), directory)
    return directory


def _dataset_for(name: str, cfg: PrepareConfig):
    """(Ray Dataset of raw rows, example builder, source description) for a task or 'events'."""
    import ray.data

    if name == "events":
        path = Path(cfg.sources.events)
        cols = check_source(path, event_rows.REQUIRED_COLUMNS, what="events")
        return read_source(path, cols, cfg.max_rows), partial(event_rows.make_examples, salt=cfg.salt), str(path)
    task = TASKS[name]
    if task.source == "catalog":
        directory = _ensure_catalog(cfg)
        paths = {k: directory / f"{k}.parquet" for k in ("judgements", "queries", "products")}
        check_source(paths["judgements"], task.required_columns, what="judgements")
        check_source(paths["queries"], ("query_id", "text"), what="queries")
        check_source(paths["products"], ("product_id", "title", "description", "attributes"), what="products")
        queries, products = pd.read_parquet(paths["queries"]), pd.read_parquet(paths["products"])
        ds = ray.data.read_parquet(str(paths["judgements"]))
        if cfg.max_rows:
            ds = ds.limit(cfg.max_rows)
        ds = ds.map_batches(join_catalog, batch_format="pandas", fn_kwargs={"queries": queries, "products": products},
                            num_cpus=cfg.num_cpus_per_task)
        return ds, task.make_examples, str(directory)
    path = Path(getattr(cfg.sources, name))
    cols = check_source(path, task.required_columns, what=name)
    return read_source(path, cols, cfg.max_rows), task.make_examples, str(path)


def prepare_one(name: str, cfg: PrepareConfig) -> SourceReport:
    start = time.perf_counter()
    raw, make, source = _dataset_for(name, cfg)
    rows = raw.map_batches(examples_batch, batch_format="pandas", fn_kwargs={"make": make, "split": cfg.split},
                           num_cpus=cfg.num_cpus_per_task)
    # Hash-shuffle by dedupe key so every copy of a row meets in one block, then dedupe block-wise.
    rows = rows.repartition(cfg.shuffle_blocks, keys=["dedupe_key"])
    rows = rows.map_batches(resolve_duplicates, batch_format="pandas", batch_size=None,
                            num_cpus=cfg.num_cpus_per_task).materialize()
    summary = rows.select_columns(["split", "label", "drop_reason"]).to_pandas()
    report = SourceReport(name=name, source=source, rows_read=len(summary))
    dropped = summary["drop_reason"].notna()
    report.dropped = {str(k): int(v) for k, v in summary.loc[dropped, "drop_reason"].value_counts().items()}
    kept = summary.loc[~dropped]
    report.kept = {s: int((kept["split"] == s).sum()) for s in SPLITS}
    report.labels = {s: {str(k): int(v) for k, v in kept.loc[kept["split"] == s, "label"].value_counts().sort_index().items()}
                     for s in SPLITS}

    out_dir = Path(cfg.output_dir)
    final = out_dir / name
    staging = out_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for split in SPLITS:
            _write(rows, staging / split, keep=True, split=split)
        _write(rows, staging / "rejected", keep=False)
        report.seconds = time.perf_counter() - start
        (staging / "report.json").write_text(json.dumps({**report.__dict__, "config": to_dict(cfg)}, indent=2, default=str))
        swap_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _write(rows, directory: Path, keep: bool, split: str | None = None) -> None:
    def select(batch: pd.DataFrame) -> pd.DataFrame:
        mask = batch["drop_reason"].isna() if keep else batch["drop_reason"].notna()
        if split is not None:
            mask &= batch["split"] == split
        out = batch.loc[mask]
        return out.drop(columns=_INTERNAL if keep else ["dedupe_key"])

    directory.mkdir(parents=True, exist_ok=True)  # an empty split is still a (empty) directory
    rows.map_batches(select, batch_format="pandas").write_parquet(str(directory))


def format_report(reports: list[SourceReport]) -> str:
    lines = [f"{'source':<10} {'read':>7} {'train':>7} {'val':>6} {'test':>6} {'dropped':>8}  reasons"]
    for r in reports:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(r.dropped.items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"{r.name:<10} {r.rows_read:>7} {r.kept['train']:>7} {r.kept['val']:>6} {r.kept['test']:>6} "
                     f"{r.dropped_total:>8}  {reasons}")
    return "\n".join(lines)


def run(cfg: PrepareConfig) -> list[SourceReport]:
    names = list(cfg.tasks) + (["events"] if cfg.sources.events else [])
    # Check every input before starting anything: a bad third file must not leave two tasks rewritten.
    for name in names:
        if name == "events":
            check_source(cfg.sources.events, event_rows.REQUIRED_COLUMNS, what="events")
        elif TASKS[name].source == "table":
            check_source(getattr(cfg.sources, name), TASKS[name].required_columns, what=name)
    ensure_ray()
    reports = [prepare_one(name, cfg) for name in names]
    print(format_report(reports))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps([r.__dict__ for r in reports], indent=2, default=str))
    print(f"wrote {out}/<task>/{{train,val,test,rejected}} and {out / 'report.json'}")
    return reports


def main(argv: list[str] | None = None) -> int:
    return job_main(PrepareConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
