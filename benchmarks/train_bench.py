"""Ray Train overhead: samples/s of the same LoRA fine-tune through Ray Train (1 worker) and through a
plain PyTorch loop, on the same prepared data, in the same run. Target: ray/plain >= 0.9.

Both sides run `core.training.run_epoch` on `core.training.make_batch` batches with the same model,
batch size, sequence length and torch thread count; the Ray side is the real `train.finetune` job
(Ray Data shard -> worker loop -> per-epoch validation and checkpoint -> registry). Throughput is
measured inside the training loop, over all epochs of the run (samples / seconds spent in the loop,
not validation or checkpointing); the end-to-end wall time of each side, with Ray's fixed start-up
cost, is printed too. The sides alternate to spread noise.

    python benchmarks/train_bench.py [--task intent] [--examples 3072] [--epochs 2] [--threads 2] [--rounds 2] [--gpu]

`--gpu`: both sides on a CUDA GPU (`scaling.use_gpu=true`; bf16 autocast, pinned batch copies).
`--smoke`: a seconds-long run of every step on the tiny random backbone (64 examples, 1 epoch, 1 round,
data prepared from 2,000 source rows into a temporary directory); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import workspace  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def plain_loop(cfg, frame) -> tuple[float, float]:
    """(in-loop samples/s over all epochs, wall seconds incl. model load) of the same run without Ray."""
    import torch

    from core import modeling, training
    from core.device import resolve_device, use_cpu_bf16
    from core.tasks import get_task
    from train.finetune import GROUP_BATCHES, adapter_meta

    start = time.perf_counter()
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    device = resolve_device(cfg.scaling.use_gpu, "scaling.use_gpu", where="(train_bench --gpu)")
    task = get_task(cfg.task)
    labels = list(task.labels or sorted(frame["label"].astype(str).unique()))
    tokenizer = modeling.load_tokenizer(cfg.model.backbone)
    model = modeling.build_task_model(adapter_meta(cfg, labels), seed=cfg.train.seed).to(device)
    if cfg.model.spelling:  # as the job: the vocabulary of every training row
        model.normaliser = training.spelling_normaliser(task, frame, tokenizer)
    steps = training.steps_per_epoch(len(frame), cfg.train.batch_size, 1, None) * cfg.train.epochs
    optimizer = training.make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scheduler = training.make_scheduler(optimizer, steps, cfg.train.warmup_fraction)
    loss_fn = training.loss_function(task, labels, frame["label"].astype(str).tolist())
    samples, seconds = 0, 0.0
    for epoch in range(cfg.train.epochs):
        shuffled = frame.sample(frac=1.0, random_state=cfg.train.seed + epoch)
        chunk = GROUP_BATCHES * cfg.train.batch_size
        chunks = (shuffled.iloc[i:i + chunk] for i in range(0, len(shuffled), chunk))
        rewrite = training.input_rewrite(model, training.input_noise(cfg.train.typo_rate, cfg.train.seed, epoch))  # as the job
        batches = (training.make_batch(task, tokenizer, labels, cfg.train_length, b, rewrite, cfg.train.ordinal_smoothing)
                   for b in training.length_grouped(chunks, cfg.train.batch_size, training.input_lengths(task),
                                                    cfg.train.seed + epoch))
        stats = training.run_epoch(model, batches, optimizer, scheduler, loss_fn, device=device,
                                   cpu_bf16=use_cpu_bf16(cfg.train.cpu_bf16, use_gpu=cfg.scaling.use_gpu))  # as the job
        samples, seconds = samples + stats.samples, seconds + stats.seconds
    return samples / seconds, time.perf_counter() - start


def ray_train(cfg) -> tuple[float, float]:
    from train import finetune

    start = time.perf_counter()
    version = finetune.run(cfg)
    return float(version.metrics["run_train_samples_per_s"]), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="intent", choices=["intent", "sentiment", "relevance"])
    parser.add_argument("--examples", type=int, default=3072)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--gpu", action="store_true", help="train on a CUDA GPU (bf16 autocast) on both sides")
    parser.add_argument("--smoke", action="store_true", help="seconds-long check that every step runs (numbers mean nothing)")
    args = parser.parse_args()
    if not args.smoke:
        # Measure the job as users run it: the Makefile shortens Ray Train's health-check interval for the tests.
        os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
        return run(args)
    import _smoke

    _smoke.banner()
    with tempfile.TemporaryDirectory() as tmp:
        args.data_dir = str(Path(tmp) / "prepared")  # empty: the data is prepared first, as on a fresh clone
        args.examples, args.epochs, args.rounds = 64, 1, 1
        return run(args, prepare_overrides=["max_rows=2000"],
                   train_overrides=[*_smoke.TRAIN_OVERRIDES, "train.max_eval_examples=32"])


def run(args, prepare_overrides: tuple[str, ...] | list[str] = (), train_overrides: tuple[str, ...] | list[str] = ()) -> int:
    import pandas as pd

    from ops.runtime import check_gpu_resources, ensure_ray
    from core.config import load_config
    from core.job_configs import FinetuneConfig, PrepareConfig

    ensure_ray(include_dashboard=False)
    check_gpu_resources(args.gpu, "scaling.use_gpu")  # before preparing data: fail at once without a GPU
    if not (Path(args.data_dir) / args.task / "train").is_dir():
        from data_pipelines import prepare

        prepare.run(load_config(PrepareConfig, ROOT / "configs/prepare.yaml",
                                [f"output_dir={args.data_dir}", f"tasks=[{args.task}]", *prepare_overrides]))
    frame = pd.read_parquet(Path(args.data_dir) / args.task / "train")
    frame = frame.sample(n=min(args.examples, len(frame)), random_state=0)

    results = {"plain": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Both sides train on exactly these rows: the Ray job reads them as its prepared data.
        data = Path(tmp) / "data" / args.task
        for split, rows in (("train", frame), ("val", pd.read_parquet(Path(args.data_dir) / args.task / "val"))):
            (data / split).mkdir(parents=True)
            rows.to_parquet(data / split / "part-0.parquet")
        for r in range(args.rounds):
            cfg = load_config(FinetuneConfig, ROOT / f"configs/{args.task}.yaml", [
                f"data_dir={data.parent}", f"registry={tmp}/registry", f"storage_path={tmp}/runs",
                f"run_name=bench-{r}", f"train.epochs={args.epochs}", "train.max_train_examples=0",
                "train.max_eval_examples=64", f"scaling.threads_per_worker={args.threads}", "promote=false",
                f"scaling.use_gpu={str(args.gpu).lower()}", *train_overrides])
            results["plain"].append(plain_loop(cfg, frame))
            results["ray"].append(ray_train(cfg))
            print(f"round {r + 1}: plain {results['plain'][-1][0]:.1f} samples/s, "
                  f"ray {results['ray'][-1][0]:.1f} samples/s", flush=True)

    plain = max(s for s, _ in results["plain"])
    ray_best = max(s for s, _ in results["ray"])
    plain_wall = min(w for _, w in results["plain"])
    ray_wall = min(w for _, w in results["ray"])
    print()
    print(f"task {args.task}, {args.examples} examples x {args.epochs} epochs, batch {cfg.train.batch_size}, training length "
          f"{cfg.train_length}, {args.threads} torch threads, {'CUDA GPU, bf16 autocast' if args.gpu else 'CPU'}, "
          f"best of {args.rounds} rounds")
    print(f"{'path':<26} {'samples/s':>10} {'wall s':>8}")
    print(f"{'plain PyTorch loop':<26} {plain:>10.1f} {plain_wall:>8.1f}")
    print(f"{'Ray Train (1 worker)':<26} {ray_best:>10.1f} {ray_wall:>8.1f}")
    print(f"ratio ray/plain (in-loop samples/s): {ray_best / plain:.3f}   (target >= 0.9)")
    print(f"ratio ray/plain (end-to-end wall, incl. Ray start-up, validation, checkpoint): {plain_wall / ray_wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
