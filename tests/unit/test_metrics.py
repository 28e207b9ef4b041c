"""Unit tests for core.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.metrics import (
    accuracy,
    auc,
    classification_report,
    grouped_mean,
    macro_f1,
    mrr,
    ndcg_at_k,
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
