"""Click and purchase feedback -> relevance training examples (pure pandas, no Ray).

Each search result list a shopper saw is one group: its impressions, clicks and purchases share a
session and a query. Labels, on the relevance task's grades:
- click, add-to-cart or purchase -> "exact", the grade the offline judgements give a product that
  matches the query (labelling clicks "partial" taught updates to pull real matches down: the
  gate's original-set nDCG fell 0.03-0.05 per update in benchmarks/freshness_bench.py); a
  purchase or add-to-cart counts double (PURCHASE_WEIGHT): the stronger evidence;
- impression skipped ABOVE a clicked position -> "irrelevant" (Joachims' skip-above rule): the
  shopper scanned past it to click something lower, so it was seen and passed over;
- impressions below the lowest click, and lists without any click, give no example: the shopper
  probably never looked that far, and "not clicked" is not "not relevant".

Position bias: a product shown first is clicked more because it is first. Skip-above already keeps
only negatives that were examined. Positives get an inverse-propensity weight 1 / P(examined at
position) with the examination model P = (1 / (position + 1)) ** eta (eta from config, 1.0 by
default, the usual fit for web search logs), clipped at `max_weight`, so a click at position 8 counts
for more than one at position 0 and the update does not simply learn "whatever ranked first is
good". The weights are applied by resampling (see `resample_by_weight`), so training code stays
unweighted.

Flagged events (anomaly screen) never become examples, and a flagged click does not turn the
impressions above it into negatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.tasks import GRADES

STRONG_TYPES = ("add_to_cart", "purchase")
PURCHASE_WEIGHT = 2.0
EXAMPLE_COLUMNS = ("example_id", "query_id", "product_id", "query", "product_text", "label", "weight",
                   "position", "split_group")


def propensity(position: np.ndarray | int, eta: float) -> np.ndarray:
    """P(a shopper examines the result at 0-based `position`)."""
    return (1.0 / (np.asarray(position, dtype=np.float64) + 1.0)) ** eta


def examples_from_events(records: list[dict], product_texts: dict[str, str], eta: float = 1.0,
                         max_weight: float = 10.0) -> tuple[pd.DataFrame, dict]:
    """Labelled (query, product) examples from log records, and counts of what was used and why not.

    `records` are FeedbackLog records (normal-form events plus `flags`). Only events that carry a
    query and a position (search results) can become relevance examples.
    """
    counts = {"events": len(records), "flagged": 0, "not_search": 0, "unknown_product": 0,
              "lists": 0, "lists_without_click": 0}
    rows = []
    for (session, query), group in _result_lists(records, counts).items():
        counts["lists"] += 1
        rows_before = len(rows)
        rows.extend(_label_list(session, query, group, product_texts, eta, max_weight, counts))
        if len(rows) == rows_before:
            counts["lists_without_click"] += 1
    frame = pd.DataFrame(rows, columns=list(EXAMPLE_COLUMNS))
    for grade in GRADES:
        counts[grade] = int((frame["label"] == grade).sum())
    counts["examples"] = len(frame)
    return frame, counts


def result_list_key(record: dict) -> tuple[str, str] | None:
    """The result list a record belongs to, (session, query); None for flagged and non-search records."""
    if record.get("flags") or not record.get("query") or record.get("position") is None:
        return None
    return record["session"], record["query"]


def _result_lists(records: list[dict], counts: dict) -> dict[tuple[str, str], list[dict]]:
    lists: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        key = result_list_key(r)
        if key is None:
            counts["flagged" if r.get("flags") else "not_search"] += 1
            continue
        lists.setdefault(key, []).append(r)
    return lists


def _label_list(session: str, query: str, events: list[dict], product_texts: dict[str, str], eta: float,
                max_weight: float, counts: dict) -> list[dict]:
    shown: dict[str, int] = {}
    evidence: dict[str, float] = {}  # product -> 1 (clicked) or PURCHASE_WEIGHT (bought or carted)
    for e in events:
        pid = e["product_id"]
        shown[pid] = min(shown.get(pid, e["position"]), e["position"])
        if e["type"] in STRONG_TYPES:
            evidence[pid] = PURCHASE_WEIGHT
        elif e["type"] == "click":
            evidence.setdefault(pid, 1.0)
    if not evidence:
        return []
    lowest_click = max(shown[p] for p in evidence)
    group = f"{session}:{query}"
    out = []
    for pid, position in sorted(shown.items(), key=lambda kv: kv[1]):
        if pid in evidence:
            label = "exact"
            weight = float(min(max_weight, evidence[pid] / propensity(position, eta)))
        elif position < lowest_click:
            label, weight = "irrelevant", 1.0
        else:
            continue
        text = product_texts.get(pid)
        if text is None:
            counts["unknown_product"] += 1
            continue
        out.append({"example_id": f"{group}:{pid}", "query_id": group, "product_id": pid, "query": query,
                    "product_text": text, "label": label, "weight": weight, "position": int(position),
                    "split_group": session})
    return out


def resample_by_weight(frame: pd.DataFrame, seed: int, max_copies: int = 10) -> pd.DataFrame:
    """Each row repeated ~`weight` times (stochastic rounding, at most `max_copies`): weighted
    training through an unweighted loss. The expected number of copies equals the weight."""
    if frame.empty:
        return frame
    rng = np.random.default_rng(seed)
    w = frame["weight"].to_numpy(dtype=np.float64)
    copies = np.floor(w) + (rng.random(len(w)) < (w - np.floor(w)))
    copies = np.clip(copies, 1, max_copies).astype(int)
    return frame.loc[frame.index.repeat(copies)].reset_index(drop=True)


def split_holdout(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout), by session: one shopper's list is never on both sides."""
    from core.text import bucket

    if frame.empty:
        return frame, frame
    held = frame["split_group"].map(lambda s: bucket(s, seed) < fraction * 10_000)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
