"""Typing noise for training inputs (`train.typo_rate`): seeded, one slip per chosen word, ids and
short words untouched, training batches only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import modeling, training
from core.config import load_config
from core.job_configs import FinetuneConfig
from core.tasks import get_task
from core.typos import TypoNoise, add_typos

TEXT = "I want to speak with customer support about order 3707955617, how can I do it?"


def _one_slip(a: str, b: str) -> bool:
    """b is a with one letter deleted, doubled, replaced, or two neighbours swapped."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return len(a) == len(b) and a == b
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1:] == b for i in range(len(a)))
    if len(b) == len(a) + 1:
        return any(b[:i] + b[i + 1:] == a for i in range(len(b)))
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                              and a[diff[1]] == b[diff[0]])


def test_each_word_changes_by_at_most_one_slip_and_ids_and_short_words_stay():
    rng = np.random.default_rng(0)
    for word in re.findall(r"\w+", TEXT):
        noisy = [add_typos(word, 0.5, rng) for _ in range(200)]
        if len(word) < 3 or not word.isalpha():
            assert set(noisy) == {word}  # "I", "to", "do", the order number
        else:
            assert all(_one_slip(word, n) for n in noisy), (word, set(noisy))
            # half the draws chosen; a replaced letter can equal the one it replaces, a swap of equal ones
            assert 70 < sum(n != word for n in noisy) <= 115, word


def test_a_slip_can_leave_out_the_space_to_the_next_word_and_nothing_else_moves():
    rng = np.random.default_rng(0)
    noisy = [add_typos("customer support", 0.9, rng) for _ in range(300)]
    assert "customersupport" in noisy
    for n in noisy:
        parts = n.split(" ")
        assert len(parts) == 2 or (len(parts) == 1 and _one_slip("customersupport", n) or n == "customersupport"), n
    assert add_typos("order 3707955617, ok?", 0.99, rng).endswith(" 3707955617, ok?")


def test_same_seed_same_slips_and_each_epoch_its_own():
    batch = [TEXT, "change details on my pro account"]
    assert TypoNoise(0.3, (0, 1, 0))(batch) == TypoNoise(0.3, (0, 1, 0))(batch)
    assert TypoNoise(0.3, (0, 1, 0))(batch) != TypoNoise(0.3, (0, 2, 0))(batch)
    assert training.input_noise(0.0, 0, 1) is None
    assert add_typos(TEXT, 0.0, np.random.default_rng(0)) == TEXT


def test_pairs_get_slips_in_both_texts():
    noisy = TypoNoise(0.9, 0)([("waterproof hiking boots", "Strivo leather hiking boots, waterproof")] * 20)
    assert all(isinstance(x, tuple) and len(x) == 2 for x in noisy)
    assert any(q != "waterproof hiking boots" for q, _ in noisy)
    assert any(p != "Strivo leather hiking boots, waterproof" for _, p in noisy)


def test_make_batch_noises_the_inputs_not_the_labels():
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    frame = pd.DataFrame({"text": ["cancel my subscription please", "where is my package today"] * 4,
                          "label": ["a", "b"] * 4})
    task = get_task("intent")
    clean, y = training.make_batch(task, tokenizer, ["a", "b"], 32, frame)
    noisy, y_noisy = training.make_batch(task, tokenizer, ["a", "b"], 32, frame, TypoNoise(0.9, 0))
    assert y.tolist() == y_noisy.tolist()
    assert not np.array_equal(clean["input_ids"].numpy()[:, :5], noisy["input_ids"].numpy()[:, :5])


def test_typo_rate_outside_0_1_is_a_config_error():
    with pytest.raises(ValueError, match="train.typo_rate"):
        load_config(FinetuneConfig, Path(__file__).parents[2] / "configs/intent.yaml", ["train.typo_rate=1.0"])
    with pytest.raises(ValueError, match="typo rate"):
        TypoNoise(-0.1, 0)
