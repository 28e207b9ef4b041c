"""Task declarations: the one place that says what each task reads, predicts and is judged by.

Every layer reads a `Task`: `data_pipelines.prepare` calls `make_examples` on raw rows, training
turns examples into model inputs with `to_inputs` and labels, evaluation and serving call
`score_report` and `format_predictions`. The built-in tasks are the `Task(...)` entries of
`TASKS`; a shop's own text-classification tasks are declared in YAML (`core.declared_tasks`) and
join them through `all_tasks()` / `get_task()`, which every layer asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache, partial
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd

from core import metrics as M
from core.declared_tasks import TaskDeclaration, declarations_file, declared_examples, declared_inputs, load_declarations
from core.errors import AisleError
from core.text import dedupe_key, normalize_series, normalize_text, salted_hash

ModelInput = list[str] | list[tuple[str, str]]


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    source: Literal["table", "catalog"]
    """'table': one CSV/Parquet/JSONL file; 'catalog': judgements joined with queries and products."""
    required_columns: tuple[str, ...]
    """Raw columns the source must have; a missing one is an error naming it."""
    make_examples: Callable[[pd.DataFrame], pd.DataFrame]
    """Raw rows -> example rows with columns example_id, label, split_group, dedupe_key,
    drop_reason (None when usable) and the task's own fields. Pure pandas, no Ray."""
    to_inputs: Callable[[pd.DataFrame], ModelInput]
    """Example rows -> model inputs: one text per row, or a (first, second) pair for cross-encoders."""
    labels: tuple[str, ...] | None
    """Ordered label space; None = taken from the training data and stored with the adapter."""
    head: Literal["classification", "graded"]
    """'graded': labels are ordered grades and the score is the expected grade."""
    primary_metric: str
    group_field: str | None = None
    """Ranking metrics are computed per group (per query)."""
    pair_input: bool = False
    """Inputs are (first, second) text pairs (a cross-encoder), not single texts."""
    class_weighted_loss: bool = False
    """Weight the loss by inverse class frequency (for skewed labels such as 5-star ratings)."""
    leans_toward: Callable[[pd.DataFrame], pd.Series] | None = None
    """Example rows -> for each, the neighbouring label its finer grade borders (a 2-star review's
    "neutral"), or missing where it borders none; `train.ordinal_smoothing` trains toward it."""
    distilled_from: str | None = None
    """A student task: its adapters are distilled from this task's (`aisle distill`), its training
    split is written by that job and its val/test splits are the teacher's, not prepared."""

    def score_report(self, labels: Sequence[str], y_true: np.ndarray, probs: np.ndarray,
                     groups: Sequence | None = None) -> dict[str, float]:
        """All of this task's metrics from true label indices and predicted class probabilities."""
        y_pred = probs.argmax(axis=1)
        report = M.classification_report(y_true, y_pred, labels=list(range(len(labels))))
        if self.primary_metric == "macro_f1":  # what the mean is made of: the rare classes decide it
            f1s = M.per_class_f1(y_true, y_pred, list(range(len(labels))))
            report.update(zip((f"f1_{name}" for name in labels), f1s))
        if self.head == "graded":
            if groups is None:
                raise ValueError(f"task {self.name} needs groups for ranking metrics")
            grades = np.asarray(y_true, dtype=float)
            report.update(M.ranking_report(list(groups), expected_grade(probs), grades, k=10))
        return {k: float(v) for k, v in report.items()}

    def format_predictions(self, labels: Sequence[str], probs: np.ndarray) -> list[dict]:
        """What a caller sees for each input: label and confidence, plus a score for graded tasks."""
        out = []
        for row in probs:
            k = int(row.argmax())
            item = {"label": labels[k], "confidence": float(row[k])}
            if self.head == "graded":
                item["score"] = float(np.dot(row, np.arange(len(row))))
            out.append(item)
        return out


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """Score of a graded head: sum over grades of P(grade) * grade."""
    return probs @ np.arange(probs.shape[1], dtype=probs.dtype)


