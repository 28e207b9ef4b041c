"""Validation-tuned class offsets (core.training.fit_class_offsets): they raise macro-F1 where a
class's threshold is off, never lower it, and fold into the head so the model decides the same way."""

import numpy as np
import torch

from core import metrics as M
from core.modeling import AdapterMeta, TINY_BACKBONE, build_task_model, predict_proba, load_tokenizer
from core.training import fit_class_offsets, shift_head_bias


def _macro(t, p):
    return M.macro_f1(t, p, labels=[0, 1, 2])


def test_offsets_recover_a_rare_class_the_argmax_never_predicts():
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=600, p=[0.15, 0.1, 0.75])
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), y] += 1.5   # informative scores ...
    logits[:, 1] -= 2.0                 # ... but class 1's threshold is far too high
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    before = _macro(y, probs.argmax(1))
    offsets = fit_class_offsets(probs, y, _macro)
    after = _macro(y, (np.log(probs) + offsets).argmax(1))
    assert offsets[0] == 0.0 and offsets[1] > 1.0
    assert after > before + 0.1


def test_offsets_stay_zero_when_nothing_gains():
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[y] * 0.9 + 0.1 / 3  # already perfect
    assert not fit_class_offsets(probs, y, _macro).any()


def test_shifted_head_bias_gives_the_offset_decisions():
    meta = AdapterMeta(task="sentiment", labels=["negative", "neutral", "positive"], backbone=TINY_BACKBONE, max_length=16)
    model = build_task_model(meta).eval()
    tok = load_tokenizer(TINY_BACKBONE)
    texts = ["great dress", "too small", "fine i guess", "love it", "returned it"]
    probs = predict_proba(model, tok, texts, 16)
    offsets = np.array([0.0, 3.0, -1.0])
    shift_head_bias(model, offsets)
    shifted = predict_proba(model, tok, texts, 16)
    expected = np.exp(np.log(probs) + offsets)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(shifted, expected, atol=1e-5)
    shift_head_bias(model, -offsets)
    np.testing.assert_allclose(predict_proba(model, tok, texts, 16), probs, atol=1e-6)
    assert torch.isfinite(model.head[1].bias).all()
