"""Spelling normalisation against the training vocabulary (`model.spelling`): what it corrects, what
it never touches, and that training, evaluation and both serving banks read text through the same
normaliser saved with the adapter."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling, training
from core.adapter_bank import make_bank
from core.modeling import AdapterMeta, LoraSpec, ModelLoadError
from core.spelling import SPELLING_FILE, SpellingNormaliser, known_words
from core.tasks import get_task
from core.typos import TypoNoise

TRAIN = ["I want to speak with customer support", "delete my account please", "how do I delete the account",
         "customer support e-mail", "change details on my account", "where can I cancel order 3707955617",
         "cancel the order", "edit my order", "edit the order please", "I need help with my order"]


@pytest.fixture(scope="module")
def normaliser():
    return SpellingNormaliser.from_texts(TRAIN, known=["made", "these"])


@pytest.mark.parametrize("typed,meant", [
    ("custmer", "customer"),          # a letter left out
    ("terminatoin", "terminatoin"),   # nothing one edit away in this vocabulary: as written
    ("acount", "account"),
    ("ordre", "order"),               # two neighbours swapped
    ("deletee", "delete"),            # a letter doubled
    ("dwlete", "delete"),             # a letter replaced
    ("edt", "edit"),                  # three letters: still corrected
    ("customersupport", "customer support"),  # the space left out
])
def test_an_unknown_word_becomes_its_nearest_vocabulary_word(normaliser, typed, meant):
    assert normaliser.correct(typed) == meant


def test_the_most_frequent_candidate_wins():
    norm = SpellingNormaliser({"cart": 2, "card": 9, "care": 3})
    assert norm.correct("carx") == "card"


def test_known_short_numeric_and_glued_words_stay_as_written(normaliser):
    text = "I made these 2 ordrs: my ordr 3707955617, abc123 and don't ask, ok? Delete IT"
    # "made", "these": the tokenizer's whole words; digits, words glued to digits or an apostrophe,
    # words under 3 letters and vocabulary words (any case) are left alone; only "ordr" changes ("ordrs" is two edits away).
    assert normaliser(text) == "I made these 2 ordrs: my order 3707955617, abc123 and don't ask, ok? Delete IT"


def test_a_word_seen_once_is_not_vocabulary():
    norm = SpellingNormaliser.from_texts(["refund my ordre", "my order", "the order"])
    assert "ordre" not in norm.counts and norm.correct("ordre") == "order"
    with pytest.raises(ValueError, match="min_count"):
        SpellingNormaliser({}, min_count=0)


def test_batches_of_texts_and_pairs(normaliser):
    assert normaliser.batch(["custmer support", ("ordre", "delte")]) == ["customer support", ("order", "delete")]
    with pytest.raises(TypeError):
        normaliser.batch("custmer")


def test_saved_and_loaded_it_corrects_the_same(normaliser, tmp_path):
    normaliser.save(tmp_path)
    again = SpellingNormaliser.load(tmp_path)
    assert again.counts == normaliser.counts and again.known == normaliser.known
    assert [again(t) for t in ("custmer acount", "edt ordre", "made")] == ["customer account", "edit order", "made"]
    assert json.loads((tmp_path / SPELLING_FILE).read_text())["min_count"] == 2


def test_known_words_are_the_tokenizers_whole_lowercase_words():
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    words = known_words(tokenizer)
    vocab = tokenizer.get_vocab()
    assert words and all(w in vocab and w.isalpha() and w.islower() and len(w) >= 3 for w in words)


# ---- the adapter carries it: training, evaluation, serving ----------------------------------------

def _spelled_adapter(tmp_path, normaliser, name="sp", seed=1):
    meta = AdapterMeta(task="intent", labels=["a", "b", "c"], backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = modeling.build_task_model(meta, seed=seed)
    torch.manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    model.normaliser = normaliser
    return modeling.save_adapter(model, meta, tmp_path / name)


TYPED = ["custmer acount", "ordre delte", "edt my ordre please", "customersupport"]


def _raw_probs(path, texts):
    """The adapter's probabilities with its normaliser taken off: the text exactly as given."""
    model, meta = modeling.load_adapter(path)
    model.normaliser = None
    return modeling.predict_proba(model, modeling.load_tokenizer(meta.backbone), texts, meta.max_length)


