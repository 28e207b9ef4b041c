"""Evaluation metrics for Aisle's classification and ranking tasks.

Pure numpy so the same code scores offline benchmarks, training-time
validation and serving shadow traffic without pulling in sklearn.

Classification: ``accuracy``, ``macro_f1``, ``auc``.
Ranking (one query at a time): ``ndcg_at_k``, ``mrr``; ``grouped_mean``
averages a per-query metric over a flat table of (group, score, grade) rows.
Ranking ties on score are broken stably by original row order, so results are
deterministic for a given input order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accuracy",
    "macro_f1",
    "ndcg_at_k",
    "mrr",
    "auc",
    "grouped_mean",
    "classification_report",
    "per_class_f1",
    "ranking_report",
]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Convert to a non-empty 1-D array, raising ValueError naming ``name``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _as_pair(
    a: ArrayLike, b: ArrayLike, name_a: str, name_b: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two parallel 1-D inputs of equal, non-zero length."""
    arr_a = _as_1d(a, name_a)
    arr_b = _as_1d(b, name_b)
    if arr_a.shape[0] != arr_b.shape[0]:
        raise ValueError(
            f"length mismatch: {name_a} has {arr_a.shape[0]} items, "
            f"{name_b} has {arr_b.shape[0]}"
        )
    return arr_a, arr_b


