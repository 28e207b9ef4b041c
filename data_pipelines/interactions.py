"""Prepare the recommend task: an interaction log -> time-ordered per-user histories, split by time.

Ray Data marks every row of the log in parallel blocks (`core.interactions.mark_rows`: missing ids,
cancellations and returns, non-product codes, unknown items); the driver then orders the usable
rows by user and time, marks duplicates, and splits by time (leave-last-out or a cut). Written to
`<output_dir>/recommend/`: `items.parquet` (item_id, text), `events.parquet` (every usable
interaction), `{train,val,test}/part-0.parquet`, `rejected/part-0.parquet` (every dropped row with
its `drop_reason`) and `report.json`. User ids are pseudonymised with the prepare salt.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from core import storage
from core.config import to_dict
from core.interactions import (EVENT_COLUMNS, CleanRules, LogColumns, drop_counts, item_table,
                               item_texts_from_log, leave_last_out, mark_rows, order_and_dedupe, time_cut)
from core.job_configs import InteractionSourceConfig, PrepareConfig
from core.text import salted_hash
from data_pipelines.outputs import staged_output
from data_pipelines.sources import check_source, read_source

NAME = "recommend"


def log_columns(src: InteractionSourceConfig) -> LogColumns:
    c = src.columns
    return LogColumns(user=c.user, item=c.item, timestamp=c.timestamp, basket=c.basket, quantity=c.quantity,
                      event=c.event, item_text=tuple(src.item_columns.text) if not src.items else ())


def clean_rules(src: InteractionSourceConfig) -> CleanRules:
    return CleanRules(cancel_prefix=src.cancel_prefix, non_product_items=tuple(src.non_product_items),
                      event_types=tuple(src.event_types))


def check_inputs(src: InteractionSourceConfig) -> None:
    """Refuse a missing file or column before anything is written (InputError names it)."""
    cols = log_columns(src)
    check_source(src.log, cols.present(), what="recommend log")
    if src.items:
        check_source(src.items, [src.item_columns.id, *src.item_columns.text], what="recommend items")


def _mark_block(batch: pd.DataFrame, cols: LogColumns, rules: CleanRules, known: set[str]) -> pd.DataFrame:
    marked = mark_rows(batch, cols, rules, known)
    return pd.concat([marked.reset_index(drop=True), batch.reset_index(drop=True).add_prefix("raw:")], axis=1)


def prepare_interactions(cfg: PrepareConfig) -> dict:
    import ray.data

    start = time.perf_counter()
    src = cfg.sources.recommend
    cols, rules = log_columns(src), clean_rules(src)
    present = check_source(src.log, cols.present(), what="recommend log")
    raw = read_source(src.log, present, cfg.max_rows, cfg.rows_per_block)
    if src.items:
        item_cols = [src.item_columns.id, *src.item_columns.text]
        items = item_table(read_source(src.items, item_cols).to_pandas(), src.item_columns.id,
                           tuple(src.item_columns.text))
    else:
        items = item_texts_from_log(raw.select_columns([cols.item, *cols.item_text]).to_pandas(), cols)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True   # file order orders a basket's lines
    marked = raw.map_batches(_mark_block, batch_format="pandas", batch_size=None, num_cpus=cfg.num_cpus_per_task,
                             fn_kwargs={"cols": cols, "rules": rules, "known": set(items["item_id"])}).to_pandas()
    marked["seq"] = range(len(marked))
    marked = order_and_dedupe(marked)
    counts = drop_counts(marked)
    usable = marked[marked["drop_reason"].isna()]
    events = usable[EVENT_COLUMNS].copy()
    events["user_id"] = events["user_id"].map(lambda u: salted_hash(u, cfg.salt))
    events = events.sort_values(["user_id", "ts", "seq"], kind="stable").reset_index(drop=True)
    split = leave_last_out(events, src.min_interactions) if src.split == "leave_last_out" else time_cut(events, src.cut)
    rejected = marked[marked["drop_reason"].notna()]
    rejected = rejected[["drop_reason", *[c for c in rejected.columns if c.startswith("raw:")]]]
    rejected.columns = [c.removeprefix("raw:") for c in rejected.columns]
    rejected = rejected.astype({c: "string" for c in rejected.columns if c != "drop_reason"})
    if cols.user in rejected:  # pseudonymise here too: rejected rows are kept beside the output
        rejected[cols.user] = rejected[cols.user].map(lambda u: None if pd.isna(u) else salted_hash(u, cfg.salt))

    report = {"name": NAME, "source": str(src.log), "rows_read": int(len(marked)),
              "kept": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
              "dropped": {k: v for k, v in counts.items() if v}, "items": int(len(items)),
              "users": int(events["user_id"].nunique()), "split": src.split}
    out_dir = storage.absolute(cfg.output_dir)
    final = storage.join(out_dir, NAME)
    with staged_output(final) as staging:
        for name in ("train", "val", "test", "rejected"):
            storage.makedirs(storage.join(staging, name))
        storage.write_parquet(items, storage.join(staging, "items.parquet"))
        storage.write_parquet(events, storage.join(staging, "events.parquet"))
        for name, frame in (("train", split.train), ("val", split.val), ("test", split.test), ("rejected", rejected)):
            storage.write_parquet(frame, storage.join(staging, name, "part-0.parquet"))
        report["seconds"] = round(time.perf_counter() - start, 2)
        storage.write_text(storage.join(staging, "report.json"),
                           json.dumps({**report, "config": to_dict(cfg)}, indent=2, default=str))
    return report


def read_items(data_dir: str) -> pd.DataFrame:
    """The prepared recommend task's item table (InputError when there is none)."""
    from core.errors import InputError

    base = storage.join(storage.absolute(data_dir), NAME)
    if not storage.exists(storage.join(base, "items.parquet")):
        raise InputError(f"no prepared recommend data under {base}: run `aisle prepare tasks=[recommend]` first")
    return storage.read_parquet(storage.join(base, "items.parquet"))


