"""The LoRA round trip on a tiny random BERT: save/reload, merge, resume. No Ray, no weights to download."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling, training
from core.modeling import AdapterMeta, LoraSpec
from core.tasks import get_task

TEXTS = ["where is my order", "cancel my subscription please", "i want a refund", "change my delivery address",
         "the dress runs small", "love these shoes", "track package", "reset my password"]


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.load_tokenizer(modeling.TINY_BACKBONE)


def _meta(task="intent", labels=("a", "b", "c"), dropout=0.0):
    return AdapterMeta(task=task, labels=list(labels), backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=dropout, target_modules=("query", "value")))


def _frame(n=16):
    return pd.DataFrame({"text": [TEXTS[i % len(TEXTS)] for i in range(n)],
                         "label": [("a", "b", "c")[i % 3] for i in range(n)]})


def _train_steps(model, tokenizer, frame, steps=3, lr=5e-2):
    task = get_task("intent")
    opt = training.make_optimizer(model, lr, 0.0)
    sched = training.make_scheduler(opt, steps, 0.0)
    batches = [training.make_batch(task, tokenizer, ["a", "b", "c"], 32, frame.iloc[i:i + 8]) for i in range(0, len(frame), 8)]
    return training.run_epoch(model, batches[:steps], opt, sched, torch.nn.CrossEntropyLoss()), opt, sched


def _lora_b_norm(model):
    return sum(float(p.detach().abs().sum()) for n, p in model.named_parameters() if "lora_B" in n)


def test_tiny_backbone_is_deterministic():
    a, b = modeling.load_backbone(modeling.TINY_BACKBONE), modeling.load_backbone(modeling.TINY_BACKBONE)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na


def test_only_lora_and_head_are_trainable():
    model = modeling.build_task_model(_meta())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)


def test_training_the_top_layers_leaves_the_lower_ones_as_they_were(tokenizer):
    model = modeling.build_task_model(_meta())
    for p in model.parameters():  # LoRA B starts at zero; make every LoRA weight non-trivial
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    assert modeling.train_top_layers(model, None) == 0
    assert modeling.train_top_layers(model, 1) == 4  # layer 0 of 2: query and value, A and B
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    _train_steps(model, tokenizer, _frame())
    lower = [n for n in before if modeling.layer_index(n) == 0]
    upper = [n for n in before if modeling.layer_index(n) == 1]
    params = dict(model.named_parameters())
    assert len(lower) == len(upper) == 4
    assert all(torch.equal(params[n], before[n]) and params[n].grad is None for n in lower)
    assert all(not torch.equal(params[n], before[n]) for n in upper)
    with pytest.raises(ValueError, match=">= 1"):
        modeling.train_top_layers(model, 0)


def test_save_reload_gives_identical_outputs(tmp_path, tokenizer):
    model = modeling.build_task_model(_meta())
    _train_steps(model, tokenizer, _frame())
    assert _lora_b_norm(model) > 0  # LoRA B starts at zero: make sure the adapter actually changed something
    before = modeling.predict_proba(model, tokenizer, TEXTS, 32)
    modeling.save_adapter(model, _meta(), tmp_path / "adapter")
    reloaded, meta = modeling.load_adapter(tmp_path / "adapter")
    after = modeling.predict_proba(reloaded, tokenizer, TEXTS, 32)
    assert meta == _meta()
    np.testing.assert_array_equal(before, after)


def test_adapter_changes_outputs_and_merge_equals_base_plus_adapter(tokenizer):
    model = modeling.build_task_model(_meta())
    _train_steps(model, tokenizer, _frame())
    model.eval()
    batch = modeling.tokenize(tokenizer, TEXTS, 32)
    with torch.no_grad():
        with_adapter = model(**batch)
        with model.encoder.disable_adapter():
            base_only = model(**batch)
    assert not torch.allclose(with_adapter, base_only, atol=1e-4)
    merged = modeling.merge(model)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        merged_out = merged(**batch)
    torch.testing.assert_close(merged_out, with_adapter, atol=1e-5, rtol=1e-4)


def test_merged_weight_is_w_plus_scaled_ba(tokenizer):
    meta = _meta()
    model = modeling.build_task_model(meta)
    _train_steps(model, tokenizer, _frame())
    layer = model.encoder.base_model.model.encoder.layer[0].attention.self.query
    w = layer.base_layer.weight.detach().clone()
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    expected = w + (b @ a) * (meta.lora.alpha / meta.lora.r)
    merged = modeling.merge(model)
    torch.testing.assert_close(merged.encoder.encoder.layer[0].attention.self.query.weight, expected)


def test_resume_continues_exactly_where_training_stopped(tmp_path, tokenizer):
    """2 epochs straight == 1 epoch, save adapter + state, reload, 1 more epoch."""
    frame = _frame(16)
    task = get_task("intent")
    batches = [training.make_batch(task, tokenizer, ["a", "b", "c"], 32, frame.iloc[i:i + 8]) for i in (0, 8)]
    meta = _meta(dropout=0.1)  # dropout on: the RNG state must travel with the checkpoint

    def fresh():
        model = modeling.build_task_model(meta, seed=0)
        opt = training.make_optimizer(model, 1e-2, 0.01)
        return model, opt, training.make_scheduler(opt, 4, 0.25)

    torch.manual_seed(7)
    straight, opt, sched = fresh()
    torch.manual_seed(7)
    for _ in range(2):
        training.run_epoch(straight, batches, opt, sched, torch.nn.CrossEntropyLoss())

    torch.manual_seed(7)
    first, opt, sched = fresh()
    torch.manual_seed(7)
    training.run_epoch(first, batches, opt, sched, torch.nn.CrossEntropyLoss())
    modeling.save_adapter(first, meta, tmp_path / "adapter")
    training.save_training_state(tmp_path, opt, sched, epoch=1, global_step=2)

    resumed, _ = modeling.load_adapter(tmp_path / "adapter", trainable=True)
    opt2 = training.make_optimizer(resumed, 1e-2, 0.01)
    sched2 = training.make_scheduler(opt2, 4, 0.25)
    epoch, step = training.load_training_state(tmp_path, opt2, sched2)
    assert (epoch, step) == (1, 2)
    assert sched2.last_epoch == 2  # the learning-rate schedule did not restart from zero
    training.run_epoch(resumed, batches, opt2, sched2, torch.nn.CrossEntropyLoss())

    for (n, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p, q, msg=n)


def test_pair_inputs_tokenize_as_two_segments(tokenizer):
    batch = modeling.tokenize(tokenizer, [("navy sneakers", "Acme Running Shoes - Blue")], 32)
    assert int(batch["token_type_ids"].max()) == 1


def test_embeddings_are_unit_length(tokenizer):
    backbone = modeling.load_backbone(modeling.TINY_BACKBONE)
    emb = modeling.embed(backbone, tokenizer, TEXTS, 32)
    assert emb.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(modeling.ModelLoadError, match="no adapter"):
        modeling.load_adapter(tmp_path)
    with pytest.raises(modeling.ModelLoadError, match="not 'minilm'"):
        modeling.backbone_path(str(tmp_path / "nothing"))


def test_progress_lines_give_the_planned_steps_the_time_so_far_and_the_eta(tokenizer):
    model = modeling.build_task_model(_meta(), seed=0)
    task, frame = get_task("intent"), _frame(32)
    batches = [training.make_batch(task, tokenizer, ["a", "b", "c"], 32, frame.iloc[i:i + 8]) for i in range(0, 32, 8)]
    opt = training.make_optimizer(model, 1e-3, 0.0)
    lines: list[str] = []
    training.run_epoch(model, batches, opt, training.make_scheduler(opt, 4, 0.0), torch.nn.CrossEntropyLoss(),
                       log_every=2, log=lines.append, planned_steps=4)
    assert len(lines) == 2
    assert re.fullmatch(r" step 2/4: loss \d+\.\d{4}, \d+\.\d samples/s, \d+ s, ETA \d+ s", lines[0]), lines
    assert re.fullmatch(r" step 4/4: loss \d+\.\d{4}, \d+\.\d samples/s, \d+ s, ETA 0 s", lines[1]), lines
    # past a plan that was too small, or with none, the line stops promising an end
    assert training.progress_line(5, 4, 0.5, 40, 2.0) == " step 5: loss 0.5000, 20.0 samples/s, 2 s"
    assert training.progress_line(5, None, 0.5, 40, 2.0) == " step 5: loss 0.5000, 20.0 samples/s, 2 s"
    assert training.progress_line(2, 8, 0.5, 16, 3.0) == " step 2/8: loss 0.5000, 5.3 samples/s, 3 s, ETA 9 s"
