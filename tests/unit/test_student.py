"""A student adapter (relevance_student: the backbone's bottom layers only) trains toward a teacher's
distributions, saves and loads like any adapter, and serves on the shared full backbone beside full
adapters with exactly what it gives on its own; search picks it only while its teacher is CURRENT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling, training
from core.adapter_bank import make_bank
from core.modeling import AdapterMeta, LoraSpec
from core.registry import ADAPTER_DIR, AdapterRegistry
from core.tasks import GRADES, get_task
from serve.ingress import student_for

PAIRS = [("navy sneakers", "navy running sneakers size 10"), ("red dress", "blue denim jacket"),
         ("usb cable", "usb-c cable 2 m braided"), ("wool socks", "merino wool socks, 3 pairs")]


def _adapter(path, seed, layers=None, task="relevance"):
    meta = AdapterMeta(task=task, labels=list(GRADES), backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("query", "key", "value")), layers=layers)
    model = modeling.build_task_model(meta, seed=seed)
    torch.manual_seed(seed)
    for p in model.parameters():  # distinct weights, as training would make them
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    modeling.save_adapter(model, meta, path)
    return path


def _alone(path):
    model, meta = modeling.load_adapter(path)
    return modeling.predict_proba(model, modeling.load_tokenizer(meta.backbone), PAIRS, meta.max_length)


def test_a_student_runs_and_saves_its_bottom_layers_only(tmp_path):
    backbone = modeling.load_backbone(modeling.TINY_BACKBONE)
    meta = AdapterMeta(task="relevance_student", labels=list(GRADES), backbone=modeling.TINY_BACKBONE, max_length=32,
                       layers=1)
    student = modeling.build_task_model(meta, backbone=backbone)
    assert student.encoder.config.num_hidden_layers == 1
    assert len(modeling.base_model(student).encoder.layer) == 1
    assert len(backbone.encoder.layer) == 2   # the backbone handed in keeps every layer
    lora = [n for n, _ in student.encoder.named_parameters() if "lora_" in n]
    assert lora and all(modeling.layer_index(n) == 0 for n in lora)
    modeling.save_adapter(student, meta, tmp_path / "s")
    loaded, loaded_meta = modeling.load_adapter(tmp_path / "s")
    assert loaded_meta.layers == 1 and len(modeling.base_model(loaded).encoder.layer) == 1
    with pytest.raises(ValueError, match="layers must be within 1..2"):
        modeling.bottom_layers(modeling.load_backbone(modeling.TINY_BACKBONE), 3)


@pytest.mark.parametrize("mode,int8", [("multi", False), ("multi", True), ("merged", False)])
def test_the_bank_serves_a_student_beside_full_adapters_as_each_gives_alone(tmp_path, mode, int8):
    full, student = _adapter(tmp_path / "full", seed=1), _adapter(tmp_path / "student", seed=2, layers=1)
    bank = make_bank(modeling.TINY_BACKBONE, mode=mode, int8=int8)
    bank.load("relevance@v1", full)
    bank.load("relevance_student@v1", student)
    if not int8:   # int8 changes the feed-forward numbers of both: compared with each other below
        np.testing.assert_allclose(bank.predict_proba("relevance_student@v1", PAIRS), _alone(student), atol=1e-5)
        np.testing.assert_allclose(bank.predict_proba("relevance@v1", PAIRS), _alone(full), atol=1e-5)
    alone = [bank.predict_proba(n, PAIRS) for n in ("relevance@v1", "relevance_student@v1")]
    assert not np.allclose(alone[0], alone[1])
    mixed = bank.predict_proba_many([("relevance@v1", PAIRS[:2]), ("relevance_student@v1", PAIRS),
                                     ("relevance@v1", PAIRS[2:])], batch_size=3)
    atol = 1e-3 if int8 else 1e-5   # int8 quantizes activations per batch: other rows move them a little
    np.testing.assert_allclose(np.concatenate([mixed[0], mixed[2]]), alone[0], atol=atol)
    np.testing.assert_allclose(mixed[1], alone[1], atol=atol)
    if mode == "multi":
        assert len(bank._layers()) == 2   # the shared backbone is whole again after a student's forward
        with pytest.raises(ValueError, match="is a student"):
            bank.encode_prefix("relevance_student@v1", PAIRS, start=1)


def test_teacher_probabilities_are_the_training_targets():
    task = get_task("relevance_student")
    frame = pd.DataFrame({"query": [q for q, _ in PAIRS], "product_text": [t for _, t in PAIRS],
                          "label": ["exact", "irrelevant", "partial", "exact"],
                          training.TEACHER_PROBS: [np.array([0.1, 0.2, 0.7]), np.array([0.8, 0.1, 0.1]),
                                                   np.array([0.3, 0.4, 0.3]), np.array([0.0, 0.5, 0.5])]})
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    _, target = training.make_batch(task, tokenizer, list(GRADES), 32, frame)
    assert target.dtype == torch.float32 and target.shape == (4, 3)
    np.testing.assert_allclose(target[0].numpy(), [0.1, 0.2, 0.7], atol=1e-6)
    _, hard = training.make_batch(task, tokenizer, list(GRADES), 32, frame.drop(columns=[training.TEACHER_PROBS]))
    assert hard.tolist() == [2, 0, 1, 2]
    with pytest.raises(ValueError, match="2 classes"):
        training.make_batch(task, tokenizer, list(GRADES), 32,
                            frame.assign(**{training.TEACHER_PROBS: [np.array([0.5, 0.5])] * 4}))


def test_search_uses_a_student_only_while_its_teacher_is_what_it_would_serve(tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    assert student_for(registry, "auto", "v1") is None   # no student task at all
    for _ in range(2):
        registry.create_version("relevance", lambda d: (d / ADAPTER_DIR).mkdir(), config={}, metrics={})
    registry.create_version("relevance_student", lambda d: (d / ADAPTER_DIR).mkdir(), config={}, metrics={},
                            lineage={"teacher": "relevance@v1"})
    assert student_for(registry, "auto", "v1") is None   # made, not yet CURRENT
    registry.promote("relevance_student", "v1")
    assert student_for(registry, "auto", "v1") == "relevance_student@v1"
    assert student_for(registry, "auto", "v2") is None   # the stream promoted v2: its teacher reranks
    assert student_for(registry, "relevance_student", "v2") == "relevance_student@v1"
    assert student_for(registry, "relevance", "v1") is None
