"""Click and purchase logs: validate, pseudonymise and shape event rows (pure pandas, no Ray).

An event is (event_id, ts, user_id, session_id, type, product_id[, query, position]). User and
session ids are replaced by salted hashes here, before anything is written: no raw user id
reaches a training file. Events are split by hashed user, so one shopper's history never
straddles train and test.
"""

from __future__ import annotations

import pandas as pd

from core.events import EVENT_TYPES
from core.text import normalize_series, salted_hash

REQUIRED_COLUMNS = ("event_id", "ts", "user_id", "session_id", "type", "product_id")


def make_examples(df: pd.DataFrame, salt: str) -> pd.DataFrame:
    event_id = df["event_id"].astype("string").str.strip()
    user = df["user_id"].astype("string").str.strip()
    session = df["session_id"].astype("string").str.strip()
    kind = df["type"].astype("string").str.strip().str.lower()
    product = df["product_id"].astype("string").str.strip()
    ts = pd.to_datetime(df["ts"], errors="coerce", utc=True, format="mixed")
    query = normalize_series(df["query"]) if "query" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    position = pd.to_numeric(df["position"], errors="coerce") if "position" in df else pd.Series(float("nan"), index=df.index)

    reason = pd.Series([None] * len(df), index=df.index, dtype="object")

    def mark(mask, why):
        reason[mask.fillna(True) & reason.isna()] = why

    mark(event_id.isna() | (event_id == ""), "missing_event_id")
    mark(user.isna() | (user == ""), "missing_user_id")
    mark(ts.isna(), "bad_timestamp")
    mark(~kind.isin(EVENT_TYPES), "unknown_event_type")
    mark(product.isna() | (product == ""), "missing_product_id")
    mark(position < 0, "negative_position")

    user_hash = user.fillna("").map(lambda u: salted_hash(u, salt))
    return pd.DataFrame({
        "example_id": event_id.fillna(""),
        "event_id": event_id.fillna(""),
        "ts": ts,
        "user": user_hash,
        "session": session.fillna("").map(lambda s: salted_hash(s, salt)),
        "type": kind.fillna(""),
        "product_id": product.fillna(""),
        "query": query,
        "position": position,
        # Events carry no label; the type is what later stages learn from.
        "label": kind.fillna(""),
        "split_group": user_hash,
        "dedupe_key": event_id.fillna(""),
        "drop_reason": reason,
    })
