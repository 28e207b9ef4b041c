"""Baselines a fine-tuned adapter must beat, computed on the same examples in the same run.

- majority class (sentiment, intent): what a model learns if it learns nothing;
- nearest centroid on frozen MiniLM embeddings (intent): what the backbone knows without LoRA;
- TF-IDF + logistic regression, C and class weight tuned on val (sentiment, intent): the first thing anyone tries;
- BM25 (relevance): plain lexical search, the default of most shop search engines;
- zero-shot bi-encoder cosine (relevance): frozen MiniLM query/product embeddings;
- first stage (relevance): what search serves with no reranker, the blend of the two above
  (`core.search.blend_first_stage`, serving's lexical weight) over the same pool.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd

from core import metrics as M
from core.bm25 import BM25
from core.search import min_max_scaled
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


TFIDF_C_GRID = (0.25, 1.0, 4.0)
TFIDF_CLASS_WEIGHTS = (None, "balanced")


def tfidf_logreg(task: Task, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, labels: Sequence[str],
                 c_grid: Sequence[float] = TFIDF_C_GRID,
                 class_weights: Sequence[str | None] = TFIDF_CLASS_WEIGHTS) -> tuple[dict[str, float], dict]:
    """(metrics on `test`, the settings chosen): TF-IDF features of the text the model sees
    (`task.to_inputs`), one-vs-rest L2 logistic regression fitted on `train` for every C x class
    weight of the grid, the one with the best `task.primary_metric` on `val` (the first on ties)
    scored on `test` with the same report as the model's.

    Features: word 1-2-grams and char_wb 2-5-grams (sublinear tf, min_df 2), fitted once on train and
    reused by the whole grid. liblinear's dual solver (many more features than rows) fits each binary
    problem in seconds; sklearn's liblinear takes no multiclass problem, and one multinomial lbfgs fit
    of the sentiment split took 79 s against 5 s for the one-vs-rest fit on a busy 2-core machine.
    "balanced" weighs each row by the inverse frequency of its class among all classes (as the
    model's class-weighted loss), not within each binary problem.
    """
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    if task.head != "classification":
        raise ValueError(f"tfidf_logreg is a classifier; task {task.name} is {task.head}")
    start = time.perf_counter()
    vectorizers = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, dtype=np.float32),
    ]
    train_inputs = _texts(task, train)
    x_train = sp.hstack([v.fit_transform(train_inputs) for v in vectorizers], format="csr")

    def features(frame: pd.DataFrame):
        inputs = _texts(task, frame)
        return sp.hstack([v.transform(inputs) for v in vectorizers], format="csr")

    x_val, x_test = features(val), features(test)
    k = list(range(len(labels)))
    y_train = label_indices(labels, train["label"].astype(str))
    y_val = label_indices(labels, val["label"].astype(str))
    y_test = label_indices(labels, test["label"].astype(str))

    def fit_and_score(setting: tuple[float, str | None]) -> tuple[float, _OneVsRest]:
        model = _OneVsRest(*setting).fit(x_train, y_train, len(labels))
        return M.classification_report(y_val, model.predict(x_val), labels=k)[task.primary_metric], model

    grid = [(c, weight) for c in c_grid for weight in class_weights]
    # One fit at a time: liblinear seeds C's global rand(), so fits in parallel threads are not reproducible.
    fitted = [fit_and_score(setting) for setting in grid]
    best = max(range(len(grid)), key=lambda i: (fitted[i][0], -i))  # the first of equal scores
    (c, weight), (score, model) = grid[best], fitted[best]
    report = M.classification_report(y_test, model.predict(x_test), labels=k)
    settings = {"C": float(c), "class_weight": weight, "tuned_on": "val", f"val_{task.primary_metric}": float(score),
                "grid": {"C": [float(x) for x in c_grid], "class_weight": list(class_weights)},
                "val_scores": [{"C": float(g[0]), "class_weight": g[1], task.primary_metric: float(f[0])}
                               for g, f in zip(grid, fitted)],
                "n_features": int(x_train.shape[1]), "seconds": round(time.perf_counter() - start, 2)}
    return report, settings


class _OneVsRest:
    """One binary L2 logistic regression (liblinear, dual) per label seen in training; the highest
    decision value wins. A label training never shows is never predicted."""

    def __init__(self, c: float, class_weight: str | None):
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
        self.c, self.class_weight = c, class_weight

    def fit(self, x, y: np.ndarray, n_labels: int) -> "_OneVsRest":
        from sklearn.linear_model import LogisticRegression

        counts = np.bincount(y, minlength=n_labels)
        seen = np.flatnonzero(counts)
        self.n_labels, self.only = n_labels, int(seen[0]) if len(seen) == 1 else None
        weights = None
        if self.class_weight == "balanced":  # sklearn's n / (n_classes * count of the row's class), multiclass
            weights = len(y) / (len(seen) * counts[y].astype(np.float64))
        self.models = {} if self.only is not None else {
            int(label): LogisticRegression(C=self.c, solver="liblinear", dual=True, max_iter=1000, random_state=0)
            .fit(x, (y == label).astype(np.int64), sample_weight=weights) for label in seen}
        return self

    def predict(self, x) -> np.ndarray:
        if self.only is not None:
            return np.full(x.shape[0], self.only)
        scores = np.full((x.shape[0], self.n_labels), -np.inf)
        for label, model in self.models.items():
            scores[:, label] = model.decision_function(x)
        return scores.argmax(axis=1)


def bm25_scores(test: pd.DataFrame, corpus: Sequence[str]) -> np.ndarray:
    """BM25 over the catalog's product texts (idf from the whole catalog), scoring each query's pool."""
    index = BM25(list(corpus))
    position = {text: i for i, text in enumerate(corpus)}
    scores = np.zeros(len(test))
    for _, rows in test.groupby("query_id", sort=False):
        docs = [position[t] for t in rows["product_text"]]
        scores[test.index.get_indexer(rows.index)] = index.score(rows["query"].iloc[0], docs)
    return scores


def cosine_scores(test: pd.DataFrame, backbone_name: str, max_length: int) -> np.ndarray:
    """Zero-shot bi-encoder cosine of each (query, product) pair."""
    backbone, tokenizer = load_backbone(backbone_name), load_tokenizer(backbone_name)
    queries = test["query"].astype(str).unique().tolist()
    products = test["product_text"].astype(str).unique().tolist()
    q = dict(zip(queries, embed(backbone, tokenizer, queries, max_length)))
    p = dict(zip(products, embed(backbone, tokenizer, products, max_length)))
    return np.array([float(q[a] @ p[b]) for a, b in zip(test["query"], test["product_text"])])


def blended_scores(test: pd.DataFrame, cosine: np.ndarray, lexical: np.ndarray, lexical_weight: float) -> np.ndarray:
    """Search's first stage over each query's pool: (1 - w) x cosine + w x BM25, each min-max
    scaled within the pool, as `core.search.blend_first_stage` ranks the catalog."""
    out = np.zeros(len(test))
    for _, rows in test.groupby("query_id", sort=False):
        at = test.index.get_indexer(rows.index)
        out[at] = (1.0 - lexical_weight) * min_max_scaled(cosine[at]) + lexical_weight * min_max_scaled(lexical[at])
    return out


def ranking(test: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    return M.ranking_report(test["query_id"].tolist(), scores, _grades(test), k=10)


def _texts(task: Task, frame: pd.DataFrame) -> list[str]:
    """The text the model sees, one string per example (a pair joined with ' | ')."""
    return [x if isinstance(x, str) else f"{x[0]} | {x[1]}" for x in task.to_inputs(frame)]


def _grades(test: pd.DataFrame) -> np.ndarray:
    from core.tasks import GRADES

    return np.array([GRADES.index(g) for g in test["label"].astype(str)], dtype=float)


def for_task(task: Task, train: pd.DataFrame, test: pd.DataFrame, labels: Sequence[str], backbone: str,
             max_length: int, corpus: Sequence[str] | None = None, val: pd.DataFrame | None = None,
             lexical_weight: float = 0.3) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """(name -> metrics, name -> settings) of every baseline that fits the task; tfidf_logreg runs
    when `val` is given (its settings chosen there); `lexical_weight` is the first stage's BM25 weight."""
    out: dict[str, dict[str, float]] = {}
    settings: dict[str, dict] = {}
    if task.head == "classification":
        out["majority"] = majority(train, test, labels)
        # centroids of 3 broad sentiment classes say little (keep runs short); a pair has no one embedding
        if task.name != "sentiment" and not task.pair_input:
            out["nearest_centroid"] = nearest_centroid(task, train, test, labels, backbone, max_length)
        if val is not None:
            out["tfidf_logreg"], settings["tfidf_logreg"] = tfidf_logreg(task, train, val, test, labels)
    else:
        test = test.reset_index(drop=True)
        lexical = bm25_scores(test, corpus if corpus is not None else test["product_text"].unique().tolist())
        cosine = cosine_scores(test, backbone, max_length)
        out["bm25"], out["zero_shot_cosine"] = ranking(test, lexical), ranking(test, cosine)
        out["first_stage"] = ranking(test, blended_scores(test, cosine, lexical, lexical_weight))
        settings["first_stage"] = {"lexical_weight": lexical_weight}
    return out, settings
