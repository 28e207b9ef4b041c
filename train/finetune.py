"""LoRA fine-tuning of one task on Ray Train, registered as a new adapter version.

Reads `<data_dir>/<task>/train` as a Ray Dataset (each worker iterates its `get_dataset_shard`),
trains a LoRA adapter plus head with `TorchTrainer`, validates on `<task>/val` after every epoch
and reports the metrics with an adapter checkpoint (`ray.train.report`). At the end the best
epoch's adapter (by the task's primary validation metric) is written to the registry as a new
version, with its metrics, the resolved config and lineage. The first version of a task is made
CURRENT; later ones wait for evaluation or the update coordinator to promote them.

Refuses (one error line, exit 2): no prepared data, an unknown task or config key, a validation
label outside the training label set, a resume checkpoint that does not exist.

    python -m train.finetune --config configs/sentiment.yaml [train.epochs=1 ...]
    aisle train sentiment
    ray job submit --working-dir . -- python -m train.finetune --config configs/sentiment.yaml
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core import storage
from core.config import from_dict, to_dict
from core.device import resolve_device, use_cpu_bf16
from core.errors import AisleError, InputError
from core.job_configs import FinetuneConfig
from core.registry import ADAPTER_DIR, VersionInfo
from core.spelling import SpellingNormaliser
from core.tasks import get_task
from ops.runtime import (check_gpu_resources, ensure_ray, job_main, train_failures, train_logging, train_scaling,
                         train_worker_env, quiet_train_worker)
from train import fitting

READ_TASK_CPUS = 0.25
SMALL_SPLIT_ROWS = 5_000
GROUP_BATCHES = 16
"""Batches per length-grouped chunk: examples of similar length are batched together."""
GPU_KEY = "scaling.use_gpu"
STREAM_GPU_KEY = "update.use_gpu"
"""The config key a stream update's `scaling.use_gpu` comes from (`train.incremental`), for errors."""


