"""Retrieve-and-edit: the nearest training answer, within the input's group, never an example's own,
quoted in the prompt the same way in training, evaluation and serving."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from core.gen_exemplars import BANK_FILE, ExemplarBank, bank_frame, quoted_prompts
from core.gen_tasks import GEN_TASKS
from core.registry import AdapterRegistry
from serve.generate_routes import ExemplarBanks, GenerateRoutes
from serve.http_api import ApiError

TRAIN = pd.DataFrame({
    "message": ["cancel my order 123", "cancel the order i placed", "where is my parcel", "track my package please"],
    "intent": ["cancel_order", "cancel_order", "track_order", "track_order"],
    "target": ["To cancel, open {{Order Details}}.", "Sure, press {{Cancel Order}}.",
               "Your parcel is on its way: {{Tracking Link}}.", "Track it at {{Tracking Link}}."]})


def bank() -> ExemplarBank:
    return ExemplarBank(bank_frame(TRAIN, "message", "intent"))


def test_the_nearest_answer_is_found_within_the_inputs_group():
    b = bank()
    assert b.answers(["cancel my order 999"], ["cancel_order"]) == ["To cancel, open {{Order Details}}."]
    # the words are a cancellation's, the intent says tracking: the intent decides the group searched
    assert b.answers(["cancel my order 999"], ["track_order"])[0] in set(TRAIN["target"].iloc[2:])
    # an intent the bank has never seen searches every example
    assert b.answers(["where is my parcel now"], ["refund"]) == ["Your parcel is on its way: {{Tracking Link}}."]


def test_a_training_example_never_quotes_its_own_answer():
    b = bank()
    own = b.nearest(TRAIN["message"].tolist(), TRAIN["intent"].tolist())
    assert own == [0, 1, 2, 3]
    others = b.nearest(TRAIN["message"].tolist(), TRAIN["intent"].tolist(), exclude=[0, 1, 2, 3])
    assert others == [1, 0, 3, 2]


def test_an_empty_bank_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        ExemplarBank(bank_frame(TRAIN.iloc[:0], "message", "intent"))


def test_the_prompt_quotes_the_exemplar_before_the_message_and_keeps_its_line_breaks():
    task = GEN_TASKS["reply"]
    plain = task.prompt_for({"message": "cancel order 5", "intent": "cancel_order"})
    quoted = task.prompt_for({"message": "cancel order 5", "intent": "cancel_order"}, "Sure.\n1. Open {{Order Details}}.")
    assert "similar message" not in plain
    assert quoted.index("Sure.\n1. Open {{Order Details}}.") < quoted.index("Message: cancel order 5")
    assert quoted.replace("\nOur reply to a similar message:\nSure.\n1. Open {{Order Details}}.", "") == plain
    prompts = quoted_prompts(task, TRAIN.iloc[:1], bank(), exclude=[0])
    assert prompts == [task.prompt_for(TRAIN.iloc[0].to_dict(), "Sure, press {{Cancel Order}}.")]


def test_the_bank_saved_with_a_version_is_the_one_serving_quotes(tmp_path):
    registry = AdapterRegistry(str(tmp_path))
    saved = registry.create_version("reply", lambda d: bank().save(str(d)), config={}, metrics={})
    assert (saved.local_dir() / BANK_FILE).exists()
    plain = registry.create_version("reply", lambda d: (d / "adapter").mkdir(), config={}, metrics={})

    routes = Routes(registry)
    fields = {"message": "cancel my order 999", "intent": "cancel_order"}
    prompt = asyncio.run(routes._prompt("reply", saved.model_id, fields))
    assert prompt == GEN_TASKS["reply"].prompt_for(fields, "To cancel, open {{Order Details}}.")
    shouted = {"message": "cancel my order 999", "intent": "Cancel_Order"}  # the intent's case does not matter
    assert asyncio.run(routes._prompt("reply", saved.model_id, shouted)) == prompt
    assert asyncio.run(routes._prompt("reply", plain.model_id, fields)) == GEN_TASKS["reply"].prompt_for(fields)
    assert asyncio.run(routes._prompt("summarize", "summarize@v1", {"text": "Lovely."})) == \
        GEN_TASKS["summarize"].prompt_for({"text": "Lovely."})


class Routes(GenerateRoutes):
    def __init__(self, registry, max_prompt_chars: int = 8000):
        self.exemplar_banks, self.max_prompt_chars = ExemplarBanks(registry), max_prompt_chars


def test_requests_at_once_share_one_read_of_a_bank_and_a_failed_read_is_tried_again(tmp_path):
    registry = AdapterRegistry(str(tmp_path))
    saved = registry.create_version("reply", lambda d: bank().save(str(d)), config={}, metrics={})
    banks, reads = ExemplarBanks(registry, size=1), []
    read = banks._read
    banks._read = lambda model_id: reads.append(model_id) or read(model_id)

    async def five():
        return await asyncio.gather(*(banks.get(saved.model_id) for _ in range(5)))

    got = asyncio.run(five())
    assert len(reads) == 1 and all(b is got[0] for b in got) and len(got[0]) == len(TRAIN)
    with pytest.raises(Exception):
        asyncio.run(banks.get("reply@v9"))  # no such version: the error reaches the request
    assert "reply@v9" not in banks._banks and saved.model_id not in banks._banks  # size 1: v1 was dropped
    asyncio.run(banks.get(saved.model_id))
    assert reads == [saved.model_id, "reply@v9", saved.model_id]


def test_only_the_requests_own_part_of_the_prompt_is_held_to_the_limit(tmp_path):
    long_answer = "Sure. " * 200  # a 1,200-character training answer quoted into the prompt
    frame = bank_frame(TRAIN.assign(target=long_answer), "message", "intent")
    registry = AdapterRegistry(str(tmp_path))
    saved = registry.create_version("reply", lambda d: ExemplarBank(frame).save(str(d)), config={}, metrics={})
    routes = Routes(registry, max_prompt_chars=400)
    prompt = asyncio.run(routes._prompt("reply", saved.model_id, {"message": "cancel my order 999"}))
    assert len(prompt) > 400 and long_answer.strip() in prompt
    with pytest.raises(ApiError) as refused:
        asyncio.run(routes._prompt("reply", saved.model_id, {"message": "x" * 400}))
    assert refused.value.status == 413 and refused.value.field == "input"


def test_training_samples_quote_another_examples_answer_and_keep_the_whole_split_as_bank(tmp_path):
    from core.config import load_config
    from core.gen_config import GenerateConfig
    from core import storage
    from train.generate import read_examples

    task = GEN_TASKS["reply"]
    prepared = task.make_examples(TRAIN.rename(columns={"message": "instruction", "target": "response"}))
    for split in ("train", "val"):
        storage.makedirs(str(tmp_path / split))
        storage.write_parquet(prepared, str(tmp_path / split / "part-0.parquet"))
    cfg = load_config(GenerateConfig, "configs/generate.yaml", ["task=reply", "train.max_train_examples=2"])
    sample, val, saved = read_examples(cfg, str(tmp_path / "train"), str(tmp_path / "val"))
    assert len(saved) == 4 and len(sample) == 2 and len(val) == 4
    answers = dict(zip(prepared["example_id"], prepared["target"]))
    for _, row in sample.iterrows():
        assert "similar message" in row["prompt"] and answers[row["example_id"]] not in row["prompt"]
    assert all("similar message" in p for p in val["prompt"])  # val examples may quote any training answer
