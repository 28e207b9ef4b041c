"""Baselines a fine-tuned adapter must beat, computed on the same examples in the same run.

- majority class (sentiment, intent): what a model learns if it learns nothing;
- nearest centroid on frozen MiniLM embeddings (intent): what the backbone knows without LoRA;
- BM25 (relevance): plain lexical search, the default of most shop search engines;
- zero-shot bi-encoder cosine (relevance): frozen MiniLM query/product embeddings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from core import metrics as M
from core.bm25 import BM25
from core.modeling import embed, load_backbone, load_tokenizer
from core.tasks import Task
from core.training import label_indices


def majority(train: pd.DataFrame, test: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    top = train["label"].astype(str).value_counts().idxmax()
    y_true = label_indices(labels, test["label"].astype(str))
    y_pred = np.full(len(test), labels.index(top))
    return M.classification_report(y_true, y_pred, labels=list(range(len(labels))))


def nearest_centroid(task: Task, train: pd.DataFrame, test: pd.DataFrame, labels: Sequence[str],
                     backbone_name: str, max_length: int) -> dict[str, float]:
    backbone, tokenizer = load_backbone(backbone_name), load_tokenizer(backbone_name)
    train_emb = embed(backbone, tokenizer, task.to_inputs(train), max_length)
    test_emb = embed(backbone, tokenizer, task.to_inputs(test), max_length)
    y_train = label_indices(labels, train["label"].astype(str))
    centroids = np.stack([train_emb[y_train == k].mean(axis=0) if (y_train == k).any()
                          else np.zeros(train_emb.shape[1]) for k in range(len(labels))])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)
    y_pred = (test_emb @ centroids.T).argmax(axis=1)
    y_true = label_indices(labels, test["label"].astype(str))
    return M.classification_report(y_true, y_pred, labels=list(range(len(labels))))


def bm25(test: pd.DataFrame, corpus: Sequence[str]) -> dict[str, float]:
    """BM25 over the catalog's product texts (idf from the whole catalog), ranking each query's pool."""
    index = BM25(list(corpus))
    position = {text: i for i, text in enumerate(corpus)}
    scores = np.zeros(len(test))
    for _, rows in test.groupby("query_id", sort=False):
        docs = [position[t] for t in rows["product_text"]]
        scores[test.index.get_indexer(rows.index)] = index.score(rows["query"].iloc[0], docs)
    return M.ranking_report(test["query_id"].tolist(), scores, _grades(test), k=10)


def zero_shot_cosine(test: pd.DataFrame, backbone_name: str, max_length: int) -> dict[str, float]:
    backbone, tokenizer = load_backbone(backbone_name), load_tokenizer(backbone_name)
    queries = test["query"].astype(str).unique().tolist()
    products = test["product_text"].astype(str).unique().tolist()
    q = dict(zip(queries, embed(backbone, tokenizer, queries, max_length)))
    p = dict(zip(products, embed(backbone, tokenizer, products, max_length)))
    scores = np.array([float(q[a] @ p[b]) for a, b in zip(test["query"], test["product_text"])])
    return M.ranking_report(test["query_id"].tolist(), scores, _grades(test), k=10)


def _grades(test: pd.DataFrame) -> np.ndarray:
    from core.tasks import GRADES

    return np.array([GRADES.index(g) for g in test["label"].astype(str)], dtype=float)


def for_task(task: Task, train: pd.DataFrame, test: pd.DataFrame, labels: Sequence[str], backbone: str,
             max_length: int, corpus: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """name -> metrics of every baseline that fits the task."""
    out: dict[str, dict[str, float]] = {}
    if task.head == "classification":
        out["majority"] = majority(train, test, labels)
        if task.name != "sentiment":  # centroids of 3 broad sentiment classes say little; keep runs short
            out["nearest_centroid"] = nearest_centroid(task, train, test, labels, backbone, max_length)
    else:
        out["bm25"] = bm25(test, corpus if corpus is not None else test["product_text"].unique().tolist())
        out["zero_shot_cosine"] = zero_shot_cosine(test, backbone, max_length)
    return out
