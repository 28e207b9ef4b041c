"""`aisle`: one command line for every job.

    aisle prepare [key=value ...]              data_pipelines.prepare with configs/prepare.yaml
    aisle train <task> [key=value ...]         train.finetune with configs/<task>.yaml
                                               (describe, summarize, reply: train.generate, configs/generate.yaml)
    aisle distill [key=value ...]              train.student with configs/distill.yaml: relevance_student,
                                               a smaller search reranker distilled from relevance
    aisle evaluate <task> [key=value ...]      train.evaluate with configs/evaluate.yaml
                                               (recommend: train.recommend and train.recommend_eval;
                                               describe, summarize, reply: train.gen_eval)
    aisle catalog [--out DIR] [--seed N]       write the generated search catalog
    aisle embed [key=value ...]                data_pipelines.embed_catalog with configs/embed_catalog.yaml
    aisle embed recommend [key=value ...]      the recommend version's item vectors (data_pipelines.rec_item_vectors)
    aisle serve [key=value ...]                the HTTP API on Ray Serve, embedded, 127.0.0.1:8000
    aisle stream [key=value ...]               the HTTP API plus the stream loop (feedback log, updates), configs/stream.yaml
    aisle replay FILE --rate R [--url URL]     stream a JSONL/Parquet event file into POST /v1/events
    aisle adapters list|show|promote|rollback|diff   the adapter registry, local or s3://, no server needed
    aisle demo [key=value ...]                 prepare -> train 3 tasks -> evaluate -> serve examples, configs/demo.yaml
    aisle status [key=value ...]               one screen: CURRENT per task, last updates, log depth, replicas
    aisle report [key=value ...]               an HTML report with plots: CTR/conversion, updates, latency
    aisle config <job>                         every key of a job's config, its default and doc
                                               (jobs: prepare train distill evaluate recommend evaluate-recommend
                                               demo stream ops generate evaluate-generate; tasks: a task
                                               declared in configs/tasks.yaml)

Each subcommand takes `--config FILE` to use another preset. Errors a user can fix print one
line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from core.config import describe
from core.gen_tasks import GEN_TASKS
from core.tasks import all_tasks
from ops.runtime import preset

TASK_PRESET = "<task>"
JOBS = {  # command (and variant) -> (module whose main(argv) runs it, its preset in configs/)
    "prepare": ("data_pipelines.prepare", "prepare"),
    "train": ("train.finetune", TASK_PRESET),
    "train recommend": ("train.recommend", "recommend"),
    "distill": ("train.student", "distill"),
    "evaluate": ("train.evaluate", "evaluate"),
    "evaluate recommend": ("train.recommend_eval", "evaluate_recommend"),
    "train generate": ("train.generate", "generate"),
    "evaluate generate": ("train.gen_eval", "evaluate_generate"),
    "embed": ("data_pipelines.embed_catalog", "embed_catalog"),
    "embed recommend": ("data_pipelines.rec_item_vectors", None),
    "serve": ("aisle.serving", None),
    "stream": ("aisle.streaming", "stream"),
    "demo": ("aisle.demo", "demo"),
}
CONFIGS = {  # `aisle config <job>` -> (module, config class)
    "prepare": ("core.job_configs", "PrepareConfig"), "train": ("core.job_configs", "FinetuneConfig"),
    "distill": ("core.job_configs", "DistillConfig"), "evaluate": ("core.job_configs", "EvaluateConfig"),
    "recommend": ("core.job_configs", "RecommendTrainConfig"),
    "evaluate-recommend": ("core.job_configs", "RecommendEvalConfig"), "demo": ("aisle.demo", "DemoConfig"),
    "stream": ("core.stream_config", "StreamConfig"), "ops": ("ops.config", "OpsConfig"),
    "generate": ("core.gen_config", "GenerateConfig"), "evaluate-generate": ("core.gen_config", "GenEvalConfig"),
    "tasks": ("core.declared_tasks", "TaskDeclaration"),
}


def _run_job(args: argparse.Namespace) -> int:
    """One of JOBS: its module's main with --config (given, or the preset) and the overrides; train and
    evaluate pass the task on (recommend has jobs of its own), `embed recommend` is a variant."""
    name, overrides, task = args.command, list(args.overrides), getattr(args, "task", None)
    if task == "recommend":
        name = f"{name} recommend"
    elif task in GEN_TASKS:  # a generation task: its own jobs, the task passed on
        name, overrides = f"{name} generate", [f"task={task}", *overrides]
    elif task:
        overrides = [f"task={task}", *overrides]
    elif name == "embed" and overrides[:1] == ["recommend"]:
        name, overrides = "embed recommend", overrides[1:]
    module, default = JOBS[name]
    default = task if default == TASK_PRESET else default
    return importlib.import_module(module).main(_job_args(args.config, default and preset(default), overrides))


def _job_args(config: str | None, default: str | None, overrides: list[str]) -> list[str]:
    path = config or default
    return (["--config", path] if path else []) + overrides


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["replay"]:  # its own parser: options such as --rate and --help are its own
        from aisle import replay

        return replay.main(argv[1:])
    if argv[:1] == ["adapters"]:  # its own parser, with sub-commands
        from aisle import adapters

        return adapters.main(argv[1:])
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("prepare", "prepare training data (Ray Data)"), ("demo", "the end-to-end demo"),
                            ("embed", "embed the catalog (Ray Data batch inference)"), ("serve", "serve the HTTP API"),
                            ("distill", "distil a smaller search reranker (relevance_student) from relevance")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config")
        p.add_argument("overrides", nargs="*")
    for name, help_text in (("train", "LoRA fine-tune a task (Ray Train)"), ("evaluate", "evaluate a version")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("task", choices=sorted([*all_tasks(), "recommend", *GEN_TASKS]))
        p.add_argument("--config")
        p.add_argument("overrides", nargs="*")
    p = sub.add_parser("stream", help="serve plus the stream loop")
    p.add_argument("--config")
    p.add_argument("overrides", nargs="*")
    sub.add_parser("replay", help="stream an event file into a running server (aisle replay --help)")
    sub.add_parser("adapters", help="the adapter registry: list, show, promote, rollback, diff (aisle adapters --help)")
    for name, help_text in (("status", "the stream and serving on one screen"),
                            ("report", "write an HTML report with plots (stream_dir=DIR, out=FILE)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="the stream config whose paths to read (default configs/stream.yaml)")
        p.add_argument("overrides", nargs="*", help="keys of `aisle config ops`, e.g. stream_dir=artifacts/demo_stream")
    p = sub.add_parser("catalog", help="write the generated search catalog")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("config", help="list a job's config keys")
    p.add_argument("job", choices=list(CONFIGS))
    args = parser.parse_args(argv)

    if args.command in JOBS:
        return _run_job(args)
    if args.command in ("status", "report"):  # report imports matplotlib: only when asked
        return importlib.import_module(f"ops.{args.command}").main(args.config or preset("stream"), args.overrides)
    if args.command == "catalog":
        from data_pipelines import catalog

        return catalog.main(args.rest) or 0
    if args.command == "config":
        module, name = CONFIGS[args.job]
        try:
            for key, default, text in describe(getattr(importlib.import_module(module), name)):
                print(f"{key:<36} {default:<28} {text}")
        except BrokenPipeError:  # `aisle config train | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's docs: no error at exit)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