def test_a_saved_adapter_reads_inputs_through_its_normaliser(normaliser, tmp_path):
    path = _spelled_adapter(tmp_path, normaliser)
    assert json.loads((path / "adapter_meta.json").read_text())["spelling"] is True
    model, meta = modeling.load_adapter(path)
    assert meta.spelling and model.normaliser.counts == normaliser.counts
    got = modeling.predict_proba(model, modeling.load_tokenizer(meta.backbone), TYPED, meta.max_length)
    np.testing.assert_allclose(got, _raw_probs(path, normaliser.batch(TYPED)), atol=1e-6)
    assert not np.allclose(got, _raw_probs(path, TYPED), atol=1e-4)  # the correction changes what it reads
    merged = modeling.merge(model)
    assert merged.normaliser is model.normaliser


def test_an_adapter_missing_its_vocabulary_refuses_to_load(normaliser, tmp_path):
    path = _spelled_adapter(tmp_path, normaliser)
    (path / SPELLING_FILE).unlink()
    with pytest.raises(ModelLoadError, match=SPELLING_FILE):
        modeling.load_adapter(path)


@pytest.mark.parametrize("mode", ["multi", "merged"])
def test_both_serving_banks_apply_each_adapters_own_normaliser(normaliser, tmp_path, mode):
    spelled = _spelled_adapter(tmp_path, normaliser, "sp", seed=1)
    plain_model = modeling.build_task_model(AdapterMeta(task="intent", labels=["a", "b", "c"],
                                                        backbone=modeling.TINY_BACKBONE, max_length=32,
                                                        lora=LoraSpec(r=4, alpha=8, dropout=0.0)), seed=2)
    plain = modeling.save_adapter(plain_model, AdapterMeta(task="intent", labels=["a", "b", "c"],
                                                           backbone=modeling.TINY_BACKBONE, max_length=32,
                                                           lora=LoraSpec(r=4, alpha=8, dropout=0.0)), tmp_path / "plain")
    bank = make_bank(modeling.TINY_BACKBONE, mode)
    bank.load("spelled", spelled)
    bank.load("plain", plain)
    want_spelled, want_plain = _raw_probs(spelled, normaliser.batch(TYPED)), _raw_probs(plain, TYPED)
    np.testing.assert_allclose(bank.predict_proba("spelled", TYPED), want_spelled, atol=1e-5)
    np.testing.assert_allclose(bank.predict_proba("plain", TYPED), want_plain, atol=1e-5)
    both = bank.predict_proba_many([("spelled", TYPED), ("plain", TYPED)])  # one mixed forward in multi mode
    np.testing.assert_allclose(both[0], want_spelled, atol=1e-5)
    np.testing.assert_allclose(both[1], want_plain, atol=1e-5)
    bank.unload("spelled")
    assert "spelled" not in bank.names()


def test_training_batches_are_normalised_then_noised(normaliser):
    model = modeling.build_task_model(AdapterMeta(task="intent", labels=["a", "b"], backbone=modeling.TINY_BACKBONE,
                                                  max_length=32))
    assert training.input_rewrite(model) is None
    model.normaliser = normaliser
    assert training.input_rewrite(model)(["custmer acount"]) == ["customer account"]
    noisy = training.input_rewrite(model, TypoNoise(0.9, 0))(["custmer acount"])
    assert noisy == TypoNoise(0.9, 0)(["customer account"]) and noisy != ["customer account"]
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    frame = pd.DataFrame({"text": ["custmer acount", "delte ordre"], "label": ["a", "b"]})
    spelled, y = training.make_batch(get_task("intent"), tokenizer, ["a", "b"], 32, frame, training.input_rewrite(model))
    clean, _ = training.make_batch(get_task("intent"), tokenizer, ["a", "b"], 32,
                                   frame.assign(text=["customer account", "delete order"]))
    assert torch.equal(spelled["input_ids"], clean["input_ids"]) and y.tolist() == [0, 1]


def test_the_training_vocabulary_is_the_splits_inputs():
    frame = pd.DataFrame({"text": TRAIN * 2, "label": ["a"] * 20})
    norm = training.spelling_normaliser(get_task("intent"), frame, modeling.load_tokenizer(modeling.TINY_BACKBONE))
    assert norm.counts["customer"] == 4 and norm.correct("custmer") == "customer"
