"""Split groups: what a model could memorise (a query's text and hidden intent, a message's text, a
review's text) never sits on both sides of a split. Pure functions and the prepare job's per-batch
steps on pandas frames (no Ray); tests/integration/test_prepare.py checks the real job's output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.job_configs import SplitConfig
from core.tasks import TASKS, query_split_groups
from core.text import dedupe_key
from data_pipelines.catalog import generate_catalog
from data_pipelines.prepare import DuplicateDecision, examples_batch, join_catalog


def _queries(*rows) -> pd.DataFrame:
    cols = ["query_id", "text", "constraints"] if len(rows[0]) == 3 else ["query_id", "text"]
    return pd.DataFrame(rows, columns=cols)


def test_same_normalised_text_is_one_group_whatever_the_id_case_or_punctuation():
    q = _queries(("Q1", "Navy  Sneakers!", None), ("Q2", "navy sneakers", None), ("Q3", "red boots", None))
    g = query_split_groups(q)
    assert g.tolist() == ["navy sneakers", "navy sneakers", "red boots"]
    assert g.index.equals(q.index)


def test_same_hidden_intent_joins_different_texts_and_links_chain():
    a = json.dumps({"product_type": "sneakers", "colour_family": "blue"})
    a_reordered = json.dumps({"colour_family": "blue", "product_type": "sneakers"})
    b = json.dumps({"product_type": "boots"})
    q = _queries(
        ("Q1", "navy sneakers", a),
        ("Q2", "blue trainers", a_reordered),  # same intent, keys in another order
        ("Q3", "Blue Trainers", b),             # same text as Q2, another intent: links b in
        ("Q4", "ankle boots", b),               # reached only through Q3
        ("Q5", "wool socks", json.dumps({"product_type": "socks"})),
    )
    g = query_split_groups(q)
    assert g.tolist()[:4] == ["ankle boots"] * 4  # the smallest normalised text of the component
    assert g.iloc[4] == "wool socks"


def test_empty_or_missing_intents_link_nothing():
    q = _queries(("Q1", "a hat", "{}"), ("Q2", "a scarf", "{}"), ("Q3", "gloves", None), ("Q4", "mittens", float("nan")),
                 ("Q5", "socks", "null"), ("Q6", "tights", ""))
    assert query_split_groups(q).nunique() == 6


def test_without_constraints_column_groups_by_text_alone():
    q = _queries(("Q1", "navy sneakers"), ("Q2", "Navy sneakers."), ("Q3", "blue trainers"))
    assert query_split_groups(q).tolist() == ["navy sneakers", "navy sneakers", "blue trainers"]


def test_groups_do_not_depend_on_row_order_and_a_repeated_id_is_one_group():
    q = _queries(("Q1", "navy sneakers", '{"t": 1}'), ("Q2", "trainers", '{"t": 1}'), ("Q3", "boots", None),
                 ("Q3", "ankle boots", None), ("Q4", "", None))
    g = query_split_groups(q)
    assert g.tolist() == ["navy sneakers", "navy sneakers", "ankle boots", "ankle boots", ""]
    shuffled = q.sample(frac=1.0, random_state=3)
    assert query_split_groups(shuffled).sort_index().equals(g)


def test_relevance_examples_take_the_query_group_from_the_join_or_fall_back_to_text():
    queries = _queries(("Q1", "Navy sneakers", '{"t": 1}'), ("Q2", "blue trainers", '{"t": 1}'))
    products = pd.DataFrame({"product_id": ["P1"], "title": ["Runner"], "description": ["d"], "attributes": ["a"]})
    judgements = pd.DataFrame({"query_id": ["Q1", "Q2", "Q9"], "product_id": ["P1", "P1", "P1"], "grade": [2, 2, 0]})
    joined = join_catalog(judgements, queries, products)
    ex = TASKS["relevance"].make_examples(joined)
    assert ex["split_group"].tolist() == ["blue trainers", "blue trainers", ""]
    assert ex["drop_reason"].tolist() == [None, None, "missing_query_text"]
    # A join without the group column (an older caller): the normalised text is the group.
    ex = TASKS["relevance"].make_examples(joined.drop(columns=["query_group"]))
    assert ex["split_group"].tolist()[:2] == ["navy sneakers", "blue trainers"]


def _prepared(task: str, raw: pd.DataFrame, split: SplitConfig) -> pd.DataFrame:
    """The prepare job's per-batch steps in one process: examples, split, dedupe; the kept rows."""
    rows = examples_batch(raw, TASKS[task].make_examples, split)
    usable = rows[rows["drop_reason"].isna()]
    rows = DuplicateDecision.from_keys(usable[["_key", "_fp", "_row", "label"]]).apply(rows)
    return rows[rows["drop_reason"].isna()]


def _crossing(rows: pd.DataFrame, column: str) -> int:
    """How many values of `column` occur in more than one split."""
    return int((rows.groupby(column)["split"].nunique() > 1).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_catalog_relevance_leaks_no_query_text_or_intent(seed):
    catalog = generate_catalog(seed=seed, n_products=600, n_queries=300, candidates_per_query=20)
    split = SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=seed)
    rows = _prepared("relevance", join_catalog(catalog.judgements, catalog.queries, catalog.products), split)
    rows = rows.assign(norm=rows["query"].map(dedupe_key),
                       intent=rows["query_id"].map(catalog.queries.set_index("query_id")["constraints"]))
    assert set(rows["split"]) == {"train", "val", "test"}
    assert _crossing(rows, "norm") == 0
    assert _crossing(rows, "intent") == 0
    assert _crossing(rows, "query_id") == 0
