"""The steps every Aisle training job shares after it has built its TorchTrainer: fit, pick the best
epoch's checkpoint, register it as a version (the task's first version becomes CURRENT).

`train.finetune` (classification and ranking), `train.recommend` and `train.generate` differ in
what their workers do and which validation metric picks the epoch; they fit, pick and register
the same way, here. Every checkpoint holds the adapter under `ADAPTER_DIR`.

With `reuse=true` a job first looks for a registered version whose lineage holds the fingerprint
of its inputs (`core.fingerprint`: its settings, prepared data and code) and returns that version
instead of training: a second `aisle demo` trains nothing that the first one made.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Literal

from core import storage
from core.config import to_dict
from core.errors import AisleError
from core.fingerprint import TRAINING_PLACES, fingerprint, settings_of
from core.registry import ADAPTER_DIR, AdapterRegistry, UnknownTaskError, VersionInfo


def training_fingerprint(kind: str, cfg, task_dir: str, drop: tuple[str, ...] = ()) -> str | None:
    """The fingerprint of training `cfg` (a job config) on the prepared data in `task_dir`; None
    when that data is not there (the job then refuses with its own message)."""
    try:
        return fingerprint(kind, settings_of(to_dict(cfg), TRAINING_PLACES + drop), data={"data": storage.absolute(task_dir)})
    except FileNotFoundError:
        return None


def reusable(registry_dir: str, task: str, fingerprint: str | None) -> VersionInfo | None:
    """The newest version of `task` registered with this fingerprint in its lineage, announced on
    one line; None when there is none (or no fingerprint)."""
    if not fingerprint:
        return None
    try:
        versions = AdapterRegistry(registry_dir).versions(task)
    except (UnknownTaskError, FileNotFoundError):
        return None
    for info in reversed(versions):
        if info.lineage.get("fingerprint") == fingerprint:
            print(f"[{task}] reusing {info.model_id}, trained {info.created_at[:16]} from the same settings, "
                  f"prepared data and code (fingerprint {fingerprint[:12]}; reuse=false trains anew)")
            return info
    return None


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
             metric: str, epochs: int, promote: bool, extra: Callable[[Path], None] | None = None,
             fingerprint: str | None = None) -> VersionInfo:
    """The checkpoint's adapter as a new version of `task` with its config, numeric metrics (and the
    training time) and lineage; printed on one line, and made CURRENT when it is the task's first
    version and `promote` is set. `extra` writes more files into the version's directory;
    `fingerprint` (training_fingerprint) goes into the lineage, where `reusable` finds it."""
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
            lineage={**lineage, **({"fingerprint": fingerprint} if fingerprint else {})})
    print(f"[{task}] registered {version.model_id}: {metric} {metrics[metric]:.4f} "
          f"(epoch {metrics['epoch']} of {epochs}, {seconds:.0f} s)")
    if promote and registry.current(task) is None:
        registry.promote(task, version.version, reason="first version of the task")
        print(f"[{task}] {version.model_id} is CURRENT (first version)")
    return version
