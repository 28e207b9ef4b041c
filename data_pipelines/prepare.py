"""Prepare training data with Ray Data: read -> clean -> dedupe -> pseudonymise -> split -> Parquet.

For each task in the config: check the source file, read it in parallel, turn rows into the task's
examples (`core.tasks`), drop unusable rows with a reason, drop duplicates (and texts whose copies
disagree on the label), assign train/val/test by a hash of the task's group (product for reviews,
normalised message text for intents, queries linked by normalised text or hidden intent for
relevance, user for events) so no group straddles two splits, and write `<output_dir>/<task>/
{train,val,test}/` Parquet plus the dropped rows under `rejected/` and a
`report.json`. Nothing is dropped silently: every dropped row is counted by reason, printed, and kept.
`output_dir`, `sources.catalog_dir` and Parquet sources may be s3:// URIs (core.storage): the Ray tasks write
their part files straight to the store, and the task's output is then replaced without a rename
(data_pipelines.outputs: not atomic there, report.json lands last).

Refuses (one error line, exit 2, nothing written): a missing, empty or non-UTF-8 file, a missing
column, an unknown config key. Output for a task appears atomically (written aside, then renamed).

    python -m data_pipelines.prepare --config configs/prepare.yaml [key=value ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core import storage
from core.config import to_dict
from core.errors import InputError
from core.job_configs import PrepareConfig, SplitConfig
from core.gen_tasks import GEN_TASKS, GenTask
from core.tasks import Task, declared_tasks, get_task, query_split_groups
from core.text import bucket
from data_pipelines import events as event_rows
from data_pipelines import interactions
from data_pipelines.outputs import staged_output
from data_pipelines.sources import ROW_ID, check_source, read_source
from ops.runtime import ensure_ray, job_main

SPLITS = ("train", "val", "test")
_INTERNAL = ["_key", "_fp", "_row"]


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
    """test / val / train by a hash of the group: a whole product (or query group, or user) lands on one side."""
    b = groups.map(lambda g: bucket(g, cfg.seed)).astype("int64") / 10_000.0
    out = pd.Series("train", index=groups.index, dtype="object")
    out[b < cfg.test_fraction + cfg.val_fraction] = "val"
    out[b < cfg.test_fraction] = "test"
    return out


def examples_batch(batch: pd.DataFrame, make: Callable[[pd.DataFrame], pd.DataFrame], split: SplitConfig) -> pd.DataFrame:
    """Raw rows -> example rows with their split, a 64-bit hash of the dedupe key (`_key`), a content
    fingerprint (`_fp`, the deterministic tie-break between copies) and a row id (`_row`): the row's
    position in its source file where read_source gave it (so of identical copies the first is kept,
    and the same file always gives the same output, rows in the same order), else a random one."""
    positions = batch[ROW_ID].to_numpy() if ROW_ID in batch.columns else None
    out = make(batch.drop(columns=[ROW_ID]) if positions is not None else batch)
    out["split"] = assign_split(out["split_group"].astype(str), split)
    out["_key"] = pd.util.hash_pandas_object(out["dedupe_key"], index=False).to_numpy()
    content = out.drop(columns=["dedupe_key", "_key"]).astype(str)
    out["_fp"] = pd.util.hash_pandas_object(content, index=False).to_numpy()
    if positions is not None and len(positions) == len(out):  # every task makes one example per raw row
        out["_row"] = positions.astype(np.int64)
    else:
        out["_row"] = np.random.default_rng().integers(0, 2**63, len(out), dtype=np.int64)
    return out.drop(columns=["dedupe_key"])


@dataclass
class DuplicateDecision:
    """Which rows the dedupe drops: every row of a key whose copies disagree on the label, and every
    copy but one (smallest fingerprint, then row id) of the other repeated keys."""
    conflicting_keys: np.ndarray
    duplicate_rows: np.ndarray

    @classmethod
    def from_keys(cls, keys: pd.DataFrame) -> DuplicateDecision:
        """`keys`: columns _key, _fp, _row, label of the usable rows (24 bytes a row, plus the label)."""
        repeated = keys[keys.duplicated("_key", keep=False)]
        n_labels = repeated.groupby("_key")["label"].transform("nunique")
        conflicting = repeated.loc[n_labels > 1, "_key"].unique()
        rest = repeated[n_labels <= 1].sort_values(["_key", "_fp", "_row"], kind="stable")
        losers = rest.loc[rest.duplicated("_key", keep="first"), "_row"].to_numpy()
        return cls(np.sort(conflicting.astype(np.uint64)), np.sort(losers.astype(np.int64)))

    def apply(self, batch: pd.DataFrame) -> pd.DataFrame:
        usable = batch["drop_reason"].isna()
        batch.loc[usable & np.isin(batch["_row"].to_numpy(), self.duplicate_rows), "drop_reason"] = "duplicate"
        batch.loc[usable & np.isin(batch["_key"].to_numpy(), self.conflicting_keys), "drop_reason"] = "conflicting_label"
        return batch


def write_split_files(batch: pd.DataFrame, directory: str) -> pd.DataFrame:
    """Write one batch's kept rows to `<directory>/<split>/` and its dropped rows to `rejected/`, one
    file each; return the batch's row counts by split, label and drop reason (for the report)."""
    batch = batch.drop(columns=_INTERNAL)
    dropped = batch["drop_reason"].notna()
    name = f"part-{uuid.uuid4().hex}.parquet"
    for split in SPLITS:
        rows = batch.loc[~dropped & (batch["split"] == split)]
        if len(rows):
            storage.write_parquet(rows.drop(columns=["drop_reason", "split"]), storage.join(directory, split, name))
    if dropped.any():
        storage.write_parquet(batch.loc[dropped], storage.join(directory, "rejected", name))
    counts = batch.assign(drop_reason=batch["drop_reason"].fillna(""), label=batch["label"].astype(str).fillna(""),
                          split=batch["split"].fillna(""))
    return counts.groupby(["split", "label", "drop_reason"], dropna=False).size().rename("rows").reset_index()


