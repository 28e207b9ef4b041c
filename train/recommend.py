"""Train the recommend task on Ray Train: next-item prediction over per-user histories.

Reads `<data_dir>/recommend/` (from `aisle prepare tasks=[recommend]`), trains the two-tower model
of `core.rec_model` (item text through the backbone + its own LoRA adapter, id embeddings, a
recency-pooled user tower) with in-batch sampled softmax and logQ correction, validates after each
epoch on the validation targets by full-catalog NDCG@10, and registers the best epoch's adapter
as a new `recommend` version. With several workers each trains on its shard of the examples and
the gradients are averaged (all-reduce) after every step.

    aisle train recommend [train.epochs=1 ...]
    python -m train.recommend --config configs/recommend.yaml
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from core import storage
from core.config import from_dict, to_dict
from core.errors import InputError
from core.job_configs import RecommendTrainConfig
from core.registry import ADAPTER_DIR, VersionInfo
from ops.runtime import (check_gpu_resources, ensure_ray, job_main, train_failures, train_logging, train_scaling,
                         train_worker_env, quiet_train_worker)
from train import fitting

TASK = "recommend"


def rec_meta(cfg: RecommendTrainConfig):
    from core import modeling as Mo
    from core.rec_model import RecMeta

    m = cfg.model
    return RecMeta(backbone=m.backbone, max_length=m.max_length, dim=m.dim, history=m.history,
                   top_layers=m.top_layers,
                   lora=Mo.LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=0.0, target_modules=tuple(m.lora_targets)))


def worker_loop(config: dict) -> None:
    quiet_train_worker()
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist

    from core import modeling as Mo
    from core import rec_model as R
    from core import recommend as RC
    from data_pipelines.interactions import read_prepared

    cfg = from_dict(RecommendTrainConfig, config["cfg"])
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = read_prepared(cfg.data_dir)
    catalog = RC.Catalog(data["items"]["item_id"].tolist())
    texts = data["items"]["text"].tolist()
    counts = RC.train_counts(catalog, data["train"])
    idx, user_start, targets = RC.training_examples(data["train"], catalog)
    rng = np.random.default_rng(cfg.train.seed)
    val = RC.eval_set(catalog, data["train"], data["val"], counts)
    if cfg.train.max_eval_users and len(val.targets) > cfg.train.max_eval_users:
        keep = np.sort(rng.choice(len(val.targets), cfg.train.max_eval_users, replace=False))
        val = RC.EvalSet([val.histories[i] for i in keep], val.targets[keep], val.new_to_user[keep], val.cold[keep],
                         [val.users[i] for i in keep])

    tokenizer = Mo.load_tokenizer(cfg.model.backbone)
    model = R.build(rec_meta(cfg), catalog.ids, seed=cfg.train.seed)
    texts_cache = R.ItemTexts(model, tokenizer, texts)
    log_q = torch.tensor(np.log((counts + 1.0) / (counts + 1.0).sum()), dtype=torch.float32)
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.")],
               "lr": cfg.train.text_lr},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")],
               "lr": cfg.train.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    params = [p for g in groups for p in g["params"]]
    n, L, B = len(catalog), model.meta.history, cfg.train.batch_size
    per_epoch = len(targets[:cfg.train.max_train_examples] if cfg.train.max_train_examples else targets) // (B * world)
    total = max(1, per_epoch * cfg.train.epochs)
    # Linear decay to 5 %: without it the second epoch overfits the id embeddings (measured).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.05, 1.0 - s / total))
    with torch.no_grad():
        table = texts_cache.table()
    step, start = 0, time.perf_counter()
    for epoch in range(1, cfg.train.epochs + 1):
        model.train()
        order = rng.permutation(targets)
        if cfg.train.max_train_examples:
            order = order[:cfg.train.max_train_examples]
        order = order[rank::world]
        losses = []
        for lo in range(0, len(order) - B + 1 if len(order) >= B else len(order), B):
            pos = order[lo:lo + B]
            tgt = torch.from_numpy(idx[pos])
            hist, mask = R.right_aligned(RC.histories_at(idx, user_start, pos, L), L, n)
            uniq, inverse = torch.unique(tgt, return_inverse=True)
            # The text tower runs (with gradient) on every `text_every`-th batch; the others read
            # the text table, so the towers see every example at a fraction of the encoder's cost.
            text = texts_cache.encode(uniq) if step % cfg.train.text_every == 0 else table[uniq]
            item_vecs = model.candidate_vectors(text, uniq)[inverse]
            safe = hist.clamp(max=n - 1)
            hist_vecs = model.history_vectors(table[safe], safe) * mask.unsqueeze(-1)
            loss = R.in_batch_loss(model.user_vectors(hist_vecs, mask), item_vecs, tgt, log_q, model.scale())
            optimizer.zero_grad()
            loss.backward()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= world
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if step % cfg.train.refresh_every == 0:
                with torch.no_grad():
                    table = texts_cache.table()
        with torch.no_grad():
            table = texts_cache.table()
        scorer = R.RecScorer(model, tokenizer, catalog.ids, texts, text_vectors=table)
        report = RC.evaluate(scorer, val)
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "val_ndcg@10": report["all"]["ndcg@10"], "val_hr@10": report["all"]["hr@10"],
                   "val_new_ndcg@10": report["new"]["ndcg@10"], "val_users": report["all"]["n"],
                   "steps": step, "train_samples_per_s": step * B * world / (time.perf_counter() - start)}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                R.save(model, Path(tmp) / ADAPTER_DIR)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def run(cfg: RecommendTrainConfig) -> VersionInfo:
    import ray.train
    from ray.train.torch import TorchTrainer

    from data_pipelines.interactions import read_prepared

    fp = fitting.training_fingerprint("recommend", cfg, storage.join(cfg.data_dir, TASK))
    if cfg.reuse and (found := fitting.reusable(cfg.registry, TASK, fp)):
        return found
    data = read_prepared(cfg.data_dir)   # refuses early, with the command to run, when missing
    if len(data["train"]) == 0 or len(data["val"]) == 0:
        raise InputError(f"the prepared recommend data under {cfg.data_dir} has no training or validation targets")
    if Path(cfg.model.backbone).expanduser().is_dir():
        cfg.model.backbone = str(Path(cfg.model.backbone).expanduser().resolve())
    cfg.data_dir = storage.absolute(cfg.data_dir)
    ensure_ray()
    check_gpu_resources(cfg.scaling.use_gpu, "scaling.use_gpu")
    if cfg.scaling.use_gpu:
        raise InputError("scaling.use_gpu: the recommend task trains on CPU workers only for now")
    run_name = f"{TASK}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_path = storage.absolute(cfg.storage_path)  # Ray Train writes to a URI itself
    trainer = TorchTrainer(
        worker_loop, train_loop_config={"cfg": to_dict(cfg)},
        scaling_config=train_scaling(cfg.scaling, use_gpu=False),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, logging_config=train_logging(),
            worker_runtime_env=train_worker_env(cfg.scaling), failure_config=train_failures(cfg.scaling),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_ndcg@10",
                                                         checkpoint_score_order="max")))
    result, seconds = fitting.fit(trainer, TASK)
    best, metrics = fitting.best_checkpoint(result, TASK, "val_ndcg@10", "max")
    return fitting.register(
        cfg.registry, TASK, best, metrics, seconds, config=to_dict(cfg),
        lineage={"parent": None, "trigger": "offline",
                 "data": {"dir": cfg.data_dir, "train_interactions": len(data["train"])},
                 "run": storage.join(storage_path, run_name)},
        metric="val_ndcg@10", epochs=cfg.train.epochs, promote=cfg.promote, fingerprint=fp)


def main(argv: list[str] | None = None) -> int:
    return job_main(RecommendTrainConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
