"""Generation task declarations: examples, drop reasons, splits groups and prompts from raw rows."""

from __future__ import annotations

import pandas as pd
import pytest

from core.gen_tasks import GEN_TASKS, get_gen_task, NoSuchGenTaskError

EXAMPLE_COLUMNS = {"example_id", "label", "split_group", "dedupe_key", "drop_reason", "prompt", "target"}


def test_describe_examples_carry_attributes_in_the_prompt_and_drop_missing_descriptions():
    products = pd.DataFrame({
        "product_id": ["P1", "P2"], "title": ["Acme Trail Boot", "Oak & Co Mug"],
        "description": ["Rugged leather boot from Acme.", None], "category": ["footwear", "kitchen"],
        "brand": ["Acme", "Oak & Co"], "colour": ["brown", "n/a"], "material": ["leather", "stoneware"],
        "price": [89.5, 12.0]})
    out = GEN_TASKS["describe"].make_examples(products)
    assert EXAMPLE_COLUMNS <= set(out.columns)
    assert out["drop_reason"].tolist() == [None, "missing_description"]
    first = out.iloc[0]
    assert first["target"] == "Rugged leather boot from Acme." and first["split_group"] == "P1"
    assert "brand: Acme" in first["prompt"] and "price: 89.50" in first["prompt"] and "colour: brown" in first["prompt"]
    assert "colour" not in out.iloc[1]["prompt"]  # "n/a" is left out, not stated


def test_summarize_targets_are_the_shoppers_titles_split_by_product():
    reviews = pd.DataFrame({"Clothing ID": [7, 7, 9], "Title": ["Love it", None, "Runs small"],
                            "Review Text": ["Fits well and looks great.", "Nice.", "Had to return it, too tight."],
                            "Rating": [5, 4, 2]})
    out = GEN_TASKS["summarize"].make_examples(reviews)
    assert out["drop_reason"].tolist() == [None, "missing_title", None]
    assert out["split_group"].tolist() == ["7", "7", "9"]
    assert out["target"].tolist()[0] == "Love it" and out["label"].tolist()[2] == "2 stars"
    assert out["prompt"].iloc[2].endswith("Review: Had to return it, too tight.")


def test_reply_keeps_placeholders_and_line_breaks():
    rows = pd.DataFrame({"instruction": ["cancel order 123", "cancel order 123!"], "intent": ["cancel_order"] * 2,
                         "response": ["Sure.\r\n\r\n1. Open {{Order Details}}.\n2. Press  {{Cancel Order}}.", "x"]})
    out = GEN_TASKS["reply"].make_examples(rows)
    assert out["target"].iloc[0] == "Sure.\n1. Open {{Order Details}}.\n2. Press {{Cancel Order}}."
    assert out["split_group"].iloc[0] == out["split_group"].iloc[1]  # same normalised message, same split
    assert "Intent: cancel_order" in out["prompt"].iloc[0] and "{{Order Number}}" in out["prompt"].iloc[0]


def test_prompt_for_a_request_matches_the_prepared_prompt():
    task = GEN_TASKS["reply"]
    rows = pd.DataFrame({"instruction": ["where is my parcel"], "intent": ["track_order"], "response": ["Here."]})
    prepared = task.make_examples(rows)["prompt"].iloc[0]
    assert task.prompt_for({"message": "where is my parcel", "intent": "track_order"}) == prepared


def test_unknown_generation_task_is_named():
    with pytest.raises(NoSuchGenTaskError, match="known: describe, summarize, reply"):
        get_gen_task("translate")
