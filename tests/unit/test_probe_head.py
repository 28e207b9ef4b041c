"""Linear probing before fine-tuning (core.training.probe_head): the head starts as the logistic
regression of the frozen features, so the untrained model already decides as that probe does."""

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from core.modeling import AdapterMeta, TINY_BACKBONE, build_task_model, load_tokenizer, mean_pool, predict_proba
from core.tasks import get_task
from core.training import make_batch, probe_head

LABELS = ["negative", "neutral", "positive"]
TEXTS = {"negative": ["too small and it ripped", "returned it at once", "awful fabric", "the seams came apart"],
         "positive": ["love this dress", "great fit and colour", "perfect for summer", "soft and pretty"]}


def _frame() -> pd.DataFrame:
    rows = [{"title": "", "text": t, "label": label} for label, texts in TEXTS.items() for t in texts]
    return pd.DataFrame(rows * 3)


def test_the_probed_head_decides_as_the_logistic_regression_on_the_frozen_features():
    task = get_task("sentiment")
    tok = load_tokenizer(TINY_BACKBONE)
    model = build_task_model(AdapterMeta(task="sentiment", labels=LABELS, backbone=TINY_BACKBONE, max_length=16), seed=3)
    frame = _frame()
    batches = [make_batch(task, tok, LABELS, 16, frame.iloc[i:i + 8]) for i in range(0, len(frame), 8)]
    assert probe_head(model, batches, "cpu") == len(frame)

    model.eval()
    with torch.no_grad():  # the features the probe saw: mean-pooled output of the encoder, LoRA at zero
        feats, target = make_batch(task, tok, LABELS, 16, frame)
        x = mean_pool(model.encoder(**feats).last_hidden_state, feats["attention_mask"]).numpy().astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    reference = LogisticRegression(C=1.0, max_iter=500).fit((x - mean) / std, target.numpy())
    inputs = task.to_inputs(frame)
    probs = predict_proba(model, tok, inputs, 16)
    assert probs[:, 1].max() < 1e-3  # "neutral" never seen: never chosen
    assert (probs.argmax(1) == reference.predict((x - mean) / std)).all()  # label indices 0 and 2
    two = probs[:, [0, 2]] / probs[:, [0, 2]].sum(1, keepdims=True)
    np.testing.assert_allclose(two[:, 1], reference.predict_proba((x - mean) / std)[:, 1], atol=1e-3)


def test_soft_targets_or_one_class_leave_the_head_as_it_was():
    task = get_task("sentiment")
    tok = load_tokenizer(TINY_BACKBONE)
    model = build_task_model(AdapterMeta(task="sentiment", labels=LABELS, backbone=TINY_BACKBONE, max_length=16), seed=3)
    before = model.head[-1].weight.detach().clone()
    one_class = _frame()[lambda f: f["label"] == "positive"]
    assert probe_head(model, [make_batch(task, tok, LABELS, 16, one_class)], "cpu") == 0
    feats, _ = make_batch(task, tok, LABELS, 16, one_class)
    assert probe_head(model, [(feats, torch.full((len(one_class), 3), 1 / 3))], "cpu") == 0
    assert torch.equal(model.head[-1].weight, before)
