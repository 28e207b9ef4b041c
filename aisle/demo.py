"""The end-to-end demo: prepare the bundled data, fine-tune every task on a small budget, evaluate
each new version on its held-back test split beside the baselines, print one table, then serve.

Serving: embed the catalog (if not embedded yet), start the Serve app with the stream loop in the
same Ray session on 127.0.0.1 (port 8000, or a free one if that is taken), send example requests
(aisle/demo_requests.py) and print each answer with the model and request id behind it. Then the
stream (aisle/demo_stream.py): simulated shoppers whose taste drifted search and buy until a gated
update is promoted, a click farm's adversarial flood follows, and the audit lines are printed.

Uses the real presets (configs/prepare.yaml, configs/<task>.yaml, configs/evaluate.yaml,
configs/embed_catalog.yaml, ServeConfig's defaults) with the overrides of configs/demo.yaml, in one
embedded Ray session. A second run reuses what the first made from the same settings, prepared data
and code (`reuse`, core.fingerprint): the versions, their evaluations and the embeddings.

    aisle demo            (what `make demo` runs)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ops.runtime import ensure_ray, free_port, job_main
from core.config import ConfigError, doc, load_config
from core.job_configs import EmbedCatalogConfig, EvaluateConfig, FinetuneConfig, PrepareConfig, TaskName
from core.serve_config import ServeConfig
from core.workspace import path_field, resolve_paths, root_field

LOOPBACK = "127.0.0.1"


@dataclass
class DemoConfig:
    workspace: str | None = root_field()
    prepare: list[str] = doc([], "overrides applied to configs/prepare.yaml")
    tasks: list[TaskName] = doc(["intent", "sentiment", "relevance"], "tasks to train, in this order")
    recommend: bool = doc(True, "also train and evaluate the recommender on the retail log (train.recommend: its overrides)")
    train: dict[str, list[str]] = doc({}, "per-task overrides applied to configs/<task>.yaml")
    generate: list[str] = doc(["describe", "summarize", "reply"], "generation tasks to train (LoRA on the instruct LM) "
                                                                  "and ask once each at the end")
    generate_train: list[str] = doc([], "overrides applied to configs/generate.yaml for each generation task")
    evaluate: list[str] = doc([], "overrides applied to configs/evaluate.yaml")
    output: str = path_field("demo_results", "where the result table is written as JSON")
    serve_examples: bool = doc(True, "end by serving on 127.0.0.1 and sending example requests")
    serve: list[str] = doc([], "overrides applied to ServeConfig (the args of configs/serve.yaml)")
    stream: list[str] = doc([], "overrides applied to configs/stream.yaml for the stream part")
    stream_dir: str = path_field("demo_stream", "the demo's feedback log, updates and audit (cleared at start)")
    stream_budget_s: float = doc(600.0, "longest the demo streams shoppers while waiting for a promotion")
    embed: list[str] = doc([], "overrides applied to configs/embed_catalog.yaml, if the catalog needs embedding")
    reuse: bool = doc(True, "reuse each version (and evaluation) an earlier run made from the same settings, prepared "
                            "data and code instead of training it again (a second demo trains nothing); false: train all")

    def __post_init__(self):
        resolve_paths(self)


def load_job(cfg: DemoConfig, cls, preset_name: str | None, overrides: list[str]):
    """A job's config: its preset (by name; None: the defaults), then the demo's workspace and overrides
    (and the demo's `reuse`, for a job that has the key)."""
    from ops.runtime import preset

    reuse = [f"reuse={str(cfg.reuse).lower()}"] if "reuse" in {f.name for f in dataclasses.fields(cls)} else []
    return load_config(cls, preset(preset_name) if preset_name else None,
                       [f"workspace={cfg.workspace}", *reuse, *overrides])


def run(cfg: DemoConfig) -> list[dict]:
    from data_pipelines import prepare
    from train import evaluate, finetune

    start = time.perf_counter()
    laps: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        laps[name] = now - since
        return now

    steps = 6 if cfg.serve_examples else 3
    serve_cfg = serve_config(cfg) if cfg.serve_examples else None  # a bad override fails before training
    ensure_ray()
    print(f"== 1/{steps} prepare (Ray Data) ==")
    prepare.run(load_job(cfg, PrepareConfig, "prepare", cfg.prepare))
    mark = lap("start and prepare", start)
    evaluations = []
    for i, task in enumerate(cfg.tasks):
        print(f"== 2/{steps} fine-tune {task} (Ray Train, LoRA) [{i + 1}/{len(cfg.tasks)}] ==")
        version = finetune.run(load_job(cfg, FinetuneConfig, task, [f"task={task}", *cfg.train.get(task, [])]))
        print(f"== 3/{steps} evaluate {version.model_id} on the test split ==")
        ev = evaluate.evaluate_version(load_job(cfg, EvaluateConfig, "evaluate",
                                                   [f"task={task}", f"version={version.version}", *cfg.evaluate]))
        evaluations.append(ev)
    mark = lap("classification and ranking", mark)
    rec_lines = train_recommender(cfg, steps) if cfg.recommend else []
    mark = lap("recommend", mark)
    gen_lines = train_generators(cfg, steps)
    mark = lap("generation", mark)
    print()
    print(evaluate.format_table(evaluations))
    for line in rec_lines + gen_lines:
        print(line)
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(evaluations, indent=2))
    if serve_cfg is not None:
        serve_and_send_examples(serve_cfg, cfg)
        lap("embed, serve and stream", mark)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in laps.items()))
    return evaluations