def drop_reasons(index: pd.Index) -> pd.Series:
    """One empty reason per row; `mark_dropped` fills in why a row cannot be used."""
    return pd.Series([None] * len(index), index=index, dtype="object")


def mark_dropped(reason: pd.Series, mask: pd.Series, why: str) -> None:
    """Record the first reason a row is unusable (earlier checks win)."""
    reason[mask & reason.isna()] = why


# ---- sentiment: review title + text -> negative / neutral / positive -------------------------

_RATING_TO_SENTIMENT = {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}


def _sentiment_examples(df: pd.DataFrame) -> pd.DataFrame:
    title = normalize_series(df["Title"]).fillna("")
    text = normalize_series(df["Review Text"]).fillna("")
    rating = pd.to_numeric(df["Rating"], errors="coerce")
    product = df["Clothing ID"].astype("string").str.strip()
    reason = drop_reasons(df.index)
    mark_dropped(reason, product.isna() | (product == ""), "missing_product_id")
    mark_dropped(reason, text == "", "missing_review_text")
    mark_dropped(reason, text.str.len() < 3, "text_too_short")
    mark_dropped(reason, rating.isna(), "missing_rating")
    mark_dropped(reason, ~rating.isin(list(_RATING_TO_SENTIMENT)), "rating_out_of_range")
    label = rating.map(_RATING_TO_SENTIMENT)
    norm = text.map(dedupe_key)
    return pd.DataFrame({
        "example_id": (product.fillna("") + "\x00" + norm).map(lambda k: salted_hash(k, "sentiment")),
        "product_id": product.fillna(""),
        "title": title,
        "text": text,
        "rating": rating.fillna(0).astype("int64"),
        "label": label.astype("string"),
        # Split by product: all reviews of one product on one side.
        "split_group": product.fillna(""),
        # Dedupe by the normalised review text alone, not (product, text): the same review posted
        # under several products (5 texts, 11 rows in the bundled data: one shopper's outfit review
        # on each of its pieces) is one example, so its copies cannot sit in two splits.
        "dedupe_key": norm,
        "drop_reason": reason,
    })


def _sentiment_leans(frame: pd.DataFrame) -> pd.Series:
    """2 and 4 stars border 3 (neutral); 1, 3 and 5 stars border no other class."""
    return pd.to_numeric(frame["rating"], errors="coerce").map({2: "neutral", 4: "neutral"}).astype("object")


def _sentiment_inputs(frame: pd.DataFrame) -> list[str]:
    titles = frame["title"].fillna("").astype(str)
    texts = frame["text"].fillna("").astype(str)
    return [f"{t}. {x}" if t else x for t, x in zip(titles, texts)]


# ---- intent: support message -> intent label --------------------------------------------------

def _intent_examples(df: pd.DataFrame) -> pd.DataFrame:
    text = normalize_series(df["instruction"]).fillna("")
    intent = normalize_series(df["intent"]).fillna("").str.lower()
    reason = drop_reasons(df.index)
    mark_dropped(reason, text == "", "missing_text")
    mark_dropped(reason, text.str.len() < 3, "text_too_short")
    mark_dropped(reason, intent == "", "missing_label")
    key = text.map(dedupe_key)
    example_id = key.map(lambda k: salted_hash(k, "intent"))
    return pd.DataFrame({
        "example_id": example_id,
        "text": text,
        "label": intent.astype("string"),
        # Split by the normalised message text (dedupe_key: casefolded, punctuation and spacing
        # ignored), here as its salted hash, the example id: copies of one message that differ only
        # in case, punctuation or spacing share a group and a split. Bitext utterances are generated
        # variations with no other grouping (no user, no conversation).
        "split_group": example_id,
        "dedupe_key": key,
        "drop_reason": reason,
    })