def read_prepared(data_dir: str) -> dict[str, pd.DataFrame]:
    """items, events, train, val, test of a prepared recommend task (InputError when missing)."""
    base = storage.join(storage.absolute(data_dir), NAME)
    out = {"items": read_items(data_dir), "events": storage.read_parquet(storage.join(base, "events.parquet"))}
    for split in ("train", "val", "test"):
        out[split] = storage.read_parquet(storage.join(base, split, "part-0.parquet"))
    return out


CHANGES = "catalog_changes.jsonl"


def changes_path(data_dir: str) -> str:
    """The recommend catalog's change log (POST/DELETE /v1/products), beside the prepared data."""
    return storage.join(data_dir, NAME, CHANGES)


def serving_items(data_dir: str, catalog_dir: str | None = None) -> pd.DataFrame:
    """The items /v1/recommend ranks, as (item_id, text): the prepared item table, the search
    catalog's products when `catalog_dir` holds one (one shop, one catalog), then the logged
    catalog changes replayed in order. InputError when the prepared data is missing."""
    from core import catalog_changes
    from core.interactions import catalog_items

    items = read_items(data_dir)[["item_id", "text"]]
    if catalog_dir and storage.exists(storage.join(catalog_dir, "products.parquet")):
        products = storage.read_parquet(storage.join(catalog_dir, "products.parquet"))
        items = pd.concat([items, catalog_items(products)], ignore_index=True).drop_duplicates("item_id", keep="last")
    changes = [] if storage.is_remote(data_dir) else catalog_changes.read(changes_path(data_dir))
    table = catalog_changes.replay({i: {"item_id": i, "text": t} for i, t in
                                    zip(items["item_id"].astype(str), items["text"].astype(str))}, changes)
    return pd.DataFrame({"item_id": list(table), "text": [v["text"] for v in table.values()]})