def train_recommender(cfg: DemoConfig, steps: int) -> list[str]:
    """Train and evaluate the recommend task; returns its lines for the results table."""
    from core.job_configs import RecommendEvalConfig, RecommendTrainConfig
    from train import recommend, recommend_eval

    print(f"== 2/{steps} fine-tune recommend (Ray Train, LoRA; the retail purchase log) ==")
    train_cfg = load_job(cfg, RecommendTrainConfig, "recommend", cfg.train.get("recommend", []))
    version = recommend.run(train_cfg)
    print(f"== 3/{steps} evaluate {version.model_id}: full-catalog ranking of each shopper's last purchase ==")
    results = recommend_eval.run(load_job(cfg, RecommendEvalConfig, "evaluate_recommend", [
        f"version={version.version}", f"registry={train_cfg.registry}", f"data_dir={train_cfg.data_dir}"])).results
    best = max(recommend_eval.BASELINES, key=lambda b: results[b]["new"]["ndcg@10"])
    r = results["model"]["all"]
    return [f"{'recommend':<10} {version.version:<8} {'test':<5} {r['n']:>6} {'ndcg@10':<9} {r['ndcg@10']:>7.4f}  "
            + ", ".join(f"{b} {results[b]['all']['ndcg@10']:.4f}" for b in recommend_eval.BASELINES),
            " " * 31 + f"also: hr@10 {r['hr@10']:.4f}; items new to the shopper: ndcg@10 "
            f"{results['model']['new']['ndcg@10']:.4f}, best baseline {best} {results[best]['new']['ndcg@10']:.4f}"]


def train_generators(cfg: DemoConfig, steps: int) -> list[str]:
    """Train each generation task on the demo's small budget; returns a line per task for the table
    (its validation loss: the demo's budget is too small for the ROUGE-L comparison, which
    `aisle evaluate <task>` and benchmarks/generate_bench.py make)."""
    from core.gen_config import GenerateConfig
    from train import generate

    lines = []
    for i, task in enumerate(cfg.generate):
        print(f"== 2/{steps} fine-tune {task} (Ray Train, LoRA on the instruct LM) [{i + 1}/{len(cfg.generate)}] ==")
        version = generate.run(load_job(cfg, GenerateConfig, "generate", [f"task={task}", *cfg.generate_train]))
        lines.append(f"{task:<10} {version.version:<8} {'val':<5} {version.metrics.get('val_examples', 0):>6} "
                     f"{'loss':<9} {version.metrics['val_loss']:>7.4f}  (generation: served at /v1/generate/{task})")
    return lines


