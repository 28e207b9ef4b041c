"""Tasks declared in YAML (core.declared_tasks): parsing with errors that name the key, examples
with every dropped row counted by reason, splits by group, and the Task every layer reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError
from core.declared_tasks import declared_examples, load_declarations, raw_label
from core.tasks import RESERVED_NAMES, declared_task

TICKETS = """
tasks:
  - name: ticket_topic
    source: data/tickets.csv
    columns: {text: [Subject, Body], label: Topic Code, group: customer}
    labels: {shipping: [1, 4], returns: [2], billing: [3]}
    metric: macro_f1
  - name: answer_match
    kind: text_pair
    source: data/qa.parquet
    columns: {text: [question], pair: [answer], label: ok}
"""


def _declarations(tmp_path, text=TICKETS):
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    return {d.name: d for d in load_declarations(path, RESERVED_NAMES)}


def test_declarations_become_tasks_every_layer_can_read(tmp_path):
    found = _declarations(tmp_path)
    topic, match = declared_task(found["ticket_topic"]), declared_task(found["answer_match"])
    assert topic.labels == ("shipping", "returns", "billing") and topic.primary_metric == "macro_f1"
    assert topic.required_columns == ("Subject", "Body", "Topic Code", "customer") and not topic.pair_input
    assert match.pair_input and match.labels is None and match.primary_metric == "accuracy"
    assert match.head == topic.head == "classification"


def test_examples_join_text_map_labels_and_count_every_dropped_row(tmp_path):
    decl = _declarations(tmp_path)["ticket_topic"]
    raw = pd.DataFrame({
        "Subject": ["Late parcel", None, "Refund", "x", "Invoice", "Hello", "Where", "  "],
        "Body": ["It has not arrived", "Box was crushed", None, None, "Wrong VAT", "Need help", "is it", ""],
        "Topic Code": pd.Series([1, 4.0, "2", 3, pd.NA, 9, 1, 1], dtype="object"),  # a CSV's empty cell is <NA>
        "customer": ["c1", "c2", "c3", "c4", "c5", "c6", None, "c8"],
    })
    ex = declared_examples(decl, raw)
    assert ex["text"].tolist()[:3] == ["Late parcel. It has not arrived", "Box was crushed", "Refund"]
    assert ex["label"].tolist()[:3] == ["shipping", "shipping", "returns"]  # 4.0 and "2" are 4 and 2
    assert ex["drop_reason"].tolist() == [None, None, None, "text_too_short", "missing_label", "label_not_mapped",
                                          "missing_group", "missing_text"]
    assert ex["split_group"].tolist()[:3] == ["c1", "c2", "c3"]
    assert ex["example_id"].is_unique and ex["dedupe_key"].iloc[0] == ex["dedupe_key"].iloc[0].lower()


def test_without_a_group_copies_of_one_text_share_a_split_group(tmp_path):
    text = TICKETS.replace(", group: customer", "").replace("labels: {shipping: [1, 4], returns: [2], billing: [3]}",
                                                            "labels: null")
    decl = _declarations(tmp_path, text)["ticket_topic"]
    raw = pd.DataFrame({"Subject": ["Late parcel", "LATE PARCEL!", "Refund"], "Body": ["", "", "please"],
                        "Topic Code": ["ship", "ship", "money"]})
    ex = declared_examples(decl, raw)
    assert ex["split_group"].iloc[0] == ex["split_group"].iloc[1] != ex["split_group"].iloc[2]
    assert ex["label"].tolist() == ["ship", "ship", "money"]  # no mapping: the values as they are


def test_pair_examples_keep_both_texts_for_the_model(tmp_path):
    decl = _declarations(tmp_path)["answer_match"]
    raw = pd.DataFrame({"question": ["Is it waterproof?", "Size?"], "answer": ["Yes, to 10 m", ""], "ok": [True, False]})
    ex = declared_examples(decl, raw)
    assert ex["pair"].tolist() == ["Yes, to 10 m", ""] and ex["drop_reason"].tolist() == [None, "missing_pair_text"]
    assert declared_task(decl).to_inputs(ex) == [("Is it waterproof?", "Yes, to 10 m"), ("Size?", "")]
    assert ex["label"].tolist() == ["True", "False"]


@pytest.mark.parametrize("old, new, message", [
    ("name: ticket_topic", "name: Ticket-Topic", "name must match"),
    ("name: ticket_topic", "name: sentiment", "is taken"),
    ("name: answer_match", "name: ticket_topic", "is taken"),
    ("    source: data/tickets.csv\n", "", "source"),
    ("labels: {shipping: [1, 4], returns: [2], billing: [3]}", "labels: {shipping: [1], returns: [1]}",
     "mapped to both"),
    ("labels: {shipping: [1, 4], returns: [2], billing: [3]}", "labels: {shipping: 1, returns: [2]}", "labels"),
    ("    kind: text_pair\n", "", "columns.pair"),
    ("metric: macro_f1", "metric: f2", "metric"),
    ("columns: {text: [Subject, Body]", "columns: {txt: [Subject, Body]", "txt"),
])
def test_a_bad_declaration_is_one_error_naming_the_key(tmp_path, old, new, message):
    assert old in TICKETS
    with pytest.raises(ConfigError, match=message):
        _declarations(tmp_path, TICKETS.replace(old, new))


def test_raw_labels_compare_across_file_formats():
    assert raw_label(4) == raw_label(4.0) == raw_label("4") == raw_label(" 4.0 ") == "4"
    assert raw_label(np.float64(2.0)) == "2" and raw_label("4.5") == "4.5" and raw_label(True) == "True"