def worker_loop(config: dict) -> None:
    """Runs in every Ray Train worker."""
    quiet_train_worker()
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from core import modeling, training

    cfg = from_dict(FinetuneConfig, config["cfg"])
    labels: list[str] = config["labels"]
    task = get_task(cfg.task)
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    # use_gpu: this worker's GPU (Ray sets CUDA_VISIBLE_DEVICES), bf16 autocast and pinned batch copies
    # in core.training; an error naming the config key if the worker sees no CUDA device.
    device = resolve_device(cfg.scaling.use_gpu, config.get("gpu_key", GPU_KEY), where="in this Ray Train worker")
    if device.type == "cuda":
        device = ray.train.torch.get_device()

    tokenizer = modeling.load_tokenizer(cfg.model.backbone)
    meta = adapter_meta(cfg, labels)
    # get_checkpoint(): this run restarted after a worker failure. resume_from: continue an earlier run
    # (Ray Train V2 dropped resume_from_checkpoint; the loop loads it itself, ray-project/ray#49454).
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    start_epoch, global_step = 0, 0
    if checkpoint:
        with checkpoint.as_directory() as d:
            model, _ = modeling.load_adapter(Path(d) / ADAPTER_DIR, trainable=True)
    elif config.get("parent_adapter"):
        model = _load_parent(config["parent_adapter"])
    else:
        model = modeling.build_task_model(meta, seed=cfg.train.seed)
        if config.get("spelling"):
            model.normaliser = SpellingNormaliser.from_dict(config["spelling"])
    modeling.train_top_layers(model, cfg.train.top_layers)
    bf16 = use_cpu_bf16(cfg.train.cpu_bf16, use_gpu=cfg.scaling.use_gpu)
    if cfg.train.probe_examples > 0 and checkpoint is None and not config.get("parent_adapter"):
        # Before prepare_model: DDP broadcasts rank 0's head to the other workers.
        t0 = time.perf_counter()
        probe_rows = ray.train.get_dataset_shard("train").iter_batches(
            batch_size=cfg.train.batch_size, batch_format="pandas", local_shuffle_buffer_size=4096,
            local_shuffle_seed=cfg.train.seed)  # a split stored by label (Bitext's) still gives every class
        probe_rows = itertools.islice(probe_rows, math.ceil(cfg.train.probe_examples / cfg.train.batch_size))
        rewrite = training.input_rewrite(model)
        probed = training.probe_head(model, (training.make_batch(task, tokenizer, labels, cfg.train_length, frame,
                                                                 rewrite) for frame in probe_rows),
                                     next(model.parameters()).device, bf16)
        if rank == 0:
            print(f"[{cfg.task}] head probed on {probed} examples in {time.perf_counter() - t0:.1f} s")
    model = ray.train.torch.prepare_model(model)

    total_steps = config["steps_per_epoch"] * cfg.train.epochs
    optimizer = training.make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scheduler = training.make_scheduler(optimizer, total_steps, cfg.train.warmup_fraction)
    if checkpoint:
        with checkpoint.as_directory() as d:
            start_epoch, global_step = training.load_training_state(d, optimizer, scheduler)
        print(f"[{cfg.task}] resumed from checkpoint: {start_epoch} epoch(s) done, step {global_step}")

    loss_fn = training.loss_function(task, labels, config["train_label_sample"])
    val = storage.read_parquet(config["val_path"]) if rank == 0 else None
    if val is not None and cfg.train.max_eval_examples and len(val) > cfg.train.max_eval_examples:
        val = training.sample_examples(val, task.group_field, cfg.train.max_eval_examples, cfg.train.seed)
    shard = ray.train.get_dataset_shard("train")
    lengths = training.input_lengths(task)
    run_samples, run_seconds = 0, 0.0  # this run's training loop only (not validation or checkpointing)
    run_data, run_backward = 0.0, 0.0  # of run_seconds: waiting for batches; in backward (with DDP's all-reduce)
    cache = (training.LowerLayerCache(modeling.unwrap(model).encoder.config.num_hidden_layers - cfg.train.top_layers)
             if cfg.train.cache_lower_layers else None)

    for epoch in range(start_epoch, cfg.train.epochs):
        if cache is not None and cache.batches:
            batches = cache.replay(cfg.train.seed + epoch)
        else:
            chunks = shard.iter_batches(batch_size=GROUP_BATCHES * cfg.train.batch_size, batch_format="pandas",
                                        local_shuffle_buffer_size=GROUP_BATCHES * cfg.train.batch_size,
                                        local_shuffle_seed=cfg.train.seed + epoch)
            rewrite = training.input_rewrite(model, training.input_noise(cfg.train.typo_rate, cfg.train.seed, epoch, rank))
            batches = (training.make_batch(task, tokenizer, labels, cfg.train_length, frame, rewrite,
                                           cfg.train.ordinal_smoothing)
                       for frame in training.length_grouped(chunks, cfg.train.batch_size, lengths, cfg.train.seed + epoch))
            if cache is not None:
                batches = cache.fill(model, batches, device, bf16)
        batches = _unless_stopped(batches, config.get("stop_file"))
        stats = training.run_epoch(model, batches, optimizer, scheduler, loss_fn, cfg.train.max_steps_per_epoch,
                                   device, log_every=50 if rank == 0 else 0,
                                   log=lambda m: print(f"[{cfg.task}] epoch {epoch + 1}{m}"),
                                   start_layer=cache.start if cache is not None else None, cpu_bf16=bf16,
                                   planned_steps=config["steps_per_epoch"])
        global_step += stats.steps
        run_samples, run_seconds = run_samples + stats.samples, run_seconds + stats.seconds
        run_data, run_backward = run_data + stats.data_seconds, run_backward + stats.backward_seconds
        # run_start_epoch: the epoch this attempt began at (> 0 after a resume: a restart after a lost
        # worker, or resume_from).
        metrics = {"epoch": epoch + 1, "step": global_step, "train_loss": stats.loss, "run_start_epoch": start_epoch,
                   "train_samples_per_s": stats.samples_per_s, "train_samples": stats.samples,
                   "run_train_samples_per_s": run_samples / run_seconds if run_seconds else 0.0,
                   "run_data_wait_share": run_data / run_seconds if run_seconds else 0.0,
                   "run_backward_share": run_backward / run_seconds if run_seconds else 0.0}
        if rank != 0:
            ray.train.report(metrics)
            continue
        val_metrics, offsets = training.evaluate_tuned(model, tokenizer, task, labels, val, cfg.model.max_length, 64,
                                                       device, tune=cfg.train.tune_class_offsets)
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        tuned = f" (class offsets {np.round(offsets, 2).tolist()})" if offsets.any() else ""
        print(f"[{cfg.task}] epoch {epoch + 1}/{cfg.train.epochs}: loss {stats.loss:.4f}, "
              f"{stats.samples_per_s:.1f} samples/s, val {task.primary_metric} {val_metrics[task.primary_metric]:.4f}{tuned}")
        with tempfile.TemporaryDirectory() as tmp:
            # The checkpoint's head decides with the offsets chosen on validation; training goes on without them.
            training.shift_head_bias(model, offsets)
            modeling.save_adapter(model, meta, Path(tmp) / ADAPTER_DIR)
            training.shift_head_bias(model, -offsets)
            training.save_training_state(tmp, optimizer, scheduler, epoch + 1, global_step)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class TrainingStopped(RuntimeError):
    """The run's stop file appeared: the worker ends the run (Ray Train then releases its workers)."""


