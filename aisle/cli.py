"""`aisle`: one command line for every job.

    aisle prepare [key=value ...]              data_pipelines.prepare with configs/prepare.yaml
    aisle train <task> [key=value ...]         train.finetune with configs/<task>.yaml
    aisle distill [key=value ...]              train.student with configs/distill.yaml: relevance_student,
                                               a smaller search reranker distilled from relevance
    aisle evaluate <task> [key=value ...]      train.evaluate with configs/evaluate.yaml
                                               (recommend: train.recommend and train.recommend_eval)
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
                                               demo stream ops)

Each subcommand takes `--config FILE` to use another preset. Errors a user can fix print one
line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import describe
from core.tasks import TASKS

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def preset(name: str) -> str | None:
    """configs/<name>.yaml from the working directory, else from the project checkout."""
    for base in (Path.cwd(), PROJECT_ROOT):
        path = base / "configs" / f"{name}.yaml"
        if path.is_file():
            return str(path)
    return None


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
        p.add_argument("task", choices=sorted([*TASKS, "recommend"]))
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
    p.add_argument("job", choices=["prepare", "train", "distill", "evaluate", "recommend", "evaluate-recommend", "demo", "stream",
                                   "ops"])
    args = parser.parse_args(argv)

    if args.command == "prepare":
        from data_pipelines import prepare

        return prepare.main(_job_args(args.config, preset("prepare"), args.overrides))
    if args.command == "train" and args.task == "recommend":
        from train import recommend

        return recommend.main(_job_args(args.config, preset("recommend"), args.overrides))
    if args.command == "evaluate" and args.task == "recommend":
        from train import recommend_eval

        return recommend_eval.main(_job_args(args.config, preset("evaluate_recommend"), args.overrides))
    if args.command == "train":
        from train import finetune

        return finetune.main(_job_args(args.config, preset(args.task), [f"task={args.task}", *args.overrides]))
    if args.command == "distill":
        from train import student

        return student.main(_job_args(args.config, preset("distill"), args.overrides))
    if args.command == "evaluate":
        from train import evaluate

        return evaluate.main(_job_args(args.config, preset("evaluate"), [f"task={args.task}", *args.overrides]))
    if args.command == "embed" and args.overrides[:1] == ["recommend"]:
        from data_pipelines import rec_item_vectors

        return rec_item_vectors.main(_job_args(args.config, None, args.overrides[1:]))
    if args.command == "embed":
        from data_pipelines import embed_catalog

        return embed_catalog.main(_job_args(args.config, preset("embed_catalog"), args.overrides))
    if args.command == "serve":
        from aisle import serving

        return serving.main(_job_args(args.config, None, args.overrides))
    if args.command == "stream":
        from aisle import streaming

        return streaming.main(_job_args(args.config, preset("stream"), args.overrides))
    if args.command == "demo":
        from aisle import demo

        return demo.main(_job_args(args.config, preset("demo"), args.overrides))
    if args.command in ("status", "report"):
        import importlib

        command = importlib.import_module(f"ops.{args.command}")  # report imports matplotlib: only when asked
        return command.main(args.config or preset("stream"), args.overrides)
    if args.command == "catalog":
        from data_pipelines import catalog

        return catalog.main(args.rest) or 0
    if args.command == "config":
        from aisle.demo import DemoConfig
        from core.job_configs import (DistillConfig, EvaluateConfig, FinetuneConfig, PrepareConfig, RecommendEvalConfig,
                                      RecommendTrainConfig, StreamConfig)
        from ops.config import OpsConfig

        cls = {"prepare": PrepareConfig, "train": FinetuneConfig, "distill": DistillConfig, "evaluate": EvaluateConfig,
               "recommend": RecommendTrainConfig, "evaluate-recommend": RecommendEvalConfig, "demo": DemoConfig,
               "stream": StreamConfig, "ops": OpsConfig}[args.job]
        for key, default, text in describe(cls):
            print(f"{key:<36} {default:<28} {text}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
