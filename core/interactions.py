"""Interaction logs -> time-ordered per-user histories, for the recommend task. Pure pandas, no Ray.

A log is any table with a user, an item and a timestamp column (names mapped in config), and
optionally a basket (invoice, order, session), a quantity and an event type. Items get their text
from an item table (id + text fields), or, when a log carries its own descriptions, from the log.

Cleaning counts every dropped row by reason and never drops silently:
  missing_user, missing_item, missing_timestamp, cancellation (a basket id with the cancel prefix,
  or a quantity <= 0: returns and stock adjustments), non_product (codes that are not products:
  postage, fees, manual adjustments; glob patterns from config), unknown_item (no text for it),
  duplicate (the same user, item and basket, or time when there is no basket).

Splits are by time, never by row:
  leave-last-out: each user's last interaction is the test target, the one before it the
  validation target, everything earlier is training history (users with fewer than 3 interactions
  only train);
  time cut: everything before `cut` trains; each returning user's interactions after it are
  targets (`later_targets`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.text import normalize_series

DROP_REASONS = ("missing_user", "missing_item", "missing_timestamp", "cancellation", "non_product",
                "unknown_item", "duplicate")

# The canonical columns every later stage reads.
EVENT_COLUMNS = ["user_id", "item_id", "ts", "basket", "quantity", "seq"]


@dataclass(frozen=True)
class LogColumns:
    """Which source column plays which role. Only user, item and timestamp are required."""
    user: str
    item: str
    timestamp: str
    basket: str | None = None
    quantity: str | None = None
    event: str | None = None
    item_text: tuple[str, ...] = ()
    """Text columns of the log itself that describe the item (used when no item table is given)."""

    def required(self) -> list[str]:
        return [c for c in (self.user, self.item, self.timestamp) if c]

    def present(self) -> list[str]:
        cols = [self.user, self.item, self.timestamp, self.basket, self.quantity, self.event, *self.item_text]
        return list(dict.fromkeys(c for c in cols if c))


@dataclass(frozen=True)
class CleanRules:
    cancel_prefix: str | None = None
    """A basket id starting with this marks a cancellation (the retail log's 'C')."""
    non_product_items: tuple[str, ...] = ()
    """Glob patterns of item ids that are not products (POST, DCGS*, ...), matched case-insensitively."""
    event_types: tuple[str, ...] = ()
    """When the log has an event column: the event types kept (empty keeps all)."""


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def _mark(reason: pd.Series, mask: pd.Series, why: str) -> None:
    reason[mask.fillna(False).astype(bool) & reason.isna()] = why


def is_non_product(items: pd.Series, patterns: tuple[str, ...]) -> pd.Series:
    if not patterns:
        return pd.Series(False, index=items.index)
    pats = [p.casefold() for p in patterns]
    uniq = items.dropna().astype(str).unique()
    bad = {i for i in uniq if any(fnmatch.fnmatchcase(i.casefold(), p) for p in pats)}
    return items.astype("string").isin(bad).fillna(False)


def item_texts_from_log(log: pd.DataFrame, cols: LogColumns) -> pd.DataFrame:
    """An item table from a log that carries descriptions: each item's most frequent text."""
    if not cols.item_text:
        raise ValueError("the log has no item text columns (set item_text, or give an item table)")
    df = log[[cols.item, *cols.item_text]].copy()
    df["item_id"] = df[cols.item].astype("string").str.strip()
    df["text"] = join_text(df, cols.item_text)
    df = df[df["item_id"].notna() & (df["item_id"] != "") & (df["text"] != "")]
    counts = df.groupby(["item_id", "text"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["item_id", "n", "text"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("item_id")[["item_id", "text"]].reset_index(drop=True)


def join_text(df: pd.DataFrame, fields: tuple[str, ...] | list[str]) -> pd.Series:
    parts = [normalize_series(df[f]).fillna("") for f in fields]
    text = parts[0]
    for p in parts[1:]:
        text = (text + " " + p).str.strip()
    return text.astype("string").fillna("")


def item_table(items: pd.DataFrame, id_column: str, text_fields: tuple[str, ...]) -> pd.DataFrame:
    """A user-supplied item table -> (item_id, text); rows without an id or any text are left out."""
    out = pd.DataFrame({"item_id": items[id_column].astype("string").str.strip(),
                        "text": join_text(items, text_fields)})
    out = out[out["item_id"].notna() & (out["item_id"] != "") & (out["text"] != "")]
    return out.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def catalog_items(products: pd.DataFrame) -> pd.DataFrame:
    """The shop's search catalog (data_pipelines.catalog products) as recommendable items:
    (item_id, text) of title, category and price (a shopper's budget is part of their taste)."""
    table = products.assign(price_text="price " + products["price"].astype(float).map("{:.2f}".format))
    return item_table(table, "product_id", ("title", "category", "price_text"))


def parse_times(values: pd.Series) -> pd.Series:
    """Timestamps in any format pandas reads, as naive UTC; unreadable ones NaT. A column that mixes
    formats ("2024-01-02" beside "2024-01-02T10:00:00") is parsed value by value where needed."""
    ts = pd.to_datetime(values, errors="coerce", utc=True)
    retry = ts.isna() & values.notna()
    if retry.any():
        ts[retry] = pd.to_datetime(values[retry].astype(str), errors="coerce", utc=True, format="mixed")
    return ts.dt.tz_localize(None)


def mark_rows(log: pd.DataFrame, cols: LogColumns, rules: CleanRules, known_items: set[str]) -> pd.DataFrame:
    """Raw log rows -> canonical EVENT_COLUMNS plus `drop_reason` (None when usable), row by row: any
    block of a log can be marked on its own. `seq` is the row's place in the block (`offset` adds
    the block's start) and orders a basket's lines."""
    user = log[cols.user].astype("string").str.strip()
    item = log[cols.item].astype("string").str.strip()
    ts = parse_times(log[cols.timestamp])
    basket = (log[cols.basket].astype("string").str.strip() if cols.basket
              else pd.Series(pd.NA, index=log.index, dtype="string"))
    qty = (pd.to_numeric(log[cols.quantity], errors="coerce") if cols.quantity
           else pd.Series(1.0, index=log.index))
    reason = pd.Series([None] * len(log), index=log.index, dtype="object")
    _mark(reason, _blank(user), "missing_user")
    _mark(reason, _blank(item), "missing_item")
    _mark(reason, ts.isna(), "missing_timestamp")
    cancelled = qty.isna() | (qty <= 0)
    if cols.basket and rules.cancel_prefix:
        cancelled |= basket.str.startswith(rules.cancel_prefix).fillna(False)
    if cols.event and rules.event_types:
        cancelled |= ~log[cols.event].astype("string").isin(list(rules.event_types)).fillna(False)
    _mark(reason, cancelled, "cancellation")
    _mark(reason, is_non_product(item, rules.non_product_items), "non_product")
    _mark(reason, ~item.isin(known_items).fillna(False), "unknown_item")
    return pd.DataFrame({"user_id": user, "item_id": item, "ts": ts,
                         "basket": basket.fillna(ts.astype("string")), "quantity": qty.astype("float64"),
                         "seq": np.arange(len(log), dtype="int64"), "drop_reason": reason}, index=log.index)


def order_and_dedupe(marked: pd.DataFrame) -> pd.DataFrame:
    """Marked rows (from every block, `seq` global) -> the same rows with duplicates marked: the
    same user, item and basket (or time) seen again. Usable rows come first, ordered by user and time."""
    marked = marked.sort_values(["user_id", "ts", "seq"], kind="stable", na_position="last")
    ok = marked["drop_reason"].isna()
    dup = marked[ok].duplicated(["user_id", "item_id", "basket"], keep="first")
    marked.loc[dup[dup].index, "drop_reason"] = "duplicate"
    return marked.reset_index(drop=True)


def drop_counts(marked: pd.DataFrame) -> dict[str, int]:
    return {r: int((marked["drop_reason"] == r).sum()) for r in DROP_REASONS}


def clean_log(log: pd.DataFrame, cols: LogColumns, rules: CleanRules, items: pd.DataFrame
              ) -> tuple[pd.DataFrame, dict[str, int]]:
    """A whole log in one process -> (usable events in EVENT_COLUMNS ordered by user and time,
    dropped rows counted by reason)."""
    marked = order_and_dedupe(mark_rows(log, cols, rules, set(items["item_id"])))
    kept = marked[marked["drop_reason"].isna()]
    return kept[EVENT_COLUMNS].reset_index(drop=True), drop_counts(marked)


@dataclass
class Split:
    train: pd.DataFrame
    """Training interactions (every user's history before their targets)."""
    val: pd.DataFrame
    """One target per user (leave-last-out) or none."""
    test: pd.DataFrame
    """Targets: one per user (leave-last-out) or every interaction after the cut."""


def leave_last_out(events: pd.DataFrame, min_interactions: int = 3) -> Split:
    """Each user's last interaction -> test, the one before -> val, earlier ones -> train.
    `events` must be ordered by user and time (clean_log's order)."""
    pos_from_end = events.groupby("user_id", sort=False).cumcount(ascending=False)
    n = events.groupby("user_id", sort=False)["item_id"].transform("size")
    eligible = n >= min_interactions
    test = events[eligible & (pos_from_end == 0)]
    val = events[eligible & (pos_from_end == 1)]
    train = events[~(eligible & (pos_from_end <= 1))]
    return Split(train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True))


def time_cut(events: pd.DataFrame, cut: pd.Timestamp | str) -> Split:
    """Before `cut` trains; the returning users' interactions from `cut` on are the targets."""
    cut = pd.Timestamp(cut)
    before = events[events["ts"] < cut]
    after = events[(events["ts"] >= cut) & events["user_id"].isin(set(before["user_id"]))]
    return Split(before.reset_index(drop=True), after.iloc[:0].reset_index(drop=True), after.reset_index(drop=True))


def later_targets(history: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    """A later log of the same shop -> each returning user's purchases after their history ends."""
    last = history.groupby("user_id")["ts"].max()
    later = later[later["user_id"].isin(last.index)]
    later = later[later["ts"] > later["user_id"].map(last)]
    return later.reset_index(drop=True)


def histories(train: pd.DataFrame, max_len: int | None = None) -> dict[str, list[str]]:
    """user -> their training item ids, oldest first (the last `max_len` when given)."""
    out = {}
    for user, items in train.groupby("user_id", sort=False)["item_id"]:
        seq = items.tolist()
        out[user] = seq[-max_len:] if max_len else seq
    return out