def _unless_stopped(batches, stop_file: str | None, every_s: float = 1.0):
    """`batches`, until `stop_file` exists (looked at before the first batch, then at most every `every_s`)."""
    if not stop_file:
        yield from batches
        return
    checked = float("-inf")
    for batch in batches:
        if time.monotonic() - checked >= every_s:
            checked = time.monotonic()
            if Path(stop_file).exists():
                raise TrainingStopped(f"stopped: {stop_file} exists")
        yield batch


def adapter_meta(cfg: FinetuneConfig, labels: list[str]):
    from core.modeling import AdapterMeta, LoraSpec

    m = cfg.model
    return AdapterMeta(task=cfg.task, labels=list(labels), backbone=m.backbone, max_length=m.max_length,
                       lora=LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout,
                                     target_modules=tuple(m.lora_targets)), layers=m.layers)


def _load_parent(location: str):
    """The parent adapter, trainable: from a local directory, or downloaded in this worker from a URI
    (an s3:// registry: workers need not share the driver's disk)."""
    from core import modeling

    if not storage.is_remote(location):
        return modeling.load_adapter(location, trainable=True)[0]
    with tempfile.TemporaryDirectory() as tmp:
        storage.download_dir(location, tmp)
        return modeling.load_adapter(tmp, trainable=True)[0]


def _split_dir(cfg: FinetuneConfig, split: str) -> str:
    """`<data_dir>/<task>/<split>`: an absolute local path, or a URI (s3://...) left as it is."""
    path = storage.join(cfg.data_dir, cfg.task, split)
    if not any(name.endswith(".parquet") for name in storage.list_files(path, recursive=False)):
        source = get_task(cfg.task).distilled_from
        first = f"`aisle distill` (it distils {source})" if source else "data_pipelines.prepare"
        raise InputError(f"no prepared {split} data for task '{cfg.task}' at {path}; run {first} first")
    return path if storage.is_remote(path) else str(Path(path).resolve())


@dataclass
class Prepared:
    """What `setup` made ready for one training run."""
    cfg: FinetuneConfig
    labels: list[str]
    train_labels: pd.Series
    train_ds: object  # a materialized ray.data.Dataset
    n_train: int
    val_dir: str
    gpu_key: str
    run_name: str
    primary: str  # val_<the task's primary metric>: the best epoch's criterion
    spelling: dict | None = None  # model.spelling: the normaliser the workers attach to a new model


def run(cfg: FinetuneConfig, parent: VersionInfo | None = None, trigger: str = "offline",
        extra_lineage: dict | None = None, stop_file: Path | None = None) -> VersionInfo:
    """setup -> fit -> pick the best epoch -> register. `parent` continues from an existing adapter
    (incremental updates).

    `cfg.reuse`: return the version an earlier offline run registered from the same settings,
    prepared data and code (train.fitting.reusable), if there is one.

    `stop_file`: a path the workers can see; once it exists the run stops at the next batch and this
    raises AisleError, with nothing registered. Stopping the run this way, not by killing the
    process that called fit(), lets Ray Train release its placement group (its own cleaner of
    orphaned groups needs the dashboard's State API)."""
    fp = fitting.training_fingerprint("finetune", cfg, storage.join(cfg.data_dir, cfg.task)) if parent is None else None
    if cfg.reuse and (found := fitting.reusable(cfg.registry, cfg.task, fp)):
        return found
    prepared = setup(cfg, parent, trigger)
    result, seconds = fit(prepared, parent, stop_file)
    best, metrics = pick(prepared, result)
    return register(prepared, best, metrics, seconds, parent, trigger, extra_lineage, fp)


