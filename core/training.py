"""The training loop's parts, framework-neutral: Ray Train workers and the plain-PyTorch benchmark
run the same code, so a throughput ratio between them measures Ray's overhead and nothing else.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from core import metrics as M
from core.device import autocast, to_device
from core.modeling import (TaskModel, base_model, from_layer, lower_states, predict_proba, tokenize,
                           unwrap)
from core.spelling import SpellingNormaliser, known_words
from core.tasks import Task
from core.typos import TypoNoise

_STATE = "training_state.pt"


@dataclass
class EpochStats:
    loss: float
    steps: int
    samples: int
    seconds: float
    data_seconds: float = 0.0
    """Of `seconds`, waiting for the next batch (reading, tokenizing: what a prefetch would hide)."""
    backward_seconds: float = 0.0
    """Of `seconds`, in backward (with several workers this includes DDP's gradient all-reduce and the
    wait for the slowest worker)."""

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def label_indices(labels: Sequence[str], values: Iterable[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for v in values:
        if v not in index:
            raise ValueError(f"label '{v}' is not in the label set {list(labels)}")
        out.append(index[v])
    return np.asarray(out, dtype=np.int64)


def input_noise(typo_rate: float, seed: int, epoch: int, rank: int = 0) -> TypoNoise | None:
    """The training inputs' noise for one epoch on one worker (`train.typo_rate`), or None."""
    return TypoNoise(typo_rate, (seed, epoch, rank)) if typo_rate > 0 else None


def spelling_normaliser(task: Task, frame: pd.DataFrame, tokenizer) -> SpellingNormaliser:
    """`model.spelling`'s normaliser: the vocabulary of the training split's inputs, with the
    tokenizer's whole words left alone."""
    return SpellingNormaliser.from_texts(task.to_inputs(frame), known_words(tokenizer))


def input_rewrite(model: nn.Module, noise: Callable[[list], list] | None = None) -> Callable[[list], list] | None:
    """What a training batch's inputs go through before tokenizing: the model's spelling normaliser
    (as in evaluation and serving), then the epoch's typing noise; None when neither applies."""
    normaliser = getattr(unwrap(model), "normaliser", None)
    steps = [step for step in (normaliser.batch if normaliser is not None else None, noise) if step is not None]
    if not steps:
        return None

    def rewrite(inputs: list) -> list:
        for step in steps:
            inputs = step(inputs)
        return inputs
    return rewrite


def loss_function(task: Task, labels: Sequence[str], train_labels: Sequence[str]) -> nn.Module:
    """Cross-entropy; with inverse-frequency class weights where the task asks (skewed ratings)."""
    if not task.class_weighted_loss:
        return nn.CrossEntropyLoss()
    counts = np.bincount(label_indices(labels, train_labels), minlength=len(labels)).astype(np.float64)
    weights = counts.sum() / (len(labels) * np.maximum(counts, 1.0))
    # Square root softens the weights: full inverse frequency overshoots the rare neutral class.
    weights = np.sqrt(weights)
    return nn.CrossEntropyLoss(weight=torch.tensor(weights / weights.mean(), dtype=torch.float32))


def probe_head(model: TaskModel, batches: Iterable[tuple], device, cpu_bf16: bool = False, c: float = 1.0) -> int:
    """Linear probing before fine-tuning (LP-FT, Kumar et al. 2022): the head starts as a logistic
    regression fitted on the frozen features of `batches` (the encoder's mean-pooled output with its
    LoRA at zero, what the head sees at step 0) instead of at random. Features are standardised for
    the fit and the scaling folded into the head's weights. Returns the examples it saw; 0 (head left
    as it is) with fewer than two classes among them."""
    from sklearn.linear_model import LogisticRegression

    task_model = unwrap(model)
    features, targets = [], []
    was_training = task_model.training
    task_model.eval()
    with torch.no_grad():
        for feats, target in batches:
            if target.dim() != 1:  # soft targets (a distillation): nothing to fit a probe on
                return 0
            feats = to_device(feats, device)
            with autocast(device, cpu_bf16):
                pooled = task_model.pooled(**feats)
            features.append(pooled.float().cpu().numpy())
            targets.append(target.numpy())
    task_model.train(was_training)
    if not features:
        return 0
    x, y = np.concatenate(features).astype(np.float64), np.concatenate(targets)
    classes = np.unique(y)
    if len(classes) < 2:
        return 0
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    probe = LogisticRegression(C=c, max_iter=500).fit((x - mean) / std, y)
    linear = task_model.head[-1]
    n_labels = linear.out_features
    weight, bias = np.zeros((n_labels, x.shape[1])), np.full(n_labels, -10.0)  # a class never seen: never chosen
    coef, intercept = probe.coef_, probe.intercept_
    if len(classes) == 2:  # sklearn's binary form: one row, for classes[1]
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[classes], bias[classes] = coef / std, intercept - (coef / std) @ mean
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))
    return len(y)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