def _rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` descending, ties kept in original order."""
    # A stable ascending sort of the negated scores keeps tied items in index
    # order; reversing an ascending sort would flip the tie order instead.
    return np.argsort(-scores.astype(np.float64), kind="stable")


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of positions where the prediction equals the true label."""
    t, p = _as_pair(y_true, y_pred, "y_true", "y_pred")
    return float(np.mean(t == p))


def macro_f1(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Any] | None = None
) -> float:
    """Unweighted mean of per-class F1 over ``labels``.

    ``labels`` defaults to the sorted union of classes in ``y_true`` and
    ``y_pred``; every such class has at least one true or predicted example,
    so its F1 is well defined. A class given explicitly in ``labels`` that
    never occurs in either array has F1 = 0 (the sklearn ``zero_division=0``
    convention): asking about a class the model never saw should pull the
    average down rather than be silently skipped. Classes present in the data
    but missing from an explicit ``labels`` are ignored, though their
    mistakes still count as false positives/negatives of the listed classes.
    Labels may be ints or strings, but both arrays must use the same type.
    """
    return float(np.mean(per_class_f1(y_true, y_pred, labels)))


def per_class_f1(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Any] | None = None
) -> np.ndarray:
    """F1 of each class of ``labels`` (defaults and conventions as in ``macro_f1``)."""
    t, p = _as_pair(y_true, y_pred, "y_true", "y_pred")
    if labels is None:
        classes = np.union1d(np.unique(t), np.unique(p))
    else:
        classes = np.asarray(labels)
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError("labels must be a non-empty 1-D sequence")
    f1s = []
    for c in classes:
        is_true = t == c
        is_pred = p == c
        tp = int(np.sum(is_true & is_pred))
        fp = int(np.sum(~is_true & is_pred))
        fn = int(np.sum(is_true & ~is_pred))
        denom = 2 * tp + fp + fn
        # F1 = 2TP / (2TP + FP + FN), identical to 2PR/(P+R) but defined
        # even when precision or recall has a zero denominator.
        f1s.append(2 * tp / denom if denom else 0.0)
    return np.asarray(f1s, dtype=float)


def auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC for binary labels (0/1 or bool) via the Mann-Whitney U statistic.

    Tied scores get the average of the ranks they span, which counts each
    tied positive/negative pair as half a correct ordering.
    """
    t, s = _as_pair(y_true, scores, "y_true", "scores")
    if not np.isin(t, [0, 1]).all():
        raise ValueError("auc needs binary labels: y_true must contain only 0/1")
    pos = t.astype(bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive" if n_neg == 0 else "negative"
        raise ValueError(
            f"auc is undefined when only one class is present (all {only})"
        )
    s = s.astype(np.float64)
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    # Each run of equal scores is one tie block; its members share the mean
    # of the 1-based ranks start+1 .. end.
    starts_mask = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    starts = np.flatnonzero(starts_mask)
    ends = np.r_[starts[1:], s.size]
    block_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = block_rank[np.cumsum(starts_mask) - 1]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# --------------------------------------------------------------------------
# Ranking (single query)
# --------------------------------------------------------------------------


def ndcg_at_k(scores: ArrayLike, grades: ArrayLike, k: int = 10) -> float:
    """nDCG@k for one query, with exponential gain ``2**grade - 1``.

    Items are ranked by score descending; the ideal ranking sorts grades
    descending. Returns nan when the ideal DCG is 0 (no relevant item),
    because such a query says nothing about ranking quality and averaging it
    in as 0 or 1 would bias the mean.
    """
    s, g = _as_pair(scores, grades, "scores", "grades")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    gains = np.power(2.0, g.astype(np.float64)) - 1.0
    top = min(k, gains.size)
    # Rank r (1-based) is discounted by log2(r + 1).
    discounts = np.log2(np.arange(2, top + 2, dtype=np.float64))
    ideal = np.sort(gains)[::-1][:top]
    idcg = float(np.sum(ideal / discounts))
    if idcg == 0.0:
        return float("nan")
    dcg = float(np.sum(gains[_rank_order(s)][:top] / discounts))
    return dcg / idcg


def mrr(scores: ArrayLike, grades: ArrayLike, min_grade: float = 1) -> float:
    """Reciprocal rank of the first item with ``grade >= min_grade``; nan if none."""
    s, g = _as_pair(scores, grades, "scores", "grades")
    hits = np.flatnonzero(g[_rank_order(s)] >= min_grade)
    if hits.size == 0:
        return float("nan")
    return 1.0 / (int(hits[0]) + 1)


def grouped_mean(
    metric: Callable[..., float],
    groups: Sequence[Hashable] | np.ndarray,
    scores: ArrayLike,
    grades: ArrayLike,
    **kw: Any,
) -> tuple[float, int]:
    """Apply a per-query ``metric(scores, grades, **kw)`` to each group.

    Groups may be any hashable ids and rows may come in any order; within a
    group rows keep their input order, which is what breaks score ties.
    Returns (mean over groups whose value is not nan, number of such groups);
    (nan, 0) when no group yields a value.
    """
    values = list(grouped_values(metric, groups, scores, grades, **kw).values())
    if not values:
        return float("nan"), 0
    return float(np.mean(values)), len(values)


def grouped_values(
    metric: Callable[..., float],
    groups: Sequence[Hashable] | np.ndarray,
    scores: ArrayLike,
    grades: ArrayLike,
    **kw: Any,
) -> dict[Hashable, float]:
    """``metric`` per group, as `grouped_mean` applies it: {group: value}, nan values left out."""
    s, g = _as_pair(scores, grades, "scores", "grades")
    # Groups stay a Python sequence: tuple ids would otherwise be turned into
    # a 2-D numpy array.
    group_list = list(groups)
    if len(group_list) != s.shape[0]:
        raise ValueError(
            f"length mismatch: groups has {len(group_list)} items, "
            f"scores/grades have {s.shape[0]}"
        )
    rows: dict[Hashable, list[int]] = {}
    for i, gid in enumerate(group_list):
        rows.setdefault(gid, []).append(i)
    values = {}
    for gid, idx in rows.items():
        value = metric(s[idx], g[idx], **kw)
        if not math.isnan(value):
            values[gid] = float(value)
    return values


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------


def classification_report(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Any] | None = None
) -> dict[str, float | int]:
    """Accuracy, macro-F1 and sample count in one dict."""
    t, p = _as_pair(y_true, y_pred, "y_true", "y_pred")
    return {
        "accuracy": accuracy(t, p),
        "macro_f1": macro_f1(t, p, labels=labels),
        "n": int(t.shape[0]),
    }


def ranking_report(
    groups: Sequence[Hashable] | np.ndarray,
    scores: ArrayLike,
    grades: ArrayLike,
    k: int = 10,
) -> dict[str, float | int]:
    """Mean nDCG@k and MRR over queries, plus the number of queries counted.

    ``n_queries`` counts queries with a defined nDCG (at least one item with
    positive grade). For integer grades >= 0 that is the same set MRR (with
    ``min_grade=1``) averages over.
    """
    ndcg, n_queries = grouped_mean(ndcg_at_k, groups, scores, grades, k=k)
    mean_rr, _ = grouped_mean(mrr, groups, scores, grades)
    return {f"ndcg@{k}": ndcg, "mrr": mean_rr, "n_queries": n_queries}
