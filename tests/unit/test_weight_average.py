"""The moving average of the trainable weights (`train.ema_half_life`): its arithmetic, the swap in
and out, and a resume that continues the raw weights and the average exactly."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from core import modeling, training
from core.modeling import AdapterMeta, LoraSpec
from core.tasks import get_task
from core.weight_average import WeightAverage

TEXTS = ["where is my order", "cancel my subscription please", "i want a refund", "change my delivery address"]


def _meta(dropout=0.0):
    return AdapterMeta(task="intent", labels=["a", "b", "c"], backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=dropout, target_modules=("query", "value")))


def _batches(tokenizer):
    frame = pd.DataFrame({"text": [TEXTS[i % 4] for i in range(16)], "label": [("a", "b", "c")[i % 3] for i in range(16)]})
    return [training.make_batch(get_task("intent"), tokenizer, ["a", "b", "c"], 32, frame.iloc[i:i + 8]) for i in (0, 8)]


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.load_tokenizer(modeling.TINY_BACKBONE)


def test_the_average_follows_the_formula_with_its_warm_up():
    w = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Module()
    model.w = w
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    model.frozen = frozen
    avg = WeightAverage(model, half_life_steps=2.0)
    assert avg.decay == pytest.approx(0.5 ** 0.5) and len(avg.shadow) == 1  # trainable weights only
    expected = torch.zeros(3)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        with torch.no_grad():
            w.fill_(value)
        decay = min(0.5 ** 0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
        avg.update()
        torch.testing.assert_close(avg.shadow[0], expected)
    with avg.applied():
        torch.testing.assert_close(w.detach(), expected)
    assert torch.equal(w.detach(), torch.full((3,), 5.0))  # the raw weights are back after the block
    with pytest.raises(ValueError, match="half_life_steps"):
        WeightAverage(model, 0.0)


def test_the_checkpoint_holds_the_average_and_a_resume_continues_both(tmp_path, tokenizer):
    """2 epochs straight == 1 epoch, save (averaged adapter + raw weights in the state), reload, 1 more."""
    batches = _batches(tokenizer)
    meta = _meta(dropout=0.1)

    def fresh(model=None):
        model = model or modeling.build_task_model(meta, seed=0)
        opt = training.make_optimizer(model, 1e-2, 0.01)
        return model, opt, training.make_scheduler(opt, 4, 0.25), WeightAverage(model, 1.5)

    torch.manual_seed(7)
    straight, opt, sched, avg = fresh()
    torch.manual_seed(7)
    for _ in range(2):
        training.run_epoch(straight, batches, opt, sched, torch.nn.CrossEntropyLoss(), averager=avg)

    torch.manual_seed(7)
    first, opt, sched, avg1 = fresh()
    torch.manual_seed(7)
    training.run_epoch(first, batches, opt, sched, torch.nn.CrossEntropyLoss(), averager=avg1)
    with avg1.applied():
        modeling.save_adapter(first, meta, tmp_path / "adapter")
    training.save_training_state(tmp_path, opt, sched, epoch=1, global_step=2, averager=avg1)

    resumed, _ = modeling.load_adapter(tmp_path / "adapter", trainable=True)
    trained = [n for n, p in resumed.named_parameters() if p.requires_grad]
    # The saved adapter is the average, not the last weights.
    saved = dict(resumed.named_parameters())
    raw = dict(first.named_parameters())
    assert any(not torch.allclose(saved[n], raw[n]) for n in trained)
    resumed, opt2, sched2, avg2 = fresh(resumed)
    assert training.load_training_state(tmp_path, opt2, sched2, avg2) == (1, 2)
    for n in trained:  # training continues from the raw weights
        torch.testing.assert_close(saved[n], raw[n], msg=n)
    training.run_epoch(resumed, batches, opt2, sched2, torch.nn.CrossEntropyLoss(), averager=avg2)

    for (n, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p, q, msg=n)
    for a, b in zip(avg.shadow, avg2.shadow):
        torch.testing.assert_close(a, b)
    assert avg2.updates == avg.updates == 4
