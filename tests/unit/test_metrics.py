"""Unit tests for core.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from core.metrics import (
    accuracy,
    auc,
    classification_report,
    grouped_mean,
    macro_f1,
    mrr,
    ndcg_at_k,
    per_class_f1,
    ranking_report,
)

# 3-class example shared by the classification tests.
#   idx:    0  1  2  3  4  5
#   y_true: 0  0  1  1  2  2
#   y_pred: 0  1  1  1  2  0
# class 0: TP=1 (i0) FP=1 (i5) FN=1 (i1) -> F1 = 2*1/(2+1+1) = 1/2
# class 1: TP=2 (i2,i3) FP=1 (i1) FN=0   -> F1 = 2*2/(4+1+0) = 4/5
# class 2: TP=1 (i4) FP=0 FN=1 (i5)      -> F1 = 2*1/(2+0+1) = 2/3
# macro = (1/2 + 4/5 + 2/3) / 3 = (15 + 24 + 20) / 30 / 3 = 59/90
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


# ---------------------------------------------------------------- accuracy


def test_accuracy_hand_computed():
    # matches at i0, i2, i3, i4 -> 4/6
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert accuracy(np.array(Y_TRUE), np.array(Y_PRED)) == pytest.approx(4 / 6)


def test_accuracy_strings_and_perfect():
    assert accuracy(["a", "b"], ["a", "b"]) == 1.0
    assert accuracy(["a", "b"], ["b", "a"]) == 0.0


def test_accuracy_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="length mismatch"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


# ---------------------------------------------------------------- macro_f1


def test_macro_f1_three_classes():
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(59 / 90)


def test_macro_f1_string_labels():
    names = np.array(["boots", "hats", "socks"])
    assert macro_f1(names[Y_TRUE], list(names[Y_PRED])) == pytest.approx(59 / 90)


def test_macro_f1_explicit_absent_label_counts_zero():
    # class 3 never occurs: F1 = 0 -> (1/2 + 4/5 + 2/3 + 0) / 4 = 59/120
    assert macro_f1(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3]) == pytest.approx(59 / 120)


def test_macro_f1_explicit_subset():
    # only classes 0 and 1: (1/2 + 4/5) / 2 = 0.65
    assert macro_f1(Y_TRUE, Y_PRED, labels=[0, 1]) == pytest.approx(0.65)


def test_macro_f1_class_only_in_predictions():
    # y_true=[0,0], y_pred=[0,1]; default labels = {0, 1}
    # class 0: TP=1 FP=0 FN=1 -> 2/3; class 1: TP=0 FP=1 FN=0 -> 0
    # macro = (2/3 + 0) / 2 = 1/3
    assert macro_f1([0, 0], [0, 1]) == pytest.approx(1 / 3)


def test_macro_f1_perfect_and_errors():
    assert macro_f1(Y_TRUE, Y_TRUE) == 1.0
    with pytest.raises(ValueError, match="length mismatch"):
        macro_f1([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        macro_f1([], [])
    with pytest.raises(ValueError, match="labels"):
        macro_f1([0], [0], labels=[])


# ---------------------------------------------------------------- ndcg


def test_ndcg_three_items_hand_computed():
    # scores [0.9, 0.2, 0.5] rank items as i0, i2, i1 -> grades 1, 0, 3
    # gains 2^g - 1:                                      1, 0, 7
    # DCG  = 1/log2(2) + 0/log2(3) + 7/log2(4) = 1 + 0 + 3.5 = 4.5
    # IDCG (grades 3, 1, 0) = 7/1 + 1/log2(3) + 0 = 7.6309...
    # nDCG = 4.5 / 7.6309 = 0.58971
    expected = 4.5 / (7 + 1 / math.log2(3))
    assert ndcg_at_k([0.9, 0.2, 0.5], [1, 3, 0], k=10) == pytest.approx(expected)
    assert expected == pytest.approx(0.58971, abs=1e-5)


def test_ndcg_cutoff_k():
    # same query, k=2: DCG@2 = 1 + 0 = 1; IDCG@2 = 7 + 1/log2(3)
    expected = 1 / (7 + 1 / math.log2(3))
    assert ndcg_at_k([0.9, 0.2, 0.5], [1, 3, 0], k=2) == pytest.approx(expected)
    # k=1: top item has gain 1, ideal top has gain 7 -> 1/7
    assert ndcg_at_k([0.9, 0.2, 0.5], [1, 3, 0], k=1) == pytest.approx(1 / 7)


def test_ndcg_ties_are_stable_by_index():
    # scores [1, 1, 0]: tie between i0 and i1 keeps index order -> grades 0, 2, 0
    # DCG = 0 + 3/log2(3) ; IDCG = 3/1 -> nDCG = 1/log2(3) = 0.63093
    assert ndcg_at_k([1, 1, 0], [0, 2, 0]) == pytest.approx(1 / math.log2(3))


def test_ndcg_perfect_ranking_is_one():
    assert ndcg_at_k([3.0, 2.0, 1.0, 0.0], [3, 2, 1, 0]) == pytest.approx(1.0)
    # ordering among zero-grade items does not matter
    assert ndcg_at_k([5, 4, 1, 2], [2, 1, 0, 0], k=3) == pytest.approx(1.0)


def test_ndcg_nan_without_relevant_item():
    assert math.isnan(ndcg_at_k([0.3, 0.2], [0, 0]))


def test_ndcg_errors():
    with pytest.raises(ValueError, match="length mismatch"):
        ndcg_at_k([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        ndcg_at_k([], [])
    with pytest.raises(ValueError, match="k must"):
        ndcg_at_k([1], [1], k=0)


def _ndcg_brute_force(scores, grades, k):
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    dcg = sum((2 ** grades[i] - 1) / math.log2(r + 2) for r, i in enumerate(ranked[:k]))
    ideal = sorted(grades, reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    return float("nan") if idcg == 0 else dcg / idcg


def test_ndcg_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        # coarse scores so ties are common
        scores = rng.integers(0, 5, size=n).astype(float).tolist()
        grades = rng.integers(0, 4, size=n).tolist()
        k = int(rng.integers(1, 15))
        got = ndcg_at_k(scores, grades, k=k)
        want = _ndcg_brute_force(scores, grades, k)
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- mrr


def test_mrr_hand_computed():
    # scores [0.1, 0.8, 0.5, 0.3] rank i1, i2, i3, i0 -> grades 0, 0, 1, 2
    # min_grade=1: first hit at rank 3 -> 1/3 ; min_grade=2: rank 4 -> 1/4
    scores, grades = [0.1, 0.8, 0.5, 0.3], [2, 0, 0, 1]
    assert mrr(scores, grades) == pytest.approx(1 / 3)
    assert mrr(scores, grades, min_grade=2) == pytest.approx(1 / 4)


def test_mrr_ties_perfect_and_nan():
    # tie on score: i0 (grade 0) stays ahead of i1 (grade 1) -> rank 2
    assert mrr([1.0, 1.0], [0, 1]) == pytest.approx(1 / 2)
    assert mrr([0.9, 0.1], [1, 0]) == 1.0
    assert math.isnan(mrr([0.9, 0.1], [0, 0]))
    with pytest.raises(ValueError, match="length mismatch"):
        mrr([1.0], [0, 1])


# ---------------------------------------------------------------- auc


def test_auc_with_ties_hand_computed():
    # y:      0    0    1    1    0    1
    # score: 0.1  0.4  0.4  0.8  0.3  0.3
    # sorted: 0.1(n)=1 | 0.3(n,p)=2,3 -> 2.5 | 0.4(n,p)=4,5 -> 4.5 | 0.8(p)=6
    # R_pos = 2.5 + 4.5 + 6 = 13 ; U = 13 - 3*4/2 = 7 ; AUC = 7 / (3*3) = 7/9
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.4, 0.8, 0.3, 0.3]
    assert auc(y, s) == pytest.approx(7 / 9)
    assert auc(np.array(y, dtype=bool), np.array(s)) == pytest.approx(7 / 9)


def test_auc_perfect_inverted_and_all_tied():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_auc_matches_pair_counting_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, size=n)
        y[0], y[1] = 0, 1  # both classes present
        s = rng.integers(0, 6, size=n).astype(float)
        pos, neg = s[y == 1], s[y == 0]
        wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
        assert auc(y, s) == pytest.approx(wins / (len(pos) * len(neg)))


def test_auc_errors():
    with pytest.raises(ValueError, match="only one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        auc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="binary"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="length mismatch"):
        auc([0, 1], [0.1])


# ---------------------------------------------------------------- grouped


# Interleaved rows of three queries:
#   q1: scores [0.9, 0.2], grades [1, 0] -> relevant item first: nDCG 1, RR 1
#   q2: scores [0.1, 0.7], grades [1, 0] -> relevant item second:
#       nDCG = (1/log2(3)) / 1 = 0.63093, RR = 1/2
#   q3: all grades 0 -> nan for both, excluded
GROUPS = ["q2", "q1", "q3", "q2", "q1", "q3"]
SCORES = [0.1, 0.9, 0.5, 0.7, 0.2, 0.4]
GRADES = [1, 1, 0, 0, 0, 0]


def test_grouped_mean_hand_computed():
    mean, n = grouped_mean(ndcg_at_k, GROUPS, SCORES, GRADES, k=10)
    assert n == 2
    assert mean == pytest.approx((1 + 1 / math.log2(3)) / 2)
    mean, n = grouped_mean(mrr, np.array(GROUPS), np.array(SCORES), GRADES)
    assert (mean, n) == (pytest.approx((1 + 1 / 2) / 2), 2)


def test_grouped_mean_tuple_and_int_group_ids():
    tuple_ids = [("s", 2), ("s", 1), ("s", 3), ("s", 2), ("s", 1), ("s", 3)]
    mean, n = grouped_mean(mrr, tuple_ids, SCORES, GRADES)
    assert (mean, n) == (pytest.approx(0.75), 2)
    int_ids = [2, 1, 3, 2, 1, 3]
    assert grouped_mean(mrr, int_ids, SCORES, GRADES) == (pytest.approx(0.75), 2)


def test_grouped_mean_all_nan_and_errors():
    mean, n = grouped_mean(mrr, ["a", "a"], [0.1, 0.2], [0, 0])
    assert math.isnan(mean) and n == 0
    with pytest.raises(ValueError, match="length mismatch"):
        grouped_mean(mrr, ["a"], [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        grouped_mean(mrr, ["a", "a"], [0.1, 0.2], [0])


# ---------------------------------------------------------------- reports


def test_classification_report():
    report = classification_report(Y_TRUE, Y_PRED)
    assert report == {
        "accuracy": pytest.approx(4 / 6),
        "macro_f1": pytest.approx(59 / 90),
        "n": 6,
    }
    assert classification_report(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3])[
        "macro_f1"
    ] == pytest.approx(59 / 120)


def test_ranking_report():
    report = ranking_report(GROUPS, SCORES, GRADES, k=5)
    assert report == {
        "ndcg@5": pytest.approx((1 + 1 / math.log2(3)) / 2),
        "mrr": pytest.approx(0.75),
        "n_queries": 2,
    }
    # k=1: q1 nDCG@1 = 1, q2 nDCG@1 = 0 (top item has grade 0) -> 0.5
    assert ranking_report(GROUPS, SCORES, GRADES, k=1)["ndcg@1"] == pytest.approx(0.5)


# ---------------------------------------------------------------- cross-checks with scikit-learn
# The metrics above are hand-written; here they are compared with scikit-learn's on many random
# inputs (several seeds, sizes, class and group counts, cut-offs). sklearn's ndcg_score uses the
# gain it is given (linear by default), so it gets the project's exponential gains 2**grade - 1 as
# y_true. Its tie handling differs by design: by default it averages over tied scores, while
# core.metrics ranks ties by input order; so the comparison hands sklearn scores whose order is
# the project's stable order (ties broken by position), and a separate check uses tie-free scores.


SEEDS = [0, 1, 2, 3, 4]


def _stable_scores(scores: np.ndarray) -> np.ndarray:
    """Distinct scores with the order core.metrics ranks ``scores`` in (descending, ties by index)."""
    order = np.argsort(-scores, kind="stable")
    out = np.empty(len(scores))
    out[order] = np.arange(len(scores), 0, -1, dtype=float)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_macro_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):  # sklearn's f1_score costs ~4 ms a call
        n = int(rng.integers(1, 120))
        n_classes = int(rng.integers(1, 8))
        y_true = rng.integers(0, n_classes, size=n)
        # some predictions right, some random, some of a class absent from y_true
        y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, n_classes + 1, size=n))
        assert accuracy(y_true, y_pred) == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred), abs=1e-12)
        want = sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred) == pytest.approx(want, abs=1e-12)
        # explicit label lists: a superset with a class absent from both, and a subset
        labels = list(range(n_classes + 2))
        want = sklearn_metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred, labels=labels) == pytest.approx(want, abs=1e-12)
        subset = sorted(set(rng.choice(n_classes + 1, size=max(1, n_classes // 2), replace=False).tolist()))
        want = sklearn_metrics.f1_score(y_true, y_pred, labels=subset, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred, labels=subset) == pytest.approx(want, abs=1e-12)
        # string labels, as the tasks' label names
        names = np.array([f"c{i}" for i in range(n_classes + 1)])
        want = sklearn_metrics.f1_score(names[y_true], names[y_pred], average="macro", zero_division=0)
        assert macro_f1(names[y_true], names[y_pred]) == pytest.approx(want, abs=1e-12)
        # each class's F1, which the macro mean is made of
        want = sklearn_metrics.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        assert per_class_f1(y_true, y_pred, labels=labels) == pytest.approx(want, abs=1e-12)


def _random_query(rng, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    grades = rng.integers(0, 3, size=n)
    if not grades.any():
        grades[int(rng.integers(n))] = int(rng.integers(1, 3))
    scores = rng.integers(0, 4, size=n).astype(float) if ties else rng.random(n)
    return scores, grades


@pytest.mark.parametrize("seed", SEEDS)
def test_ndcg_matches_sklearn_with_exponential_gains(seed):
    rng = np.random.default_rng(seed)
    for trial in range(300):
        n = int(rng.integers(2, 60))  # sklearn needs more than one document
        ties = trial % 2 == 0
        scores, grades = _random_query(rng, n, ties)
        k = int(rng.integers(1, n + 5))
        gains = (2.0 ** grades - 1)[None, :]
        got = ndcg_at_k(scores, grades, k=k)
        want = sklearn_metrics.ndcg_score(gains, _stable_scores(scores)[None, :], k=k, ignore_ties=True)
        assert got == pytest.approx(want, abs=1e-12)
        if not ties:  # no tie to break: sklearn's own tie-averaging path agrees too
            want = sklearn_metrics.ndcg_score(gains, scores[None, :], k=k)
            assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_grouped_ndcg_matches_sklearn_mean_over_queries(seed):
    """ranking_report over a shuffled flat table of many queries of different sizes = the mean of
    sklearn's per-query nDCG over the queries with a relevant item (the others are nan, left out)."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        n_groups = int(rng.integers(1, 40))
        k = int(rng.choice([1, 3, 5, 10, 20]))
        rows, want, want_rr = [], [], []
        for q in range(n_groups):
            n = int(rng.integers(2, 30))
            scores, grades = rng.random(n), rng.integers(0, 3, size=n)
            if rng.random() < 0.2:
                grades[:] = 0  # a query without a relevant item
            rows += [(f"q{q}", s, g) for s, g in zip(scores, grades)]
            if grades.any():
                want.append(sklearn_metrics.ndcg_score((2.0 ** grades - 1)[None, :], scores[None, :], k=k))
                want_rr.append(_mrr_reference(scores, grades, 1))
        order = rng.permutation(len(rows))
        groups, scores, grades = (list(col) for col in zip(*(rows[i] for i in order)))
        report = ranking_report(groups, np.array(scores), np.array(grades), k=k)
        assert report["n_queries"] == len(want)
        if want:
            assert report[f"ndcg@{k}"] == pytest.approx(np.mean(want), abs=1e-12)
            assert report["mrr"] == pytest.approx(np.mean(want_rr), abs=1e-12)
        else:
            assert math.isnan(report[f"ndcg@{k}"]) and math.isnan(report["mrr"])


