"""Consolidation targets: what the online click layer serves, as training targets for the relevance
adapter (pure pandas, no Ray, no torch).

The slow path's LoRA update learns from the window's impressions, each (query, product) pair shown
with a served model score, toward the score the fast path gives it now: the model score moved by
the online layer's snapshot (`core.click_snapshot.Snapshot.adjust`), clipped to the grade range.
So an update consolidates what the click layer learnt with confidence (its active keys, with their
safeguards: stated attributes, the boost floor, frozen keys) and nothing else; every pair no active
key touches keeps its current score as its target, which anchors the update against forgetting.
After a promotion the new version serves higher scores where it learnt a boost, and the click
model, which expects clicks from the served model score, sees those boosts delivered: its effects
shrink instead of counting twice.

A target grade t in [0, 2] becomes a distribution over the three grades with expected grade t
(mass on the two grades around t), which the relevance head is trained toward with cross-entropy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.click_snapshot import ProductCatalog, Snapshot
from core.tasks import GRADES
from core.text import bucket

DISTILL_COLUMNS = ("example_id", "query_id", "product_id", "query", "product_text", "label", "target", "split_group")


def grade_distribution(target: float) -> list[float]:
    """[P(irrelevant), P(partial), P(exact)] with expected grade `target` (clipped to 0..2)."""
    t = float(np.clip(target, 0.0, 2.0))
    return [1.0 - t, t, 0.0] if t <= 1.0 else [0.0, 2.0 - t, t - 1.0]


def distilled_examples(records: list[dict], snapshot: Snapshot, catalog: ProductCatalog,
                       product_texts: dict[str, str], holdout_fraction: float = 0.0,
                       seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """One example per (query, product) impressed in the window with a served score (flagged events
    and sessions the gate holds out left out): its target is the mean served model score moved by
    `snapshot`. Returns the examples and counts (pairs, moved: pairs the snapshot changed)."""
    scores: dict[tuple[str, str], list[float]] = {}
    first_session: dict[tuple[str, str], str] = {}
    held = holdout_fraction * 10_000
    for r in records:
        if (r.get("type") != "impression" or r.get("flags") or not r.get("query") or r.get("score") is None
                or r["product_id"] not in product_texts or r["product_id"] not in catalog):
            continue
        if held and bucket(r["session"], seed) < held:  # the gate's fresh lists: never trained on
            continue
        key = (r["query"], r["product_id"])
        scores.setdefault(key, []).append(float(r["score"]))
        first_session.setdefault(key, r["session"])
    by_query: dict[str, list[tuple[str, float]]] = {}
    for (query, product_id), values in scores.items():
        by_query.setdefault(query, []).append((product_id, float(np.mean(values))))
    rows, moved = [], 0
    for query, hits in by_query.items():
        adjusted = snapshot.adjust(query, hits, catalog)
        moved += len(adjusted.applied)
        for (product_id, _), (_, target) in zip(hits, adjusted.hits):
            target = float(np.clip(target, 0.0, 2.0))
            rows.append({"example_id": f"distill:{query}:{product_id}", "query_id": query, "product_id": product_id,
                         "query": query, "product_text": product_texts[product_id],
                         "label": GRADES[int(round(target))], "target": target,
                         "split_group": first_session[(query, product_id)]})
    frame = pd.DataFrame(rows, columns=list(DISTILL_COLUMNS))
    return frame, {"pairs": len(frame), "moved": moved, "snapshot": snapshot.version}