TEACHER_PROBS = "teacher_probs"
"""A column of class probabilities (in the label order) from a teacher adapter: rows that carry it
train toward them (a student's distillation, `train.student`) instead of toward the hard label."""


def make_batch(task: Task, tokenizer, labels: Sequence[str], max_length: int, frame: pd.DataFrame,
               rewrite: Callable[[list], list] | None = None, ordinal_smoothing: float = 0.0):
    """Example rows -> (tokenised features, targets): label indices, or a probability row per
    example (cross-entropy takes either) when the frame has `TEACHER_PROBS` or with
    `ordinal_smoothing` (`ordinal_targets`). `rewrite` changes the model inputs first
    (`input_rewrite`: spelling normalisation, typing noise)."""
    inputs = task.to_inputs(frame)
    features = tokenize(tokenizer, rewrite(inputs) if rewrite is not None else inputs, max_length)
    if TEACHER_PROBS in frame.columns:
        probs = np.stack([np.asarray(p, dtype=np.float32) for p in frame[TEACHER_PROBS]])
        if probs.shape[1] != len(labels):
            raise ValueError(f"{TEACHER_PROBS} rows have {probs.shape[1]} classes, the labels {len(labels)}")
        return features, torch.from_numpy(probs)
    target = label_indices(labels, frame["label"].astype(str))
    if ordinal_smoothing:
        return features, torch.from_numpy(ordinal_targets(task, labels, frame, target, ordinal_smoothing))
    return features, torch.from_numpy(target)


def ordinal_targets(task: Task, labels: Sequence[str], frame: pd.DataFrame, target: np.ndarray,
                    smoothing: float) -> np.ndarray:
    """One probability row per example: its label's, except that an example whose finer grade
    borders another class (`task.leans_toward`: a 2-star review borders neutral) gives that class
    `smoothing` of it. The hard labels throw away that a 2-star review is closer to neutral than a
    1-star one; these keep it, for the boundary a macro-F1 on the middle class depends on."""
    if task.leans_toward is None:
        raise ValueError(f"train.ordinal_smoothing: task '{task.name}' has no finer grades to lean on")
    probs = np.eye(len(labels), dtype=np.float32)[target]
    leans = task.leans_toward(frame)
    for row, toward in enumerate(leans.tolist()):
        if isinstance(toward, str) and toward in labels and labels.index(toward) != target[row]:
            probs[row, target[row]] = 1.0 - smoothing
            probs[row, labels.index(toward)] = smoothing
    return probs