def _mrr_reference(scores, grades, min_grade):
    """Walk the ranking (score descending, ties by input position) to the first relevant item."""
    ranked = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    for rank, i in enumerate(ranked, start=1):
        if grades[i] >= min_grade:
            return 1.0 / rank
    return float("nan")


@pytest.mark.parametrize("seed", SEEDS)
def test_mrr_matches_a_reference_and_sklearn_lrap(seed):
    rng = np.random.default_rng(200 + seed)
    for trial in range(300):
        n = int(rng.integers(1, 50))
        scores, grades = _random_query(rng, n, ties=trial % 2 == 0)
        for min_grade in (1, 2):
            want = _mrr_reference(scores, grades, min_grade)
            got = mrr(scores, grades, min_grade=min_grade)
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-15)
        # With exactly one relevant item and no ties, label ranking average precision is the
        # reciprocal rank of that item.
        if n >= 2:
            one = np.zeros(n, dtype=int)
            one[int(rng.integers(n))] = 1
            distinct = rng.permutation(n).astype(float)
            want = sklearn_metrics.label_ranking_average_precision_score(one[None, :], distinct[None, :])
            assert mrr(distinct, one) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_matches_sklearn(seed):
    rng = np.random.default_rng(300 + seed)
    for trial in range(200):
        n = int(rng.integers(2, 200))
        y = rng.integers(0, 2, size=n)
        y[:2] = (0, 1)
        s = rng.integers(0, 5, size=n).astype(float) if trial % 2 else rng.random(n)
        assert auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
