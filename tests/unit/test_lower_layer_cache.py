"""Training the top layers from cached lower-layer states (core.training.LowerLayerCache): the same
logits as a full forward, the lower layers run once (first epoch) and only the top layers learn."""

import numpy as np
import pandas as pd
import torch

from core import modeling, training
from core.modeling import AdapterMeta, TINY_BACKBONE, build_task_model, load_tokenizer
from core.tasks import get_task

LABELS = ["negative", "neutral", "positive"]


def _setup():
    meta = AdapterMeta(task="sentiment", labels=LABELS, backbone=TINY_BACKBONE, max_length=24)
    model = build_task_model(meta)
    modeling.train_top_layers(model, 1)
    tok = load_tokenizer(TINY_BACKBONE)
    frame = pd.DataFrame({"title": ["", "Nice", "", "Meh", "", "Bad"] * 4,
                          "text": ["love this dress", "fits well and soft", "it is ok i guess", "fabric so so",
                                   "ripped after a wash", "returned it at once"] * 4,
                          "label": ["positive", "positive", "neutral", "neutral", "negative", "negative"] * 4})
    batches = [training.make_batch(get_task("sentiment"), tok, LABELS, 24, frame.iloc[i:i + 8]) for i in range(0, 24, 8)]
    return model, batches


def test_logits_from_cached_states_match_a_full_forward():
    model, batches = _setup()
    model.eval()
    cache = training.LowerLayerCache(start=1)
    base = modeling.base_model(model)
    for features, _target, hidden in cache.fill(model, batches):
        full = model(**features)
        with modeling.from_layer(base, 1) as feed:
            feed(hidden.float())
            top = model(**features)
        torch.testing.assert_close(top, full, atol=2e-2, rtol=2e-2)  # the states are kept in bfloat16
    assert len(cache.batches) == 3 and cache.nbytes > 0


def test_later_epochs_skip_the_lower_layers_and_train_only_the_top():
    torch.manual_seed(0)
    model, batches = _setup()
    calls = []
    layer0 = modeling.base_model(model).encoder.layer[0]
    layer0.register_forward_hook(lambda *_: calls.append(1))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = training.make_optimizer(model, 1e-2, 0.0)
    sched = training.make_scheduler(opt, 30, 0.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    cache = training.LowerLayerCache(start=1)
    first = training.run_epoch(model, cache.fill(model, iter(batches)), opt, sched, loss_fn, start_layer=1)
    after_first = len(calls)
    losses = [training.run_epoch(model, cache.replay(seed=e), opt, sched, loss_fn, start_layer=1).loss for e in range(8)]
    assert after_first == 3 and len(calls) == after_first  # replayed epochs never ran layer 0
    assert first.steps == 3 and losses[-1] < first.loss
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    assert np.isfinite(losses).all()


def test_cpu_bf16_training_runs_the_forward_in_bf16_and_keeps_the_weights_fp32():
    """train.cpu_bf16: autocast on the CPU (where its matrix units do bf16, by default). The
    forward's matrix products run in bf16, the trainable weights, their gradients and the loss stay
    fp32, and the model still learns."""
    torch.manual_seed(0)
    model, batches = _setup()
    seen = []
    layer = modeling.base_model(model).encoder.layer[-1].output.dense
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    opt = training.make_optimizer(model, 1e-2, 0.0)
    sched = training.make_scheduler(opt, 30, 0.0)
    losses = [training.run_epoch(model, iter(batches), opt, sched, torch.nn.CrossEntropyLoss(), cpu_bf16=True).loss
              for _ in range(10)]
    assert set(seen) == {torch.bfloat16}
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable)
    seen.clear()
    training.run_epoch(model, iter(batches[:1]), opt, sched, torch.nn.CrossEntropyLoss())  # off: fp32 as before
    assert set(seen) == {torch.float32}


def test_use_cpu_bf16_follows_the_mode_and_the_hardware(monkeypatch):
    from core import device

    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: True)
    assert device.use_cpu_bf16("auto") and device.use_cpu_bf16("always") and not device.use_cpu_bf16("never")
    assert not device.use_cpu_bf16("auto", use_gpu=True) and not device.use_cpu_bf16("auto", int8=True)
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: False)
    assert not device.use_cpu_bf16("auto") and device.use_cpu_bf16("always")
