"""An exponential moving average of a model's trainable weights (Polyak averaging; timm's ModelEma).

Single runs of a short fine-tune end wherever the last few noisy steps left them; the average of the
recent weights sits nearer the middle of where training has been and usually scores a little
higher and varies less between seeds. The half-life is a share of the run's steps, so one setting
means the same in a 94-step budget and a 900-step preset. Training always steps the raw weights;
validation, checkpoints and the registered adapter read the average (`applied`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    """The average of `model`'s trainable parameters, updated after each optimizer step."""

    def __init__(self, model: nn.Module, half_life_steps: float):
        if half_life_steps <= 0:
            raise ValueError("half_life_steps must be > 0")
        self.decay = 0.5 ** (1.0 / half_life_steps)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update: shorter memory for the first steps (timm's warm-up,
        (1 + n) / (10 + n)), so the random head and zero B matrices of step 0 fade fast."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], weight)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its raw ones again after it."""
        raw = [p.detach().clone() for p in self.params]
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)
        try:
            yield
        finally:
            for p, r in zip(self.params, raw):
                p.copy_(r)

    def state_dict(self) -> dict:
        """What a resume needs besides the checkpoint's (averaged) adapter: the raw weights training
        continues from, the average and the update count."""
        return {"raw": [p.detach().cpu().clone() for p in self.params],
                "shadow": [s.detach().cpu().clone() for s in self.shadow], "updates": self.updates}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if len(state["raw"]) != len(self.params):
            raise ValueError(f"the saved weight average holds {len(state['raw'])} tensors, the model trains "
                             f"{len(self.params)}")
        for p, r, s, t in zip(self.params, state["raw"], self.shadow, state["shadow"]):
            p.copy_(r)
            s.copy_(t)
        self.updates = int(state["updates"])
