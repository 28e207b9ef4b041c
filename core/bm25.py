"""Okapi BM25: a lexical relevance baseline for product search ranking.

Tokenisation is deliberately plain (lowercase, split on non-alphanumerics,
no stemming), matching what shops' default search engines do out of the box,
so the baseline reflects what a learned ranker has to beat in practice. A
stemmed or synonym-expanded BM25 would be a stronger baseline; note that when
reporting gains over it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["tokenize", "BM25"]

# \w is unicode aware for str patterns; excluding "_" leaves letters and
# digits in any script.
_TOKEN_RE = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into alphanumeric tokens (unicode aware)."""
    return _TOKEN_RE.findall(text.lower())


class BM25:
    """Okapi BM25 over a fixed corpus, with Lucene's always-positive idf.

    score(d, q) = sum over query tokens t of
        idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

    A token repeated in the query contributes once per occurrence, as in the
    textbook sum over query terms.
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        """Index ``documents``; ``k1`` saturates tf, ``b`` sets length normalisation."""
        if len(documents) == 0:
            raise ValueError("BM25 needs at least one document")
        if k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {k1}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be in [0, 1], got {b}")
        self.k1 = float(k1)
        self.b = float(b)
        self.n_docs = len(documents)

        doc_ids: dict[str, list[int]] = {}
        tfs: dict[str, list[int]] = {}
        lengths = np.empty(self.n_docs, dtype=np.float64)
        for i, doc in enumerate(documents):
            tokens = tokenize(doc)
            lengths[i] = len(tokens)
            for term, tf in Counter(tokens).items():
                doc_ids.setdefault(term, []).append(i)
                tfs.setdefault(term, []).append(tf)
        self.doc_lengths = lengths
        # An all-empty corpus has no postings, so avgdl is never divided by;
        # 1.0 just keeps the attribute finite.
        self.avgdl = float(lengths.mean()) if lengths.sum() > 0 else 1.0

        # k1 and b are fixed per index, so each posting's full contribution
        # (idf included) is computed once here; scoring is then a gather/add.
        # Doc ids are appended in increasing order, so each posting list is
        # sorted, which score() relies on for searchsorted lookups.
        norm = self.k1 * (1.0 - self.b + self.b * lengths / self.avgdl)
        self.idf: dict[str, float] = {}
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, ids in doc_ids.items():
            ids_arr = np.asarray(ids, dtype=np.int64)
            tf_arr = np.asarray(tfs[term], dtype=np.float64)
            df = ids_arr.size
            idf = math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))
            weights = idf * tf_arr * (self.k1 + 1.0) / (tf_arr + norm[ids_arr])
            self.idf[term] = idf
            self._postings[term] = (ids_arr, weights)

    def score(self, query: str, doc_indices: Sequence[int] | None = None) -> np.ndarray:
        """BM25 scores of ``query`` for ``doc_indices`` (in that order), or all documents."""
        terms = tokenize(query)
        if doc_indices is None:
            scores = np.zeros(self.n_docs, dtype=np.float64)
            for term in terms:
                posting = self._postings.get(term)
                if posting is not None:
                    ids, weights = posting
                    # Ids are unique within a posting list, so fancy-index
                    # += does not drop repeated updates.
                    scores[ids] += weights
            return scores

        cand = np.asarray(doc_indices, dtype=np.int64).reshape(-1)
        if cand.size and (cand.min() < 0 or cand.max() >= self.n_docs):
            raise ValueError(
                f"doc_indices must lie in [0, {self.n_docs}), "
                f"got values from {cand.min()} to {cand.max()}"
            )
        scores = np.zeros(cand.size, dtype=np.float64)
        for term in terms:
            posting = self._postings.get(term)
            if posting is None:
                continue
            ids, weights = posting
            # Binary search the sorted posting list for each candidate, so a
            # few dozen candidates cost O(c log df) rather than O(N).
            pos = np.searchsorted(ids, cand)
            pos_clipped = np.minimum(pos, ids.size - 1)
            hit = ids[pos_clipped] == cand
            scores[hit] += weights[pos_clipped[hit]]
        return scores
