"""Incremental LoRA updates trained in a warm process: no Ray Train job per update.

A stream update is small (hundreds of examples, the top layers of a 6-layer encoder): a Ray Train
job spent more time starting workers, reading its dataset and checkpointing than training. The
UpdateCoordinator actor lives as long as the stream and already holds the gate's backbone, so it
keeps a `WarmTrainer` too: the tokenizer and one pristine backbone stay in memory, and each update
copies the backbone, loads the parent adapter on it, trains a fixed number of epochs (no epoch is
chosen on the fresh holdout: the gate alone scores it) and registers the candidate. Examples with a
distilled `target` grade (`core.distill`: what the online click layer serves) train toward that
grade's distribution; the rest toward their label. With
`update.top_layers`, the states entering the first trained layer are computed once per update
(`core.training.LowerLayerCache`). Ray Train stays for offline training (`train.finetune`).

On a cluster the coordinator asks for a GPU when `update.use_gpu` (`actors.update_coordinator`).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pandas as pd
import torch

from core import modeling, training
from core.config import to_dict
from core.device import resolve_device, use_cpu_bf16
from core.distill import grade_distribution
from core.job_configs import FinetuneConfig
from core.registry import AdapterRegistry, VersionInfo
from core.tasks import GRADES, get_task
from core.registry import ADAPTER_DIR
from train.finetune import TrainingStopped, _unless_stopped


class WarmTrainer:
    """One backbone and tokenizer kept in memory; `train` makes a registered candidate from a parent."""

    def __init__(self, backbone: str, threads: int, use_gpu: bool = False):
        self.backbone_name, self.threads = backbone, threads
        self.device = resolve_device(use_gpu, "update.use_gpu", where="in the UpdateCoordinator actor")
        self.tokenizer = modeling.load_tokenizer(backbone)
        self._backbone = modeling.load_backbone(backbone)
        self.updates = 0

    def train(self, ft: FinetuneConfig, parent: VersionInfo, examples: pd.DataFrame, lineage: dict,
              stop_file: Path | None = None) -> VersionInfo:
        """Trains `ft.train.epochs` epochs from `parent` on `examples` and registers the candidate
        (not promoted). TrainingStopped when `stop_file` appears (checked between batches)."""
        torch.set_num_threads(self.threads)
        torch.manual_seed(ft.train.seed)  # dropout: the same window and seed make the same candidate
        start = time.perf_counter()
        task = get_task(ft.task)
        model, meta = modeling.load_adapter(parent.local_dir() / ADAPTER_DIR, backbone=copy.deepcopy(self._backbone),
                                            trainable=True)
        modeling.train_top_layers(model, ft.train.top_layers)
        model.to(self.device)
        labels = list(meta.labels)
        steps = math.ceil(len(examples) / ft.train.batch_size) * ft.train.epochs
        optimizer = training.make_optimizer(model, ft.train.lr, ft.train.weight_decay)
        scheduler = training.make_scheduler(optimizer, steps, ft.train.warmup_fraction)
        loss_fn = training.loss_function(task, labels, examples["label"].astype(str).tolist())
        layers = modeling.unwrap(model).encoder.config.num_hidden_layers
        top = ft.train.top_layers
        cache = training.LowerLayerCache(layers - top) if top and top < layers else None
        lengths = training.input_lengths(task)
        bf16 = use_cpu_bf16(ft.train.cpu_bf16, use_gpu=torch.device(self.device).type == "cuda")
        rewrite = training.input_rewrite(model)  # the parent's spelling normaliser, if it has one
        losses = []
        for epoch in range(ft.train.epochs):
            seed = ft.train.seed + epoch
            if cache is not None and cache.batches:
                batches = cache.replay(seed)
            else:
                frames = training.length_grouped([examples.sample(frac=1.0, random_state=seed)], ft.train.batch_size,
                                                 lengths, seed)
                batches = (_batch(task, self.tokenizer, labels, ft.train_length, f, rewrite) for f in frames)
                if cache is not None:
                    batches = cache.fill(model, batches, self.device, bf16)
            stats = training.run_epoch(model, _unless_stopped(batches, str(stop_file) if stop_file else None),
                                       optimizer, scheduler, loss_fn, None, self.device,
                                       start_layer=cache.start if cache is not None else None, cpu_bf16=bf16)
            losses.append(round(stats.loss, 4))
        seconds = time.perf_counter() - start
        model.eval()
        self.updates += 1
        registry = AdapterRegistry(ft.registry)
        return registry.create_version(
            ft.task, lambda d: modeling.save_adapter(modeling.unwrap(model), meta, d / ADAPTER_DIR),
            config={**to_dict(ft), "labels": labels},
            metrics={"train_loss": losses[-1], "train_seconds": round(seconds, 1), "train_examples": int(len(examples))},
            lineage={"parent": parent.version, "trigger": "stream", "trainer": "warm", "epoch_losses": losses, **lineage})


def _batch(task, tokenizer, labels: list[str], max_length: int, frame: pd.DataFrame, rewrite=None):
    """(features, target): hard label indices, or, when the frame has distilled `target` grades
    (`core.distill`), a probability row per example (one-hot for the rows without one). `rewrite`:
    `core.training.input_rewrite`'s, applied to the inputs first."""
    if "target" not in frame.columns or frame["target"].isna().all():
        return training.make_batch(task, tokenizer, labels, max_length, frame, rewrite)
    inputs = task.to_inputs(frame)
    features = modeling.tokenize(tokenizer, rewrite(inputs) if rewrite is not None else inputs, max_length)
    order = [GRADES.index(label) for label in labels]  # the head's label order, as grades
    rows = []
    for label, target in zip(frame["label"].astype(str), frame["target"]):
        if pd.isna(target):
            rows.append([1.0 if name == label else 0.0 for name in labels])
        else:
            grades = grade_distribution(target)
            rows.append([grades[i] for i in order])
    return features, torch.tensor(rows, dtype=torch.float32)


__all__ = ["TrainingStopped", "WarmTrainer"]