def serve_config(cfg: DemoConfig) -> ServeConfig:
    """ServeConfig's defaults with the demo's overrides; the demo serves on loopback only."""
    serve_cfg = load_job(cfg, ServeConfig, None, cfg.serve)
    if serve_cfg.host != LOOPBACK:
        raise ConfigError(f"serve: the demo serves on {LOOPBACK} only, not host={serve_cfg.host}")
    load_job(cfg, EmbedCatalogConfig, "embed_catalog", cfg.embed)  # a typo in `embed` fails now too
    return serve_cfg


def embed_recommend_items(serve_cfg: ServeConfig) -> None:
    """The CURRENT recommend version's item vectors (Ray Data), unless there is none or they are
    already there: the Recommender replica then starts by reading them, not by embedding 7k items."""
    from core.errors import InputError
    from core.job_configs import RecItemVectorsConfig
    from core.registry import AdapterRegistry
    from data_pipelines import rec_item_vectors

    registry = AdapterRegistry(serve_cfg.registry)
    current = registry.current("recommend") if "recommend" in registry.tasks() else None
    if current is None or not serve_cfg.recommend_vectors:
        return
    if rec_item_vectors.made_by(serve_cfg.recommend_vectors, serve_cfg.registry, current):
        print(f"== 4/6 recommend item vectors: using {serve_cfg.recommend_vectors} ==")
        return
    print("== 4/6 the recommender's item vectors (Ray Data) ==")
    try:
        rec_item_vectors.run(RecItemVectorsConfig(
            registry=serve_cfg.registry, data_dir=serve_cfg.data_dir, output=serve_cfg.recommend_vectors,
            catalog_dir=serve_cfg.catalog_dir if serve_cfg.recommend_catalog_products else None))
    except InputError as e:   # no prepared recommend data: the Recommender says so when it starts
        print(f"   skipped: {e}")


def serve_and_send_examples(serve_cfg: ServeConfig, cfg: DemoConfig) -> list:
    """Steps 4-6: embed the catalog if needed, serve with the stream loop, send the example requests,
    stream simulated shoppers (aisle/demo_stream.py), shut everything down."""
    from aisle.demo_stream import demo_stream_config, run_stream_demo
    from data_pipelines import embed_catalog

    if Path(serve_cfg.embeddings).is_dir():
        print(f"== 4/6 catalog embeddings: using {serve_cfg.embeddings} ==")
    else:
        print("== 4/6 embed the catalog (Ray Data) ==")
        embed_catalog.run(load_job(cfg, EmbedCatalogConfig, "embed_catalog", [
            f"catalog_dir={serve_cfg.catalog_dir}", f"output={serve_cfg.embeddings}",
            f"backbone={serve_cfg.backbone}", *cfg.embed]))
    embed_recommend_items(serve_cfg)
    serve_cfg = dataclasses.replace(serve_cfg, port=free_port(LOOPBACK, serve_cfg.port))
    stream_cfg = demo_stream_config(serve_cfg, cfg.stream_dir, cfg.stream)
    print(f"== 5/6 serve (Ray Serve) with the stream loop on http://{LOOPBACK}:{serve_cfg.port} ==")
    exchanges = run_stream_demo(stream_cfg, cfg.stream_dir, cfg.stream_budget_s)
    print("\nServe and the stream actors shut down")
    failed = [f"{ex.method} {ex.path} -> {ex.status}" for ex in exchanges if ex.status >= 500]
    if failed:
        raise RuntimeError(f"example requests failed on the server: {'; '.join(failed)}")
    return exchanges


def main(argv: list[str] | None = None) -> int:
    return job_main(DemoConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
