"""LoRA fine-tuning of a generation task on Ray Train, registered as a new adapter version.

The generative counterpart of `train.finetune`: reads `<data_dir>/<task>/train` (prepared by
`aisle prepare`: columns prompt and target), trains a LoRA adapter on the instruct LM
(`core.lm`) with the loss on the answer tokens only, measures the loss on `<task>/val` after every
epoch and reports it with an adapter checkpoint. The epoch with the lowest validation loss is
written to the registry as `<task>@v<N>` (the first version becomes CURRENT). `aisle evaluate
<task>` (train.gen_eval) then scores it by ROUGE-L and chrF against zero-shot and retrieval.
A retrieve-and-edit task (`reply`: `core.gen_exemplars`) trains on prompts that quote the nearest
other training example's answer; the version keeps the bank of training answers it quotes from.

Refuses (one error line, exit 2): no prepared data, an unknown task or config key.

    python -m train.generate --config configs/generate.yaml task=describe
    aisle train describe
    ray job submit --working-dir . -- python -m train.generate --config configs/generate.yaml task=reply
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from core import storage
from core.config import from_dict, to_dict
from core.device import resolve_device, use_cpu_bf16
from core.gen_config import GenerateConfig
from core.gen_exemplars import ExemplarBank, bank_frame, quoted_prompts
from core.gen_tasks import get_gen_task, prepared_split
from core.registry import ADAPTER_DIR, VersionInfo
from ops.runtime import (check_gpu_resources, ensure_ray, job_main, train_failures, train_logging, train_scaling,
                         train_worker_env, quiet_train_worker)
from train import fitting

GPU_KEY = "scaling.use_gpu"
LOG_EVERY = 20


def lora_spec(cfg: GenerateConfig):
    from core.lm import GenLora

    m = cfg.model
    return GenLora(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, targets=tuple(m.lora_targets))


def worker_loop(config: dict) -> None:
    """Runs in every Ray Train worker: LoRA on the LM, answer-token loss, a checkpoint per epoch."""
    quiet_train_worker()
    import ray.train
    import ray.train.torch
    import torch

    import pandas as pd

    from core import lm
    from core.device import autocast
    from core.training import make_scheduler, progress_line

    cfg = from_dict(GenerateConfig, config["cfg"])
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    torch.manual_seed(cfg.train.seed)
    rank = ray.train.get_context().get_world_rank()
    device = resolve_device(cfg.scaling.use_gpu, GPU_KEY, where="in this Ray Train worker")
    if device.type == "cuda":
        device = ray.train.torch.get_device()
    base, tokenizer = lm.load_lm(cfg.model.lm, cfg.model.cache_dir)
    model = lm.attach_lora(base, lora_spec(cfg))
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()  # a restart after a lost worker: continue from the last epoch
    if checkpoint:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        with checkpoint.as_directory() as d:
            set_peft_model_state_dict(model, load_file(str(Path(d) / ADAPTER_DIR / lm.LORA_DIR / "adapter_model.safetensors")))
            start_epoch = int((Path(d) / "epoch").read_text())
    model = ray.train.torch.prepare_model(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = make_scheduler(optimizer, config["steps_per_epoch"] * cfg.train.epochs, cfg.train.warmup_fraction)
    bf16 = use_cpu_bf16(cfg.train.cpu_bf16, use_gpu=cfg.scaling.use_gpu)
    val = pd.DataFrame(config["val"]) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")

    def batch_of(frame):
        b = lm.training_batch(tokenizer, frame["prompt"].tolist(), frame["target"].tolist(), cfg.model.max_length)
        return {k: v.to(device) for k, v in b.items()}

    for epoch in range(start_epoch, cfg.train.epochs):
        total, tokens, steps, samples, t0 = 0.0, 0, 0, 0, time.perf_counter()
        for frame in shard.iter_batches(batch_size=cfg.train.batch_size, batch_format="pandas",
                                        local_shuffle_buffer_size=16 * cfg.train.batch_size,
                                        local_shuffle_seed=cfg.train.seed + epoch):
            with autocast(device, bf16):
                loss, n = lm.answer_loss(model, batch_of(frame))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total, tokens, steps, samples = total + float(loss.detach()) * n, tokens + n, steps + 1, samples + len(frame)
            if rank == 0 and steps % LOG_EVERY == 0:
                print(f"[{cfg.task}] epoch {epoch + 1}" + progress_line(steps, config["steps_per_epoch"], total / max(tokens, 1),
                                                                       samples, time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": total / max(tokens, 1), "train_samples": samples,
                   "train_samples_per_s": samples / seconds if seconds else 0.0, "run_start_epoch": start_epoch}
        if rank != 0:
            ray.train.report(metrics)
            continue
        val_loss = validation_loss(model, tokenizer, val, cfg, device)
        metrics.update(val_loss=val_loss, val_perplexity=math.exp(min(val_loss, 50.0)), val_examples=len(val))
        print(f"[{cfg.task}] epoch {epoch + 1}/{cfg.train.epochs}: loss {metrics['train_loss']:.4f}, "
              f"{metrics['train_samples_per_s']:.1f} samples/s, val loss {val_loss:.4f}")
        with tempfile.TemporaryDirectory() as tmp:
            lm.save_gen_adapter(_unwrap(model), Path(tmp) / ADAPTER_DIR, lm=cfg.model.lm, task=cfg.task)
            (Path(tmp) / "epoch").write_text(str(epoch + 1))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        model.train()


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def validation_loss(model, tokenizer, val, cfg: GenerateConfig, device, batch_size: int = 8) -> float:
    """Mean answer-token loss on the validation sample (fp32, no dropout)."""
    import torch

    from core import lm

    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(val), batch_size):
            part = val.iloc[start: start + batch_size]
            b = lm.training_batch(tokenizer, part["prompt"].tolist(), part["target"].tolist(), cfg.model.max_length)
            loss, n = lm.answer_loss(model, {k: v.to(device) for k, v in b.items()})
            total, tokens = total + float(loss) * n, tokens + n
    return total / max(tokens, 1)


def read_examples(cfg: GenerateConfig, train_dir: str, val_dir: str):
    """(training sample, validation sample, exemplar bank or None): seeded samples of the splits;
    for a retrieve-and-edit task their prompts quote the nearest training answer (a training
    example never its own), from a bank of the whole training split that the version keeps."""
    import pandas as pd

    task = get_gen_task(cfg.task)
    frame = storage.read_parquet(train_dir).reset_index(drop=True)
    sample = frame
    if cfg.train.max_train_examples and len(frame) > cfg.train.max_train_examples:
        sample = frame.sample(cfg.train.max_train_examples, random_state=cfg.train.seed)
    val = storage.read_parquet(val_dir)
    if len(val) > cfg.train.max_eval_examples:
        val = val.sample(cfg.train.max_eval_examples, random_state=cfg.train.seed)
    bank = None
    if task.exemplar_field:
        bank = ExemplarBank(bank_frame(frame, task.exemplar_field, task.exemplar_group))
        sample = sample.assign(prompt=quoted_prompts(task, sample, bank, exclude=sample.index.tolist()))
        val = val.assign(prompt=quoted_prompts(task, val, bank))
        print(f"[{cfg.task}] prompts quote the nearest of {len(bank)} training answers (retrieve-and-edit)")
    columns = ["example_id", "prompt", "target"]
    return sample[columns].reset_index(drop=True), pd.DataFrame(val[["prompt", "target"]]), bank


def run(cfg: GenerateConfig) -> VersionInfo:
    """Read and sample the training split, fit on Ray Train, register the best epoch."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from core import lm

    fp = fitting.training_fingerprint("generate", cfg, storage.join(cfg.data_dir, cfg.task), drop=("model.cache_dir",))
    if cfg.reuse and (found := fitting.reusable(cfg.registry, cfg.task, fp)):
        return found
    train_dir, val_dir = (prepared_split(cfg.data_dir, cfg.task, split) for split in ("train", "val"))
    lm.lm_dir(cfg.model.lm, cfg.model.cache_dir)  # converted once here, not by every worker
    cfg.model.cache_dir = str(Path(cfg.model.cache_dir).expanduser().resolve())
    ensure_ray()
    check_gpu_resources(cfg.scaling.use_gpu, GPU_KEY)
    frame, val, bank = read_examples(cfg, train_dir, val_dir)
    train_ds = ray.data.from_items(frame.to_dict("records"), override_num_blocks=max(1, cfg.scaling.num_workers))
    steps = math.ceil(len(frame) / (cfg.train.batch_size * cfg.scaling.num_workers))
    run_name = cfg.run_name or f"{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_path = storage.absolute(cfg.storage_path)  # Ray Train writes to a URI itself
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": to_dict(cfg), "val": val.to_dict("list"), "steps_per_epoch": steps},
        scaling_config=train_scaling(cfg.scaling),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, logging_config=train_logging(),
            worker_runtime_env=train_worker_env(cfg.scaling), failure_config=train_failures(cfg.scaling),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_loss",
                                                         checkpoint_score_order="min")),
        datasets={"train": train_ds},
    )
    print(f"[{cfg.task}] training {cfg.model.lm} + LoRA r={cfg.model.lora_r} on {len(frame)} examples, "
          f"{cfg.train.epochs} epoch(s) of {steps} steps")
    result, seconds = fitting.fit(trainer, cfg.task)
    best, metrics = fitting.best_checkpoint(result, cfg.task, "val_loss", "min")
    return fitting.register(
        cfg.registry, cfg.task, best, metrics, seconds, config={**to_dict(cfg), "kind": "generation"},
        lineage={"parent": None, "trigger": "offline", "run": storage.join(storage_path, run_name),
                 "data": {"dir": str(Path(train_dir).parent), "train_examples": len(frame)}},
        metric="val_loss", epochs=cfg.train.epochs, promote=cfg.promote,
        extra=(lambda d: bank.save(str(d))) if bank is not None else None, fingerprint=fp)


def main(argv: list[str] | None = None) -> int:
    return job_main(GenerateConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
