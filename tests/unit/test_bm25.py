"""Unit tests for core.bm25."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.bm25 import BM25, tokenize

# N = 3, lengths 2, 4, 3 -> avgdl = 3
DOCS = [
    "Red shoes",  # d0: red=1 shoes=1, |d|=2
    "blue shoes for running",  # d1: shoes=1, |d|=4
    "red red hat",  # d2: red=2, |d|=3
]


def test_tokenize():
    assert tokenize("Red SHOES, size-42!") == ["red", "shoes", "size", "42"]
    assert tokenize("  __ ..  ") == []
    assert tokenize("Größe: ÉTÉ_collection 東京") == ["größe", "été", "collection", "東京"]


def test_hand_computed_scores():
    # k1 = 1.5, b = 0.75, avgdl = 3
    # "red" and "shoes" both have df = 2:
    #   idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6)
    # term weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))
    # d0 red   tf=1 |d|=2: norm = 0.25 + 0.75*2/3 = 0.75 -> 2.5 / (1 + 1.125) = 20/17
    # d0 shoes tf=1 |d|=2: same                                              = 20/17
    # d1 shoes tf=1 |d|=4: norm = 0.25 + 0.75*4/3 = 1.25 -> 2.5 / (1 + 1.875) = 20/23
    # d2 red   tf=2 |d|=3: norm = 1                      -> 5.0 / (2 + 1.5)   = 10/7
    bm = BM25(DOCS)
    idf = math.log(1.6)
    expected = [idf * 40 / 17, idf * 20 / 23, idf * 10 / 7]
    np.testing.assert_allclose(bm.score("red shoes"), expected, rtol=1e-12)
    # tokenisation applies to queries too
    np.testing.assert_allclose(bm.score("RED, Shoes!"), expected, rtol=1e-12)
    # "hat": df = 1 -> idf = ln(1 + 2.5/1.5) = ln(8/3); d2 tf=1 norm=1 -> 2.5/2.5 = 1
    np.testing.assert_allclose(bm.score("hat"), [0, 0, math.log(8 / 3)], rtol=1e-12)
    assert bm.idf["red"] == pytest.approx(idf)


def test_doc_with_term_outranks_doc_without():
    bm = BM25(DOCS)
    scores = bm.score("blue")
    assert scores[1] > 0
    assert scores[1] > scores[0] and scores[1] > scores[2]


def test_length_normalisation():
    bm = BM25(["leather boots", "leather boots with laces and a buckle", "wool hat"])
    short, long_, _ = bm.score("boots")
    assert short > long_ > 0


def test_b_zero_disables_length_normalisation():
    bm = BM25(["leather boots", "leather boots with laces and a buckle", "wool hat"], b=0.0)
    short, long_, _ = bm.score("boots")
    assert short == pytest.approx(long_)


def test_unknown_term_gives_zeros():
    bm = BM25(DOCS)
    np.testing.assert_array_equal(bm.score("umbrella"), np.zeros(3))
    np.testing.assert_array_equal(bm.score(""), np.zeros(3))
    np.testing.assert_array_equal(bm.score("umbrella", doc_indices=[2, 0]), np.zeros(2))


def test_doc_indices_subset_matches_full_scoring():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(50)]
    docs = [" ".join(rng.choice(vocab, size=rng.integers(0, 20))) for _ in range(200)]
    bm = BM25(docs)
    for _ in range(20):
        query = " ".join(rng.choice(vocab, size=3))
        full = bm.score(query)
        idx = rng.choice(200, size=40, replace=False)
        np.testing.assert_allclose(bm.score(query, doc_indices=idx), full[idx], rtol=1e-12)
        # duplicates and list input are fine too
        idx_list = [5, 5, 0, 199]
        np.testing.assert_allclose(bm.score(query, doc_indices=idx_list), full[idx_list])


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least one document"):
        BM25([])
    bm = BM25(DOCS)
    with pytest.raises(ValueError, match="doc_indices"):
        bm.score("red", doc_indices=[3])
    with pytest.raises(ValueError, match="doc_indices"):
        bm.score("red", doc_indices=[-1])
    assert bm.score("red", doc_indices=[]).shape == (0,)