def _single_text(frame: pd.DataFrame) -> list[str]:
    return frame["text"].fillna("").astype(str).tolist()


# ---- relevance: (query, product text) -> grade 0 / 1 / 2 --------------------------------------

GRADES = ("irrelevant", "partial", "exact")


def product_text(title: pd.Series, attributes: pd.Series, description: pd.Series) -> pd.Series:
    """The product side of a relevance pair; the retriever embeds the same string."""
    return title.fillna("") + " | " + attributes.fillna("") + " | " + description.fillna("")


def _intent_value(value: object) -> str | None:
    """A query's hidden intent (the catalog's `constraints`) as one comparable string: JSON with
    sorted keys, so equal intents written with keys in another order are equal; None when missing
    or empty ({}, [], null), which links nothing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    raw = str(value).strip()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw or None
    if parsed in (None, "", {}, []):
        return None
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


def query_split_groups(queries: pd.DataFrame) -> pd.Series:
    """The relevance split group of each row of a queries table (columns query_id, text and,
    optionally, constraints), aligned with its index.

    What a ranker could memorise about a query is its text and what it means, not its id: two
    queries with the same normalised text (`dedupe_key`), or with the same hidden intent (equal
    `constraints`), or with the same id, belong to one group, and the group is the connected
    component of those links (union-find). A table without a `constraints` column (a user's own
    queries) is grouped by normalised text alone. The group's value is the smallest non-empty
    normalised text in it (deterministic, readable, and distinct between groups); a group with no
    text at all (its rows are dropped as missing_query_text) gets "".
    """
    n = len(queries)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    norm = [dedupe_key(normalize_text(t)) for t in queries["text"]]
    links: list[list[object]] = [[("id", str(q)) for q in queries["query_id"]],
                                 [("text", t) if t else None for t in norm]]
    if "constraints" in queries.columns:
        links.append([("intent", v) if (v := _intent_value(c)) is not None else None for c in queries["constraints"]])
    for column in links:
        first: dict[object, int] = {}
        for i, key in enumerate(column):
            if key is None:
                continue
            j = first.setdefault(key, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = [find(i) for i in range(n)]
    label: dict[int, str] = {}
    for root, t in zip(roots, norm):
        if t and (root not in label or t < label[root]):
            label[root] = t
    return pd.Series([label.get(root, "") for root in roots], index=queries.index, dtype="string", name="query_group")


def _relevance_examples(df: pd.DataFrame) -> pd.DataFrame:
    """Judgement rows joined with their query (`query`, and `query_group` from `query_split_groups`
    when the join brings it) and product fields -> (query, product text) examples."""
    query = normalize_series(df["query"]).fillna("")
    title = normalize_series(df["title"]).fillna("")
    grade = pd.to_numeric(df["grade"], errors="coerce")
    reason = drop_reasons(df.index)
    mark_dropped(reason, df["query_id"].isna(), "missing_query_id")
    mark_dropped(reason, df["product_id"].isna(), "missing_product_id")
    mark_dropped(reason, query == "", "missing_query_text")
    mark_dropped(reason, title == "", "unknown_product")
    mark_dropped(reason, grade.isna(), "missing_grade")
    mark_dropped(reason, ~grade.isin([0, 1, 2]), "grade_out_of_range")
    query_id = df["query_id"].astype("string").fillna("")
    product_id = df["product_id"].astype("string").fillna("")
    key = query_id + "\x00" + product_id
    text = product_text(title, normalize_series(df["attributes"]), normalize_series(df["description"]))
    # Split by the query's group (its normalised text and hidden intent, see query_split_groups),
    # never by its id: the same text under two ids must not be trained on and tested on. Rows the
    # join gave no group fall back to their normalised text.
    group = query.map(dedupe_key).astype("string")
    if "query_group" in df.columns:
        given = df["query_group"].astype("string")
        group = given.where(given.notna() & (given != ""), group)
    return pd.DataFrame({
        "example_id": key.map(lambda k: salted_hash(k, "relevance")),
        "query_id": query_id,
        "product_id": product_id,
        "query": query,
        "product_text": text.astype("string"),
        "label": grade.map(lambda g: GRADES[int(g)] if g in (0, 1, 2) else None).astype("string"),
        "split_group": group.fillna(""),
        "dedupe_key": key,
        "drop_reason": reason,
    })


def _pair_inputs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["query"].astype(str), frame["product_text"].astype(str)))


TASKS: dict[str, Task] = {
    "sentiment": Task(
        name="sentiment",
        description="review title + text -> negative (1-2 stars) / neutral (3) / positive (4-5)",
        source="table",
        required_columns=("Clothing ID", "Title", "Review Text", "Rating"),
        make_examples=_sentiment_examples,
        to_inputs=_sentiment_inputs,
        labels=("negative", "neutral", "positive"),
        head="classification",
        primary_metric="macro_f1",
        class_weighted_loss=True,
        leans_toward=_sentiment_leans,
    ),
    "intent": Task(
        name="intent",
        description="customer-service message -> intent label (label set from the data)",
        source="table",
        required_columns=("instruction", "intent"),
        make_examples=_intent_examples,
        to_inputs=_single_text,
        labels=None,
        head="classification",
        primary_metric="accuracy",
    ),
    "relevance": Task(
        name="relevance",
        description="(query, product text) -> graded relevance 0 irrelevant / 1 partial / 2 exact",
        source="catalog",
        required_columns=("query_id", "product_id", "grade"),
        make_examples=_relevance_examples,
        to_inputs=_pair_inputs,
        labels=GRADES,
        head="graded",
        primary_metric="ndcg@10",
        group_field="query_id",
        pair_input=True,
    ),
}
TASKS["relevance_student"] = replace(
    TASKS["relevance"], name="relevance_student", distilled_from="relevance",
    description="relevance with fewer layers, distilled from the relevance adapter: the cheaper /v1/search reranker")


RESERVED_NAMES = frozenset([*TASKS, "recommend", "events"])


def declared_task(decl: TaskDeclaration) -> Task:
    """The Task of a YAML declaration: classification of one text or a pair, labels from the
    mapping (or from the training data), judged by its declared metric."""
    kind = "(text, pair)" if decl.kind == "text_pair" else "text"
    return Task(name=decl.name, description=decl.description or f"{kind} -> {decl.columns.label} (declared)",
                source="table", required_columns=decl.required_columns, make_examples=partial(declared_examples, decl),
                to_inputs=declared_inputs, labels=decl.label_order, head="classification",
                primary_metric=decl.metric, pair_input=decl.kind == "text_pair",
                class_weighted_loss=decl.class_weighted_loss)


@cache
def declared_tasks() -> dict[str, TaskDeclaration]:
    """The declarations of `core.declared_tasks.declarations_file()`, read once per process."""
    return {d.name: d for d in load_declarations(declarations_file(), RESERVED_NAMES)}


@cache
def all_tasks() -> dict[str, Task]:
    """The built-in tasks and the declared ones (one dict per process: do not change it)."""
    return {**TASKS, **{name: declared_task(d) for name, d in declared_tasks().items()}}


def forget_declared() -> None:
    """Read the declarations again on next use (after AISLE_TASKS or the file changed)."""
    declared_tasks.cache_clear()
    all_tasks.cache_clear()


class NoSuchTaskError(AisleError, KeyError):
    """A task name that is neither built in nor declared (not core.registry.UnknownTaskError: a task
    with no versions in a registry)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get_task(name: str) -> Task:
    tasks = all_tasks()
    try:
        return tasks[name]
    except KeyError:
        raise NoSuchTaskError(f"unknown task '{name}' (known: {', '.join(sorted(tasks))}; "
                               f"declare your own in configs/tasks.yaml)") from None