def length_grouped(frames: Iterable[pd.DataFrame], batch_size: int, text_length, seed: int) -> Iterator[pd.DataFrame]:
    """Batches of similar-length examples, in random order (Hugging Face's group_by_length).

    Each incoming chunk (many batches' worth) is sorted by text length and cut into batches, so a
    batch pads to a length near its own examples' instead of the chunk's longest: about 1.5x fewer
    tokens on reviews. The batch order is shuffled so training does not see lengths in order.
    """
    rng = np.random.default_rng(seed)
    for frame in frames:
        ordered = frame.iloc[np.argsort(text_length(frame), kind="stable")]
        chunks = [ordered.iloc[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
        for k in rng.permutation(len(chunks)):
            yield chunks[k]


def input_lengths(task: Task):
    """Characters per example's model input: a cheap proxy for its token count."""
    def lengths(frame: pd.DataFrame) -> np.ndarray:
        return np.array([len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in task.to_inputs(frame)])
    return lengths


class LowerLayerCache:
    """Training batches with the hidden states entering encoder layer `start`, kept for later epochs.

    When only the top layers train (`train.top_layers`), the layers below compute the same states
    for an example every epoch: the first epoch computes them once (no gradient) and keeps them in
    bfloat16 beside the batch; later epochs replay the kept batches in a new order and run only the
    top layers. Memory: about tokens x hidden x 2 bytes per example (~70 KB for a MiniLM review)."""

    def __init__(self, start: int):
        if start < 1:
            raise ValueError(f"cached layers must start at 1 or above (got {start})")
        self.start = start
        self.batches: list[tuple[dict, torch.Tensor, torch.Tensor]] = []

    def fill(self, model: nn.Module, batches: Iterable[tuple[dict, torch.Tensor]], device: str | torch.device = "cpu",
             cpu_bf16: bool = False):
        """Yields each batch with its lower-layer states, and keeps them (first epoch)."""
        base = base_model(model)
        for features, target in batches:
            features = to_device(features, device)
            with autocast(device, cpu_bf16):
                hidden = lower_states(base, features, self.start)
            item = (features, target, hidden)
            self.batches.append(item)
            yield item

    def replay(self, seed: int):
        """The kept batches in a seeded random order (later epochs)."""
        for k in np.random.default_rng(seed).permutation(len(self.batches)):
            yield self.batches[k]

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for _, _, h in self.batches)


def run_epoch(model: TaskModel, batches: Iterable[tuple], optimizer, scheduler,
              loss_fn: nn.Module, max_steps: int | None = None, device: str | torch.device = "cpu",
              log_every: int = 0, log=print, start_layer: int | None = None, cpu_bf16: bool = False,
              planned_steps: int | None = None) -> EpochStats:
    """One pass of LoRA training; returns mean loss and throughput.

    Every `log_every` steps, `log` gets a progress line: the step (of `planned_steps`, when given),
    the running loss and throughput, the seconds elapsed and the epoch's ETA at this pace.

    Batches are (features, target), or (features, target, hidden) with `start_layer`: then the
    forward runs only the layers from `start_layer` up, from `hidden` (a LowerLayerCache's).
    On a CUDA device (`core.device`): batches go over from pinned host memory without blocking, and
    forward runs under bf16 autocast (no GradScaler: bf16 has fp32's range); the loss is computed in
    fp32. The model must already be on `device`. On the CPU: fp32, or bf16 autocast with `cpu_bf16`
    (`core.device.use_cpu_bf16` decides from the config), the loss again in fp32."""
    model.train()
    loss_fn = loss_fn.to(device)
    total_loss, steps, samples, data_s, backward_s = 0.0, 0, 0, 0.0, 0.0
    start = time.perf_counter()
    base = base_model(model) if start_layer is not None else None
    batches = iter(batches)
    while True:
        fetch = time.perf_counter()
        try:
            features, target, *hidden = next(batches)
        except StopIteration:
            break
        data_s += time.perf_counter() - fetch
        features, target = to_device(features, device), to_device(target, device)
        with autocast(device, cpu_bf16):
            if hidden and base is not None:
                with from_layer(base, start_layer) as feed:
                    feed(hidden[0].to(device=device, dtype=torch.float32))
                    logits = model(**features)
            else:
                logits = model(**features)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        backward = time.perf_counter()
        loss.backward()
        backward_s += time.perf_counter() - backward
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach())
        steps += 1
        samples += int(target.shape[0])
        if log_every and steps % log_every == 0:
            log(progress_line(steps, planned_steps, total_loss / steps, samples, time.perf_counter() - start))
        if max_steps is not None and steps >= max_steps:
            break
    seconds = time.perf_counter() - start
    return EpochStats(loss=total_loss / max(steps, 1), steps=steps, samples=samples, seconds=seconds,
                      data_seconds=data_s, backward_seconds=backward_s)


def progress_line(steps: int, planned: int | None, loss: float, samples: int, elapsed: float) -> str:
    """' step 50/106: loss 1.9564, 192.9 samples/s, 26 s, ETA 29 s': the ETA only while the plan holds."""
    on_plan = bool(planned) and planned >= steps
    of = f"/{planned}" if on_plan else ""
    eta = f", ETA {elapsed / steps * (planned - steps):.0f} s" if on_plan else ""
    return f" step {steps}{of}: loss {loss:.4f}, {samples / elapsed if elapsed else 0.0:.1f} samples/s, {elapsed:.0f} s{eta}"


