"""Evaluate an adapter version on a split, beside the task's baselines computed in the same run.

Loads `<task>@<version>` (CURRENT by default) from the registry, predicts the split of
`<data_dir>/<task>/`, computes the task's metrics and its baselines (`train/baselines.py`) on the
very same examples, prints one table, and records `<split>_<metric>` in the version's metrics.
With `reuse=true` a result kept under `cache_dir` for the same fingerprint (core.fingerprint: the
settings, the version, the data and the code) is returned, and a new one is kept there.

Refuses (one error line, exit 2): an unknown task, version or config key; missing prepared data.

    python -m train.evaluate --config configs/evaluate.yaml task=intent [version=v3 split=test]
    aisle evaluate intent
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from core import storage
from core.config import to_dict
from core.errors import InputError
from core.fingerprint import evaluation_fingerprint, load_result, save_result
from core.job_configs import EvaluateConfig
from core.registry import AdapterRegistry
from core.tasks import get_task
from core.training import sample_examples
from ops.runtime import job_main
from core.registry import ADAPTER_DIR


def _read_split(data_dir: str, task: str, split: str) -> pd.DataFrame:
    path = storage.join(data_dir, task, split)  # a local path or an s3:// URI
    if not any(name.endswith(".parquet") for name in storage.list_files(path, recursive=False)):
        raise InputError(f"no prepared {split} data for task '{task}' at {path}; run data_pipelines.prepare first")
    return storage.read_parquet(path)


def evaluate_version(cfg: EvaluateConfig) -> dict:
    """{'task', 'version', 'split', 'n', 'results': {name: metrics}} for the model and its baselines, and
    'baseline_settings': {name: what a tuned baseline chose on the val split}."""
    from core.modeling import load_adapter, load_tokenizer
    from core.training import evaluate
    from train import baselines

    task = get_task(cfg.task)
    registry = AdapterRegistry(cfg.registry)
    info = registry.get(cfg.task, cfg.version)
    frame = _read_split(cfg.data_dir, cfg.task, cfg.split)
    data = {"data": storage.absolute(storage.join(cfg.data_dir, cfg.task))}
    fp = evaluation_fingerprint("evaluate", to_dict(cfg), data, info) if cfg.reuse else None
    if (kept := load_result(cfg.cache_dir, "evaluate", fp)) is not None:
        print(f"[{cfg.task}] reusing the evaluation of {info.model_id} on {cfg.split} kept under {cfg.cache_dir} "
              f"(fingerprint {fp[:12]}; reuse=false evaluates anew)")
        return kept
    if cfg.max_examples and len(frame) > cfg.max_examples:
        frame = sample_examples(frame, task.group_field, cfg.max_examples, seed=0)
    frame = frame.reset_index(drop=True)

    start = time.perf_counter()
    model, meta = load_adapter(info.local_dir() / ADAPTER_DIR)
    tokenizer = load_tokenizer(meta.backbone)
    results = {info.model_id: evaluate(model, tokenizer, task, meta.labels, frame, meta.max_length, cfg.batch_size)}
    model_seconds = time.perf_counter() - start
    settings: dict[str, dict] = {}
    if cfg.baselines:
        train, val = _read_split(cfg.data_dir, cfg.task, "train"), _read_split(cfg.data_dir, cfg.task, "val")
        corpus = None
        if task.head == "graded":
            test = _read_split(cfg.data_dir, cfg.task, "test")
            texts = [f["product_text"] for f in (train, val, test)]
            corpus = pd.concat(texts).astype(str).unique().tolist()
        found, settings = baselines.for_task(task, train, frame, meta.labels, meta.backbone, meta.max_length,
                                             corpus, val=val, lexical_weight=cfg.first_stage_lexical_weight)
        results.update(found)
    registry.update_metrics(cfg.task, info.version, {f"{cfg.split}_{k}": v for k, v in results[info.model_id].items()})
    ev = {"task": cfg.task, "version": info.version, "model_id": info.model_id, "split": cfg.split,
          "n": len(frame), "primary_metric": task.primary_metric, "results": results,
          "baseline_settings": settings, "model_seconds": round(model_seconds, 2)}
    save_result(cfg.cache_dir, "evaluate", fp, ev)  # only with reuse (no fingerprint without)
    return ev


def format_table(evaluations: list[dict]) -> str:
    """One line per task: the model's primary metric beside every baseline's."""
    lines = [f"{'task':<10} {'version':<8} {'split':<5} {'n':>6} {'metric':<9} {'model':>7}  baselines"]
    for ev in evaluations:
        metric = ev["primary_metric"]
        model = ev["results"][ev["model_id"]]
        others = [f"{name} {m[metric]:.4f}" for name, m in ev["results"].items() if name != ev["model_id"]]
        lines.append(f"{ev['task']:<10} {ev['version']:<8} {ev['split']:<5} {ev['n']:>6} {metric:<9} "
                     f"{model[metric]:>7.4f}  {', '.join(others) or '-'}")
        extra = {k: v for k, v in model.items() if k not in (metric, "n", "n_queries")}
        if extra:
            lines.append(" " * 31 + "also: " + ", ".join(f"{k} {v:.4f}" for k, v in extra.items()))
        for name, chosen in ev.get("baseline_settings", {}).items():
            if "tuned_on" in chosen:  # a baseline tuned on the validation split (tfidf_logreg)
                lines.append(" " * 31 + f"{name}: C={chosen['C']:g} class_weight={chosen['class_weight']}, "
                             f"chosen on {chosen['tuned_on']} ({metric} {chosen[f'val_{metric}']:.4f})")
            else:  # fixed settings (first_stage's lexical weight)
                lines.append(" " * 31 + f"{name}: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return "\n".join(lines)


def run(cfg: EvaluateConfig) -> dict:
    ev = evaluate_version(cfg)
    print(format_table([ev]))
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(ev, indent=2))
    return ev


def main(argv: list[str] | None = None) -> int:
    return job_main(EvaluateConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
