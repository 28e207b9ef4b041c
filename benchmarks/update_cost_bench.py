"""What one incremental relevance update costs per example, with and without `update.top_layers`.

Two ratios, each against its baseline measured in the same run (rounds alternate to spread noise):
1. training: LoRA fine-tuning samples/s starting from the offline relevance adapter, all layers
   trainable vs the top N only (the layers below frozen, so backward stops there);
2. the gate: scoring (query, product) pairs with a candidate, a full forward vs from the hidden
   states entering the first trained layer that the gate keeps (`AdapterBank.predict_proba_from`),
   and the largest probability difference between the two.
No Ray: the update's Ray Train start-up and the serving load beside it are what
`benchmarks/freshness_bench.py` measures.

    .venv/bin/python benchmarks/update_cost_bench.py [--top-layers 2] [--examples 320] [--pairs 640] [--rounds 2] [--smoke]

`--smoke`: a seconds-long run of every step on the tiny random backbone, with a tiny relevance world
(catalog, prepared data, untrained offline adapter) made in a temporary directory instead of the demo's
artifacts; its numbers mean nothing.
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


def train_rate(adapter: Path, frame, top: int | None, threads: int) -> float:
    """Samples/s of one pass over `frame` (batches of 32) from `adapter`, training the top `top` layers."""
    import torch

    from core import modeling, training
    from core.tasks import get_task

    torch.set_num_threads(threads)
    task = get_task("relevance")
    model, meta = modeling.load_adapter(adapter, trainable=True)
    modeling.train_top_layers(model, top)
    tokenizer = modeling.load_tokenizer(meta.backbone)
    batches = [training.make_batch(task, tokenizer, meta.labels, meta.max_length, frame.iloc[i:i + 32])
               for i in range(0, len(frame), 32)]
    optimizer = training.make_optimizer(model, 5e-4, 0.01)
    scheduler = training.make_scheduler(optimizer, len(batches), 0.06)
    stats = training.run_epoch(model, batches, optimizer, scheduler, torch.nn.CrossEntropyLoss())
    return stats.samples_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--examples", type=int, default=320, help="training examples per round")
    parser.add_argument("--pairs", type=int, default=640, help="pairs the gate scores per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--registry", default=workspace.path("registry", workspace.default_root(ROOT)))
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--smoke", action="store_true", help="seconds-long check that every step runs (numbers mean nothing)")
    args = parser.parse_args()
    if not args.smoke:
        return run(args)
    import _smoke

    _smoke.banner()
    with tempfile.TemporaryDirectory() as tmp:
        _smoke.relevance_world(Path(tmp))
        args.registry, args.data_dir = str(Path(tmp) / "registry"), str(Path(tmp) / "prepared")
        args.top_layers, args.examples, args.pairs, args.rounds = 1, 64, 48, 1  # the tiny backbone has 2 layers
        return run(args)


def run(args) -> int:
    import numpy as np

    from core import storage
    from core.adapter_bank import AdapterBank
    from core.registry import AdapterRegistry
    from core.tasks import get_task
    from core.registry import ADAPTER_DIR
    from core.registry import offline_anchor

    offline = offline_anchor(AdapterRegistry(args.registry), "relevance")
    if offline is None:
        sys.exit("error: no offline relevance adapter in the registry: run `make demo` first")
    adapter = offline.local_dir() / ADAPTER_DIR
    train = storage.read_parquet(storage.join(args.data_dir, "relevance", "train")).sample(args.examples, random_state=0)
    val = storage.read_parquet(storage.join(args.data_dir, "relevance", "val")).head(args.pairs)
    pairs = get_task("relevance").to_inputs(val)

    bank = AdapterBank(offline.config["model"]["backbone"], threads=args.threads)
    bank.load("offline", adapter)
    start = bank.num_layers() - args.top_layers
    prefix, _ = bank.encode_prefix("offline", pairs, start)
    rates: dict[str, list[float]] = {"train all": [], "train top": [], "gate full": [], "gate prefix": []}
    diff = 0.0
    for r in range(args.rounds):
        rates["train all"].append(train_rate(adapter, train, None, args.threads))
        rates["train top"].append(train_rate(adapter, train, args.top_layers, args.threads))
        t = time.perf_counter()
        full = bank.predict_proba("offline", pairs)
        rates["gate full"].append(len(pairs) / (time.perf_counter() - t))
        t = time.perf_counter()
        cached = bank.predict_proba_from("offline", prefix)
        rates["gate prefix"].append(len(pairs) / (time.perf_counter() - t))
        diff = max(diff, float(np.abs(full - cached).max()))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates.items()), flush=True)

    best = {k: max(v) for k, v in rates.items()}
    print()
    print(f"offline adapter {offline.model_id}, top {args.top_layers} of {bank.num_layers()} layers, "
          f"{args.threads} torch threads, CPU, best of {args.rounds} rounds")
    print(f"training samples/s: all layers {best['train all']:.1f}, top {args.top_layers} {best['train top']:.1f}; "
          f"ratio top/all {best['train top'] / best['train all']:.2f}")
    print(f"gate pairs/s: full forward {best['gate full']:.1f}, from the cached prefix {best['gate prefix']:.1f}; "
          f"ratio prefix/full {best['gate prefix'] / best['gate full']:.2f}; largest probability difference {diff:.1e}; "
          f"prefix {prefix.nbytes() / 1e6:.1f} MB for {len(pairs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