def evaluate(model: TaskModel, tokenizer, task: Task, labels: Sequence[str], frame: pd.DataFrame,
             max_length: int, batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, float]:
    """The task's metrics of `model` on example rows (rows with labels outside the set are an error)."""
    return evaluate_tuned(model, tokenizer, task, labels, frame, max_length, batch_size, device, tune=False)[0]


def evaluate_tuned(model: TaskModel, tokenizer, task: Task, labels: Sequence[str], frame: pd.DataFrame,
                   max_length: int, batch_size: int = 64, device: str | torch.device = "cpu",
                   tune: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """(metrics, class offsets): with `tune`, for a classification task whose primary metric is
    macro-F1, the offsets `fit_class_offsets` finds on these rows and the metrics with them applied;
    otherwise zero offsets and the plain metrics."""
    probs = predict_proba(unwrap(model), tokenizer, task.to_inputs(frame), max_length, batch_size, device)
    y_true = label_indices(labels, frame["label"].astype(str))
    groups = frame[task.group_field].tolist() if task.group_field else None
    offsets = np.zeros(len(labels))
    if tune and task.head == "classification" and task.primary_metric == "macro_f1" and len(frame):
        k = list(range(len(labels)))
        offsets = fit_class_offsets(probs, y_true, lambda t, p: M.macro_f1(t, p, labels=k))
        shifted = np.log(np.clip(probs, 1e-12, 1.0)) + offsets
        probs = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    return task.score_report(labels, y_true, probs, groups), offsets


def fit_class_offsets(probs: np.ndarray, y_true: np.ndarray, score, grid: Sequence[float] = tuple(np.arange(-2.0, 2.01, 0.25)),
                      rounds: int = 2) -> np.ndarray:
    """Per-class additive logit offsets that maximise `score(y_true, y_pred)` on validation rows.

    Cross-entropy with class weights picks a decision rule for accuracy-like losses; a metric such as
    macro-F1 is won or lost on the rare classes' thresholds. Coordinate ascent over a coarse grid
    (class 0 stays at 0: only differences matter) moves each class's threshold where validation says
    the metric is higher; a move must gain strictly. Folded into the head's bias, the served model
    decides the same way. Returns zeros when nothing improves."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    offsets = np.zeros(logp.shape[1])
    best = score(y_true, logp.argmax(axis=1))
    for _ in range(rounds):
        moved = False
        for k in range(1, logp.shape[1]):
            for value in grid:
                trial = offsets.copy()
                trial[k] = value
                s = score(y_true, (logp + trial).argmax(axis=1))
                if s > best + 1e-9:
                    best, offsets, moved = s, trial, True
        if not moved:
            break
    return offsets


@torch.no_grad()
def shift_head_bias(model: TaskModel, offsets: np.ndarray) -> None:
    """Add per-class offsets to the head's output bias, in place (subtract them to undo)."""
    bias = unwrap(model).head[1].bias
    bias += torch.as_tensor(offsets, dtype=bias.dtype, device=bias.device)


def sample_examples(frame: pd.DataFrame, group_field: str | None, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of about n rows; for ranking tasks whole groups, so per-query metrics stay valid."""
    if not group_field:
        return frame.sample(n=n, random_state=seed)
    groups = frame[group_field].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = frame.groupby(group_field).size().reindex(groups).cumsum()
    keep = set(sizes[sizes <= n].index) or {groups.iloc[0]}
    return frame[frame[group_field].isin(keep)]


def steps_per_epoch(n_examples: int, batch_size: int, num_workers: int, max_steps: int | None) -> int:
    steps = math.ceil(n_examples / max(1, num_workers) / batch_size)
    return min(steps, max_steps) if max_steps else steps


def save_training_state(directory: str | Path, optimizer, scheduler, epoch: int, global_step: int) -> None:
    """Optimizer, scheduler and counters: with the adapter, enough to resume where a run stopped."""
    # The RNG state too: dropout masks after a resume are the ones an uninterrupted run would draw.
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "global_step": global_step, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from CUDA's generator
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, Path(directory) / _STATE)


def load_training_state(directory: str | Path, optimizer, scheduler) -> tuple[int, int]:
    """Restores optimizer and scheduler in place; returns (epochs done, global step)."""
    state = torch.load(Path(directory) / _STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), int(state["global_step"])
