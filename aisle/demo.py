"""The end-to-end demo: prepare the bundled data, fine-tune every task on a small budget, evaluate
each new version on its held-back test split beside the baselines, and print one table.

Uses the real presets (configs/prepare.yaml, configs/<task>.yaml, configs/evaluate.yaml) with the
small-budget overrides of configs/demo.yaml, in one embedded Ray session.

    aisle demo            (what `make demo` runs)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aisle.runtime import ensure_ray, job_main
from core.config import doc, load_config
from core.job_configs import EvaluateConfig, FinetuneConfig, PrepareConfig, TaskName


@dataclass
class DemoConfig:
    prepare: list[str] = doc([], "overrides applied to configs/prepare.yaml")
    tasks: list[TaskName] = doc(["intent", "sentiment", "relevance"], "tasks to train, in this order")
    train: dict[str, list[str]] = doc({}, "per-task overrides applied to configs/<task>.yaml")
    evaluate: list[str] = doc([], "overrides applied to configs/evaluate.yaml")
    output: str = doc("artifacts/demo_results.json", "where the result table is written as JSON")


def run(cfg: DemoConfig) -> list[dict]:
    from aisle.cli import preset
    from data_pipelines import prepare
    from train import evaluate, finetune

    start = time.perf_counter()
    ensure_ray()
    print("== 1/3 prepare (Ray Data) ==")
    prepare.run(load_config(PrepareConfig, preset("prepare"), cfg.prepare))
    evaluations = []
    for i, task in enumerate(cfg.tasks):
        print(f"== 2/3 fine-tune {task} (Ray Train, LoRA) [{i + 1}/{len(cfg.tasks)}] ==")
        version = finetune.run(load_config(FinetuneConfig, preset(task), [f"task={task}", *cfg.train.get(task, [])]))
        print(f"== 3/3 evaluate {version.model_id} on the test split ==")
        ev = evaluate.evaluate_version(load_config(EvaluateConfig, preset("evaluate"),
                                                   [f"task={task}", f"version={version.version}", *cfg.evaluate]))
        evaluations.append(ev)
    print()
    print(evaluate.format_table(evaluations))
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(evaluations, indent=2))
    return evaluations


def main(argv: list[str] | None = None) -> int:
    return job_main(DemoConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
