"""The steps every Aisle training job shares after it has built its TorchTrainer: fit, pick the best
epoch's checkpoint, register it as a version (the task's first version becomes CURRENT).

`train.finetune` (classification and ranking), `train.recommend` and `train.generate` differ in
what their workers do and which validation metric picks the epoch; they fit, pick and register
the same way, here. Every checkpoint holds the adapter under `ADAPTER_DIR`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Literal

from core.errors import AisleError
from core.registry import ADAPTER_DIR, AdapterRegistry, VersionInfo


def fit(trainer, task: str, on_failure: Callable[[Exception], None] | None = None):
    """(Ray Train's result, seconds). A failed run is one error line naming the task and the
    worker's last error line; `on_failure` may raise a better one first."""
    import ray.train

    start = time.perf_counter()
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        if on_failure is not None:
            on_failure(e)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise AisleError(f"training of '{task}' failed: {lines[-1][:300] if lines else type(e).__name__}") from e
    return result, time.perf_counter() - start


def best_checkpoint(result, task: str, metric: str, order: Literal["max", "min"]) -> tuple[object, dict]:
    """(the checkpoint whose validation `metric` is best, the metrics reported with it)."""
    worst = float("-inf") if order == "max" else float("inf")
    pick = max if order == "max" else min
    best, metrics = pick(result.best_checkpoints or [], key=lambda cm: cm[1].get(metric, worst), default=(None, None))
    if best is None:
        raise AisleError(f"training of '{task}' reported no checkpoint (zero training steps?)")
    return best, metrics


def register(registry_dir: str, task: str, best, metrics: dict, seconds: float, *, config: dict, lineage: dict,
             metric: str, epochs: int, promote: bool, extra: Callable[[Path], None] | None = None) -> VersionInfo:
    """The checkpoint's adapter as a new version of `task` with its config, numeric metrics (and the
    training time) and lineage; printed on one line, and made CURRENT when it is the task's first
    version and `promote` is set. `extra` writes more files into the version's directory."""
    registry = AdapterRegistry(registry_dir)

    def write(d: Path) -> None:
        shutil.copytree(Path(ckpt) / ADAPTER_DIR, d / ADAPTER_DIR)
        if extra is not None:
            extra(d)

    with best.as_directory() as ckpt:
        version = registry.create_version(
            task, write, config=config,
            metrics={**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                     "train_seconds": round(seconds, 1)},
            lineage=lineage)
    print(f"[{task}] registered {version.model_id}: {metric} {metrics[metric]:.4f} "
          f"(epoch {metrics['epoch']} of {epochs}, {seconds:.0f} s)")
    if promote and registry.current(task) is None:
        registry.promote(task, version.version, reason="first version of the task")
        print(f"[{task}] {version.model_id} is CURRENT (first version)")
    return version