def join_catalog(judgements: pd.DataFrame, queries: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Judgement rows + query text and split group + product fields; unknown ids leave empty fields
    (dropped, counted). The group (`query_group`, see core.tasks.query_split_groups) needs the whole
    queries table, so the job computes it once on the driver; it is computed here only for a
    queries table that does not carry it."""
    if "query_group" not in queries.columns:
        queries = queries.assign(query_group=query_split_groups(queries))
    q = queries.set_index("query_id")[["text", "query_group"]].rename(columns={"text": "query"})
    p = products.set_index("product_id")[["title", "description", "attributes"]]
    out = judgements.join(q, on="query_id").join(p, on="product_id")
    return out


# ---- the job -----------------------------------------------------------------------------------

def _ensure_catalog(cfg: PrepareConfig) -> str:
    """The catalog directory (a path or an s3:// URI), generated there first if it holds no judgements."""
    from data_pipelines.catalog import generate_catalog, write_catalog

    directory = cfg.sources.catalog_dir
    if not storage.is_file(storage.join(directory, "judgements.parquet")):
        c = cfg.sources.catalog
        print(f"generating catalog (seed {c.seed}, {c.n_products} products, {c.n_queries} queries) -> {directory}")
        catalog = generate_catalog(seed=c.seed, n_products=c.n_products, n_queries=c.n_queries,
                                   candidates_per_query=c.candidates_per_query)
        if storage.is_remote(directory):
            with tempfile.TemporaryDirectory() as tmp:
                write_catalog(catalog, tmp)
                storage.upload_dir(tmp, directory)
        else:
            write_catalog(catalog, directory)
    return directory


def _source(location: str) -> str | Path:
    return location if storage.is_remote(location) else Path(location)


def data_task(name: str) -> Task | GenTask:
    """The declaration whose examples `name` prepares: a generation task (`core.gen_tasks`) or an
    encoder task (`core.tasks`)."""
    return GEN_TASKS.get(name) or get_task(name)


def _dataset_for(name: str, cfg: PrepareConfig):
    """(Ray Dataset of raw rows, example builder, source description) for a task or 'events'."""
    if name == "events":
        path = _source(cfg.sources.events)
        cols = check_source(path, event_rows.REQUIRED_COLUMNS, what="events")
        return (read_source(path, cols, cfg.max_rows, cfg.rows_per_block, row_ids=True),
                partial(event_rows.make_examples, salt=cfg.salt),
                str(path))
    task = data_task(name)
    if task.source == "products":  # a generation task over the catalog's products (describe)
        path = storage.join(_ensure_catalog(cfg), "products.parquet")
        check_source(path, task.required_columns, what="products")
        return (read_source(path, task.required_columns, cfg.max_rows, cfg.rows_per_block, row_ids=True),
                task.make_examples, str(path))
    if task.source == "catalog":
        directory = _ensure_catalog(cfg)
        paths = {k: storage.join(directory, f"{k}.parquet") for k in ("judgements", "queries", "products")}
        check_source(paths["judgements"], task.required_columns, what="judgements")
        check_source(paths["queries"], ("query_id", "text"), what="queries")
        check_source(paths["products"], ("product_id", "title", "description", "attributes"), what="products")
        queries, products = storage.read_parquet(paths["queries"]), storage.read_parquet(paths["products"])
        # Split groups link queries across the whole table (same normalised text or hidden intent):
        # computed here, once, and shipped to the join with the query text.
        queries = queries[["query_id", "text"]].assign(query_group=query_split_groups(queries))
        ds = read_source(paths["judgements"], task.required_columns, cfg.max_rows, cfg.rows_per_block, row_ids=True)
        ds = ds.map_batches(join_catalog, batch_format="pandas", fn_kwargs={"queries": queries, "products": products},
                            num_cpus=cfg.num_cpus_per_task)
        return ds, task.make_examples, str(directory)
    path, columns = table_source(name, cfg)
    check_source(path, list(columns), what=name)
    ds = read_source(path, list(columns), cfg.max_rows, cfg.rows_per_block, row_ids=True)
    rename = {theirs: ours for theirs, ours in columns.items() if theirs != ours}
    return ds, partial(renamed_examples, make=task.make_examples, rename=rename) if rename else task.make_examples, str(path)


def table_source(name: str, cfg: PrepareConfig) -> tuple[str | Path, dict[str, str]]:
    """(file, {its column: the task's column}) of a table task: a declared task's own `source`, or
    `sources.<task>` with `sources.columns.<task>` naming the file's columns."""
    declared = declared_tasks().get(name)
    if declared is not None:
        return _source(declared.source), {c: c for c in declared.required_columns}
    mapping = cfg.sources.columns.get(name, {})
    task = data_task(name)
    required = task.required_columns
    unknown = sorted(set(mapping) - set(required))
    if unknown:
        raise InputError(f"sources.columns.{name}: {unknown[0]!r} is not a column of task {name} "
                         f"(its columns: {', '.join(required)})")
    return _source(getattr(cfg.sources, getattr(task, "reads", name))), {mapping.get(c, c): c for c in required}


def renamed_examples(batch: pd.DataFrame, make, rename: dict[str, str]) -> pd.DataFrame:
    return make(batch.rename(columns=rename))


def prepare_one(name: str, cfg: PrepareConfig) -> SourceReport:
    start = time.perf_counter()
    raw, make, source = _dataset_for(name, cfg)  # blocks of at most rows_per_block rows (read_source)
    rows = raw.map_batches(examples_batch, batch_format="pandas", batch_size=None, fn_kwargs={"make": make, "split": cfg.split},
                           num_cpus=cfg.num_cpus_per_task).materialize()
    # Dedupe without moving the rows: only the narrow key columns come to the driver, which decides
    # which rows go; the decision is broadcast to one parallel pass that marks and writes every split.
    keys = rows.select_columns(["_key", "_fp", "_row", "label", "drop_reason"]).to_pandas()
    decision = DuplicateDecision.from_keys(keys.loc[keys["drop_reason"].isna()].drop(columns=["drop_reason"]))

    out_dir = storage.absolute(cfg.output_dir)
    final = storage.join(out_dir, name)
    with staged_output(final) as staging:
        for split in (*SPLITS, "rejected"):
            storage.makedirs(storage.join(staging, split))  # an empty split is still an (empty) directory (locally)
        counts = rows.map_batches(_finalize, batch_format="pandas", batch_size=None, num_cpus=cfg.num_cpus_per_task,
                                  fn_kwargs={"decision": decision, "directory": staging}).to_pandas()
        report = _report(name, source, counts)
        report.seconds = time.perf_counter() - start
        storage.write_text(storage.join(staging, "report.json"),
                           json.dumps({**report.__dict__, "config": to_dict(cfg)}, indent=2, default=str))
    return report


def _finalize(batch: pd.DataFrame, decision: DuplicateDecision, directory: str) -> pd.DataFrame:
    return write_split_files(decision.apply(batch), directory)


def _report(name: str, source: str, counts: pd.DataFrame) -> SourceReport:
    counts = counts.groupby(["split", "label", "drop_reason"], as_index=False, dropna=False)["rows"].sum()
    report = SourceReport(name=name, source=source, rows_read=int(counts["rows"].sum()))
    dropped = counts[counts["drop_reason"] != ""]
    report.dropped = {str(k): int(v) for k, v in dropped.groupby("drop_reason")["rows"].sum().items()}
    kept = counts[counts["drop_reason"] == ""]
    report.kept = {s: int(kept.loc[kept["split"] == s, "rows"].sum()) for s in SPLITS}
    report.labels = {s: {str(k): int(v) for k, v in kept.loc[kept["split"] == s].groupby("label")["rows"].sum().sort_index().items()}
                     for s in SPLITS}
    return report


def format_report(reports: list[SourceReport]) -> str:
    lines = [f"{'source':<10} {'read':>7} {'train':>7} {'val':>6} {'test':>6} {'dropped':>8}  reasons"]
    for r in reports:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(r.dropped.items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"{r.name:<10} {r.rows_read:>7} {r.kept['train']:>7} {r.kept['val']:>6} {r.kept['test']:>6} "
                     f"{r.dropped_total:>8}  {reasons}")
    return "\n".join(lines)


def run(cfg: PrepareConfig) -> list[SourceReport]:
    names = [t for t in cfg.tasks if t != interactions.NAME] + (["events"] if cfg.sources.events else [])
    # Check every input before starting anything: a bad third file must not leave two tasks rewritten.
    if interactions.NAME in cfg.tasks:
        interactions.check_inputs(cfg.sources.recommend)
    for name in names:
        if name == "events":
            check_source(cfg.sources.events, event_rows.REQUIRED_COLUMNS, what="events")
        elif data_task(name).source == "table":
            path, columns = table_source(name, cfg)
            check_source(path, list(columns), what=name)
    ensure_ray()
    reports = [prepare_one(name, cfg) for name in names]
    if interactions.NAME in cfg.tasks:
        reports.append(SourceReport(**{k: v for k, v in interactions.prepare_interactions(cfg).items()
                                       if k in SourceReport.__dataclass_fields__}))
    print(format_report(reports))
    out = storage.absolute(cfg.output_dir)
    storage.makedirs(out)
    storage.write_text(storage.join(out, "report.json"), json.dumps([r.__dict__ for r in reports], indent=2, default=str))
    print(f"wrote {out}/<task>/{{train,val,test,rejected}} and {storage.join(out, 'report.json')}")
    return reports


def main(argv: list[str] | None = None) -> int:
    return job_main(PrepareConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
