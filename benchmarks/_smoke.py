"""What the benchmarks' `--smoke` runs share (not a benchmark): the banner that labels a smoke run,
and a tiny relevance world built from nothing on the tiny random backbone (a small generated
catalog, its prepared relevance splits, an untrained offline relevance adapter in a registry) in
place of the artifacts `make demo` leaves. Smoke runs check that every step of a benchmark runs and
prints its summary; their numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from core.registry import ADAPTER_DIR
from core import modeling

BANNER = ("SMOKE RUN (--smoke): tiny random model, small data, a few seconds of load; every step runs, "
          "the numbers mean nothing")
BACKBONE = modeling.TINY_BACKBONE
RELEVANCE_LABELS = ["irrelevant", "partial", "exact"]
TRAIN_OVERRIDES = [f"model.backbone={BACKBONE}", "model.max_length=32", "model.lora_r=4", "model.lora_alpha=8",
                   "train.batch_size=16"]
"""FinetuneConfig overrides of a smoke training run (the tests' tiny settings)."""


def banner() -> None:
    print(BANNER, flush=True)


def make_catalog(directory: Path):
    """A 120-product, 20-query catalog (3 queries affected by the seed-0 trend), written to `directory`."""
    from data_pipelines.catalog import generate_catalog, write_catalog

    catalog = generate_catalog(seed=0, n_products=120, n_queries=20, candidates_per_query=10)
    write_catalog(catalog, directory)
    return catalog


def prepare_relevance(prepared: Path, catalog) -> None:
    """Relevance train/val/test splits (whole queries, 60/20/20) in the layout `data_pipelines.prepare`
    writes, made in process from the same per-row functions (no Ray)."""
    from core.tasks import get_task
    from data_pipelines.prepare import join_catalog

    examples = get_task("relevance").make_examples(join_catalog(catalog.judgements, catalog.queries, catalog.products))
    examples = examples[examples["drop_reason"].isna()].drop(columns=["drop_reason", "dedupe_key"])
    queries = sorted(examples["query_id"].unique())
    cuts = {"train": queries[:int(len(queries) * 0.6)], "val": queries[int(len(queries) * 0.6):int(len(queries) * 0.8)],
            "test": queries[int(len(queries) * 0.8):]}
    for split, ids in cuts.items():
        out = prepared / "relevance" / split
        out.mkdir(parents=True)
        examples[examples["query_id"].isin(ids)].to_parquet(out / "part-0.parquet")


def register_offline_relevance(registry_dir: Path, data_dir: Path) -> str:
    """An untrained relevance adapter on the tiny backbone with a full training config (an incremental
    update starts from it), registered as an offline version and made CURRENT; returns its version."""
    from core.config import load_config, to_dict
    from core.job_configs import FinetuneConfig
    from core.registry import AdapterRegistry
    from train.finetune import adapter_meta

    cfg = load_config(FinetuneConfig, None, ["task=relevance", f"data_dir={data_dir}", f"registry={registry_dir}",
                                            *TRAIN_OVERRIDES])
    meta = adapter_meta(cfg, RELEVANCE_LABELS)
    model = modeling.build_task_model(meta, seed=0)
    registry = AdapterRegistry(registry_dir)
    info = registry.create_version("relevance", lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={**to_dict(cfg), "labels": RELEVANCE_LABELS}, metrics={"val_ndcg@10": 0.5},
                                   lineage={"trigger": "offline"})
    registry.promote("relevance", info.version, reason="smoke set-up")
    return info.version


def relevance_world(root: Path):
    """catalog, prepared data and registry under `root` (catalog/, prepared/, registry/); returns the catalog."""
    catalog = make_catalog(root / "catalog")
    prepare_relevance(root / "prepared", catalog)
    register_offline_relevance(root / "registry", root / "prepared")
    return catalog
