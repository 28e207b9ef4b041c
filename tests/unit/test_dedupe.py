"""The prepare job's dedupe decision, on hand-built key tables (no Ray)."""

from __future__ import annotations

import pandas as pd

from data_pipelines.prepare import DuplicateDecision


def _rows(*rows):
    return pd.DataFrame(rows, columns=["_key", "_fp", "_row", "label", "drop_reason"]).astype(
        {"_key": "uint64", "_fp": "uint64", "_row": "int64"})


def test_keeps_one_copy_drops_conflicts_and_ignores_already_dropped_rows():
    rows = _rows(
        (1, 10, 100, "pos", None), (1, 10, 101, "pos", None), (1, 9, 102, "pos", None),  # 3 copies: keep fp 9
        (2, 20, 200, "pos", None), (2, 21, 201, "neg", None),                              # labels disagree: drop both
        (3, 30, 300, "neg", None),                                                         # unique
        (4, 40, 400, "pos", None), (4, 41, 401, "pos", "text_too_short"),                  # the invalid copy is not a rival
    )
    usable = rows[rows["drop_reason"].isna()]
    decision = DuplicateDecision.from_keys(usable[["_key", "_fp", "_row", "label"]])
    out = decision.apply(rows.copy())
    assert out.set_index("_row")["drop_reason"].fillna("kept").to_dict() == {
        100: "duplicate", 101: "duplicate", 102: "kept", 200: "conflicting_label", 201: "conflicting_label",
        300: "kept", 400: "kept", 401: "text_too_short"}


def test_exact_copies_keep_exactly_one_whatever_the_order():
    rows = _rows(*[(7, 70, r, "pos", None) for r in (5, 3, 9, 1)])
    for frame in (rows, rows.iloc[::-1]):
        decision = DuplicateDecision.from_keys(frame[["_key", "_fp", "_row", "label"]])
        out = decision.apply(frame.copy())
        assert out["drop_reason"].isna().sum() == 1
        assert out.loc[out["drop_reason"].isna(), "_row"].item() == 1
