"""`train.ordinal_smoothing`: sentiment's 2- and 4-star reviews train partly toward neutral, the class
their finer grade borders; 1, 3 and 5 stars, and tasks without finer grades, keep hard labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling, training
from core.config import load_config
from core.errors import InputError
from core.job_configs import FinetuneConfig
from core.tasks import get_task

CONFIGS = Path(__file__).parents[2] / "configs"
LABELS = ["negative", "neutral", "positive"]


def _reviews(ratings: list[int]) -> pd.DataFrame:
    label = {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}
    return pd.DataFrame({"title": ["fit"] * len(ratings), "text": [f"review with {r} stars" for r in ratings],
                         "rating": ratings, "label": [label[r] for r in ratings]})


def test_bordering_stars_lean_toward_neutral_and_the_rest_stay_hard():
    frame = _reviews([1, 2, 3, 4, 5])
    target = training.label_indices(LABELS, frame["label"])
    probs = training.ordinal_targets(get_task("sentiment"), LABELS, frame, target, 0.25)
    np.testing.assert_allclose(probs, [[1, 0, 0], [0.75, 0.25, 0], [0, 1, 0], [0, 0.25, 0.75], [0, 0, 1]])
    assert probs.dtype == np.float32


def test_make_batch_gives_probability_rows_only_with_smoothing():
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    task, frame = get_task("sentiment"), _reviews([2, 5, 3, 4])
    _, hard = training.make_batch(task, tokenizer, LABELS, 32, frame)
    _, soft = training.make_batch(task, tokenizer, LABELS, 32, frame, ordinal_smoothing=0.4)
    assert hard.tolist() == [0, 2, 1, 2]
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(dim=1), torch.ones(4))
    assert soft.argmax(dim=1).tolist() == hard.tolist()  # each example's own class still leads
    assert soft[0, 1].item() == pytest.approx(0.4) and soft[1, 2].item() == 1.0


def test_the_class_weighted_loss_takes_the_soft_rows_and_moves_with_them():
    task, frame = get_task("sentiment"), _reviews([2, 2, 4, 4, 5, 1, 3])
    loss_fn = training.loss_function(task, LABELS, frame["label"].tolist())
    target = training.label_indices(LABELS, frame["label"])
    logits = torch.zeros(len(frame), 3)
    logits[np.arange(len(frame)), target] = 3.0  # confident in each example's own class
    hard = loss_fn(logits, torch.from_numpy(target))
    soft = loss_fn(logits, torch.from_numpy(training.ordinal_targets(task, LABELS, frame, target, 0.3)))
    assert torch.isfinite(soft) and soft > hard  # leaning toward neutral is penalised by full confidence


def test_a_task_without_finer_grades_refuses():
    frame = pd.DataFrame({"text": ["cancel my order"], "label": ["cancel_order"]})
    with pytest.raises(ValueError, match="no finer grades"):
        training.ordinal_targets(get_task("intent"), ["cancel_order"], frame, np.array([0]), 0.2)
    from train.finetune import setup
    cfg = load_config(FinetuneConfig, CONFIGS / "intent.yaml", ["train.ordinal_smoothing=0.2", "data_dir=/nonexistent"])
    with pytest.raises(InputError, match="train.ordinal_smoothing: task 'intent'"):
        setup(cfg, None, "offline")


def test_prepared_rows_without_their_finer_grade_are_refused_before_training(tmp_path):
    from train.finetune import setup
    for split in ("train", "val"):
        (tmp_path / "sentiment" / split).mkdir(parents=True)
        _reviews([1, 2, 4]).drop(columns="rating").to_parquet(tmp_path / "sentiment" / split / "part.parquet")
    cfg = load_config(FinetuneConfig, CONFIGS / "sentiment.yaml", [f"data_dir={tmp_path}"])
    with pytest.raises(InputError, match="no column 'rating'"):
        setup(cfg, None, "offline")


def test_smoothing_of_half_or_more_is_a_config_error():
    with pytest.raises(ValueError, match="train.ordinal_smoothing"):
        load_config(FinetuneConfig, CONFIGS / "sentiment.yaml", ["train.ordinal_smoothing=0.5"])
    cfg = load_config(FinetuneConfig, CONFIGS / "sentiment.yaml", ["train.ordinal_smoothing=0.3"])
    assert cfg.train.ordinal_smoothing == 0.3