def setup(cfg: FinetuneConfig, parent: VersionInfo | None, trigger: str) -> Prepared:
    """Checks the inputs (splits, labels, checkpoint, GPU), joins Ray, and reads and samples the
    training split once, before the workers start (no read tasks compete with training)."""
    import ray.data

    task = get_task(cfg.task)
    if cfg.train.ordinal_smoothing and task.leans_toward is None:
        raise InputError(f"train.ordinal_smoothing: task '{cfg.task}' has no finer ordered grades to lean on "
                         "(sentiment's stars do); set it to 0")
    train_dir, val_dir = _split_dir(cfg, "train"), _split_dir(cfg, "val")
    if cfg.train.ordinal_smoothing:
        _check_finer_grades(cfg, task, train_dir)
    if cfg.resume_from and not Path(cfg.resume_from).is_dir():
        raise InputError(f"resume_from checkpoint not found: {cfg.resume_from}")
    if Path(cfg.model.backbone).expanduser().is_dir():  # workers run elsewhere: hand them an absolute path
        cfg.model.backbone = str(Path(cfg.model.backbone).expanduser().resolve())
    ensure_ray()
    gpu_key = STREAM_GPU_KEY if trigger == "stream" else GPU_KEY
    check_gpu_resources(cfg.scaling.use_gpu, gpu_key)

    train_labels = storage.read_parquet(train_dir, columns=["label"])["label"].astype(str)
    labels = list(parent.config["labels"]) if parent else list(task.labels or sorted(train_labels.unique()))
    unknown = sorted(set(storage.read_parquet(val_dir, columns=["label"])["label"].astype(str)) - set(labels))
    if unknown:
        raise InputError(f"validation labels {unknown} of task '{cfg.task}' are not in the training label set")

    n_train = len(train_labels)
    spelling = cfg.model.spelling and parent is None  # an update inherits its parent's normaliser
    # The driver reads the rows itself, once, where it needs them: to build a small split's blocks,
    # or to count a new spelling vocabulary's words.
    rows = storage.read_parquet(train_dir) if n_train <= SMALL_SPLIT_ROWS or spelling else None
    if n_train <= SMALL_SPLIT_ROWS:
        # A small split (a stream update's) is built into blocks here and put in the object store:
        # no Ray task at all. Ray 2.60's from_pandas and read_parquet each start a task that asks
        # for one whole CPU (block metadata, file listing) with no way to ask for less, and beside
        # Serve on a small machine less than one CPU is free: the update would wait forever.
        train_ds = ray.data.from_items(rows.to_dict("records"), override_num_blocks=cfg.scaling.num_workers)
    else:
        # Read tasks ask for a fraction of a CPU, so reading shares a machine with Serve; the file
        # listing task before them still takes one whole CPU (Ray 2.60 has no option for it).
        train_ds = ray.data.read_parquet(train_dir, num_cpus=READ_TASK_CPUS)
    if cfg.train.max_train_examples and n_train > cfg.train.max_train_examples:
        train_ds = train_ds.random_shuffle(seed=cfg.train.seed).limit(cfg.train.max_train_examples)
        n_train = cfg.train.max_train_examples
    return Prepared(cfg=cfg, labels=labels, train_labels=train_labels, train_ds=train_ds.materialize(),
                    n_train=n_train, val_dir=val_dir, gpu_key=gpu_key,
                    run_name=cfg.run_name or f"{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}",
                    primary=f"val_{task.primary_metric}",
                    spelling=_spelling(cfg, rows) if spelling else None)


def _check_finer_grades(cfg: FinetuneConfig, task, train_dir: str) -> None:
    """`train.ordinal_smoothing` reads each row's finer grade (sentiment's `rating`): prepared rows
    without it are refused here, in one line, not by a traceback in a training worker."""
    first = min(name for name in storage.list_files(train_dir, recursive=False) if name.endswith(".parquet"))
    try:
        task.leans_toward(storage.read_parquet(storage.join(train_dir, first)).head(64))
    except KeyError as missing:
        raise InputError(f"train.ordinal_smoothing: the prepared {cfg.task} rows at {train_dir} have no column "
                         f"{missing} (the finer grade it leans on); prepare them again, or set it to 0") from None


def _spelling(cfg: FinetuneConfig, frame: pd.DataFrame) -> dict:
    """`model.spelling`: the vocabulary of the whole training split (every row, also past
    `train.max_train_examples`: word counts cost nothing to learn), as the workers rebuild it."""
    from core import modeling, training

    normaliser = training.spelling_normaliser(get_task(cfg.task), frame, modeling.load_tokenizer(cfg.model.backbone))
    print(f"[{cfg.task}] spelling: {len(normaliser)} words from {len(frame)} training examples")
    return normaliser.to_dict()


