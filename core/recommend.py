"""Recommendation scoring and its honest evaluation. Pure numpy/pandas, no Ray, no torch.

Every scorer ranks the whole catalog for a user from their history (item indices, oldest first):
no sampled negatives. The baselines a recommender must beat live here beside the metrics:
  popularity  training interaction counts;
  repeat      the user's own most bought items (recency breaks ties), then popularity;
  item-knn    item-to-item co-occurrence (cosine over user-item incidence), summed over the user's
              recent items with recency decay.
The model scorer (core.rec_model) plugs into the same `evaluate`.

Targets are reported on three slices: all of them, the items new to the user (never in their
history), and cold-start items (fewer than `cold_max` training interactions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

K = 10


@dataclass
class Catalog:
    """Item ids in a fixed order; every scorer returns one score per position."""
    ids: list[str]

    def __post_init__(self):
        self.index = {item: i for i, item in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, items: Sequence[str]) -> list[int]:
        return [self.index[i] for i in items if i in self.index]


def train_counts(catalog: Catalog, train: pd.DataFrame) -> np.ndarray:
    counts = np.zeros(len(catalog), dtype=np.float64)
    idx = train["item_id"].map(catalog.index).dropna().astype(int).to_numpy()
    np.add.at(counts, idx, 1.0)
    return counts


Scorer = Callable[[list[list[int]]], np.ndarray]
"""A batch of histories (item indices, oldest first) -> scores of shape (batch, catalog)."""


def popularity_scorer(counts: np.ndarray) -> Scorer:
    pop = np.log1p(counts)

    def score(hists):
        return np.tile(pop, (len(hists), 1))
    return score


def repeat_scorer(counts: np.ndarray) -> Scorer:
    """The user's own purchases by count, ties to the more recent; unseen items by popularity below them."""
    pop = np.log1p(counts) / (np.log1p(counts).max() + 1.0)   # < 1: below any bought item

    def score(hists):
        out = np.tile(pop, (len(hists), 1))
        for row, h in enumerate(hists):
            n = len(h)
            last = {}
            for pos, item in enumerate(h):
                out[row, item] += 1.0
                last[item] = pos
            for item, pos in last.items():
                out[row, item] += 0.5 * (pos + 1) / (n + 1)
        return out
    return score


def cooccurrence(catalog: Catalog, train: pd.DataFrame) -> sp.csr_matrix:
    """Item-item cosine similarity from user-item incidence, diagonal zeroed."""
    users = train["user_id"].astype("category").cat.codes.to_numpy()
    items = train["item_id"].map(catalog.index).to_numpy()
    ok = ~pd.isna(items)
    m = sp.csr_matrix((np.ones(ok.sum()), (users[ok], items[ok].astype(int))),
                      shape=(users.max() + 1 if len(users) else 0, len(catalog)))
    m.data[:] = 1.0
    m.sum_duplicates()
    m.data[:] = 1.0
    sim = (m.T @ m).tocsr().astype(np.float64)
    norms = np.sqrt(np.asarray(m.sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    inv = sp.diags(1.0 / norms)
    sim = (inv @ sim @ inv).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim


def item_knn_scorer(sim: sp.csr_matrix, counts: np.ndarray, recent: int = 20, decay: float = 0.8) -> Scorer:
    """Sum of the recent items' similarity rows, the newest weighted most; popularity breaks ties."""
    tie = np.log1p(counts) / (np.log1p(counts).max() + 1.0) * 1e-6

    def score(hists):
        out = np.tile(tie, (len(hists), 1))
        for row, h in enumerate(hists):
            h = h[-recent:]
            if not h:
                continue
            w = decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float64)
            out[row] += np.asarray(sim[h].T @ w).ravel()
        return out
    return score


def ranks_of(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target in the full catalog (ties counted pessimistically: half)."""
    t = scores[np.arange(len(targets)), targets][:, None]
    higher = (scores > t).sum(axis=1)
    ties = (scores == t).sum(axis=1) - 1
    return higher + ties // 2


def rank_metrics(ranks: np.ndarray, k: int = K) -> dict[str, float]:
    if len(ranks) == 0:
        return {"n": 0, f"hr@{k}": float("nan"), f"ndcg@{k}": float("nan"), "mrr": float("nan")}
    hit = ranks < k
    return {"n": int(len(ranks)),
            f"hr@{k}": float(hit.mean()),
            f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
            "mrr": float((1.0 / (ranks + 1.0)).mean())}


@dataclass
class EvalSet:
    """Targets with the history each is predicted from, and the slices they belong to."""
    histories: list[list[int]]
    targets: np.ndarray
    new_to_user: np.ndarray
    cold: np.ndarray
    users: list[str]


def eval_set(catalog: Catalog, history: pd.DataFrame, targets: pd.DataFrame, counts: np.ndarray,
             cold_max: int = 5, max_history: int = 50) -> EvalSet:
    """One row per target interaction (whose item is in the catalog); its history is the user's
    `history` interactions (the last `max_history`)."""
    hist = {u: catalog.encode(s.tolist()) for u, s in history.groupby("user_id", sort=False)["item_id"]}
    hs, ts, new, cold, users = [], [], [], [], []
    for user, item in zip(targets["user_id"], targets["item_id"]):
        if item not in catalog.index:
            continue
        h = hist.get(user, [])
        t = catalog.index[item]
        hs.append(h[-max_history:])
        ts.append(t)
        new.append(t not in set(h))
        cold.append(counts[t] < cold_max)
        users.append(user)
    return EvalSet(hs, np.asarray(ts, dtype=np.int64), np.asarray(new, bool), np.asarray(cold, bool), users)


def evaluate(scorer: Scorer, es: EvalSet, batch: int = 256, k: int = K) -> dict[str, dict[str, float]]:
    ranks = np.empty(len(es.targets), dtype=np.int64)
    for start in range(0, len(es.targets), batch):
        sl = slice(start, start + batch)
        ranks[sl] = ranks_of(scorer(es.histories[sl]), es.targets[sl])
    return {"all": rank_metrics(ranks, k), "new": rank_metrics(ranks[es.new_to_user], k),
            "cold": rank_metrics(ranks[es.cold], k)}


def embedding_scorer(vectors: np.ndarray, recent: int = 20, decay: float = 0.8) -> Scorer:
    """Zero-shot: cosine between each item's (L2-normalised) vector and the recency-weighted mean of
    the user's recent items' vectors."""
    vectors = np.asarray(vectors, dtype=np.float32)

    def score(hists):
        users = np.zeros((len(hists), vectors.shape[1]), dtype=np.float32)
        for row, h in enumerate(hists):
            h = h[-recent:]
            if h:
                w = decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
                users[row] = w @ vectors[h]
        return users @ vectors.T
    return score


def training_examples(train: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-item examples from training histories ordered by user and time: (item index of every
    row, the row's user start, positions of the rows that are targets: every row but a user's first)."""
    idx = train["item_id"].map(catalog.index).to_numpy()
    if pd.isna(idx).any():
        raise ValueError("training interactions name items outside the catalog")
    idx = idx.astype(np.int64)
    users = train["user_id"].to_numpy()
    if len(users) == 0:
        return idx, np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    ends = np.r_[starts[1:], len(users)]
    user_start = np.repeat(starts, ends - starts)
    targets = np.flatnonzero(np.arange(len(users)) != user_start)
    return idx, user_start, targets


def histories_at(idx: np.ndarray, user_start: np.ndarray, positions: np.ndarray, length: int) -> list[np.ndarray]:
    """The `length` items before each position, within its user's history."""
    return [idx[max(user_start[p], p - length):p] for p in positions]