def fit(prepared: Prepared, parent: VersionInfo | None, stop_file: Path | None):
    """The Ray Train run (`worker_loop` on each worker); (its Result, seconds). A failed or stopped
    run is an AisleError with its cause in one line."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from core.training import steps_per_epoch

    cfg = prepared.cfg
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "cfg": to_dict(cfg), "labels": prepared.labels, "val_path": prepared.val_dir,
            "steps_per_epoch": steps_per_epoch(prepared.n_train, cfg.train.batch_size, cfg.scaling.num_workers,
                                               cfg.train.max_steps_per_epoch),
            "train_label_sample": prepared.train_labels.tolist(),
            "parent_adapter": _parent_location(parent),
            "resume_from": str(Path(cfg.resume_from).resolve()) if cfg.resume_from else None,
            "gpu_key": prepared.gpu_key,
            "stop_file": str(Path(stop_file).resolve()) if stop_file else None,
            "spelling": prepared.spelling,
        },
        scaling_config=train_scaling(cfg.scaling),
        run_config=ray.train.RunConfig(
            name=prepared.run_name, storage_path=storage.absolute(cfg.storage_path), logging_config=train_logging(),
            worker_runtime_env=train_worker_env(cfg.scaling), failure_config=train_failures(cfg.scaling),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=prepared.primary,
                                                         checkpoint_score_order="max"),
        ),
        datasets={"train": prepared.train_ds},
    )

    def stopped(e: Exception) -> None:
        if stop_file and Path(stop_file).exists():
            raise AisleError(f"training of '{cfg.task}' stopped: {stop_file} appeared; nothing registered") from e

    return fitting.fit(trainer, cfg.task, on_failure=stopped)


def pick(prepared: Prepared, result) -> tuple[object, dict]:
    """(the best epoch's checkpoint by the primary validation metric, its metrics plus, from the last
    report, the training-loop throughput and the epoch the last attempt started at)."""
    best, metrics = fitting.best_checkpoint(result, prepared.cfg.task, prepared.primary, "max")
    last = result.metrics or {}
    return best, {**metrics, **{k: last.get(k, 0.0) for k in ("run_train_samples_per_s", "run_data_wait_share",
                                                              "run_backward_share")},
                  "run_start_epoch": last.get("run_start_epoch", 0)}


def register(prepared: Prepared, best, metrics: dict, seconds: float, parent: VersionInfo | None, trigger: str,
             extra_lineage: dict | None, fingerprint: str | None = None) -> VersionInfo:
    """The best checkpoint's adapter as a new version with its config, metrics and lineage; the
    task's first version becomes CURRENT (when `promote`)."""
    cfg = prepared.cfg
    return fitting.register(
        cfg.registry, cfg.task, best, metrics, seconds, config={**to_dict(cfg), "labels": prepared.labels},
        lineage={"parent": parent.version if parent else None, "trigger": trigger,
                 "data": _data_span(cfg, prepared.n_train),
                 "run": storage.join(storage.absolute(cfg.storage_path), prepared.run_name),
                 "checkpoint": _checkpoint_location(best), **(extra_lineage or {})},
        metric=prepared.primary, epochs=cfg.train.epochs, promote=cfg.promote, fingerprint=fingerprint)


def _parent_location(parent: VersionInfo | None) -> str | None:
    """Where the workers load the parent adapter from: its URI in an s3:// registry, else its directory."""
    if parent is None:
        return None
    return storage.join(parent.uri, ADAPTER_DIR) if parent.uri else str(parent.path / ADAPTER_DIR)


def _checkpoint_location(checkpoint) -> str:
    """A checkpoint's directory, as a URI when Ray Train stored it on an object store (its path has no scheme)."""
    kind = checkpoint.filesystem.type_name
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def _data_span(cfg: FinetuneConfig, n_train: int) -> dict:
    task_dir = storage.join(cfg.data_dir, cfg.task)
    info = {"dir": task_dir if storage.is_remote(task_dir) else str(Path(task_dir).resolve()), "train_examples": n_train}
    try:
        data = json.loads(storage.read_text(storage.join(task_dir, "report.json")))
    except FileNotFoundError:
        return info
    info.update(source=data.get("source"), kept=data.get("kept"))
    return info


def main(argv: list[str] | None = None) -> int:
    return job_main(FinetuneConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
