"""Shared set-up for the Serve integration tests (imported by test_serve*.py; not a test module).

`running_app(tmp)` builds everything the app needs on a tiny random BERT (a small generated catalog
and its embeddings: `small_catalog`, a registry with a CURRENT sentiment and relevance adapter), starts Serve on a
free loopback port and yields an httpx client for it; Serve is shut down on exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from core import modeling
from core.modeling import AdapterMeta, LoraSpec
from core.registry import ADAPTER_DIR, AdapterRegistry
from ops.runtime import free_port  # noqa: F401 - the tests' servers take their ports from here

APP_NAME = "aisle"
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
RELEVANCE_LABELS = ["irrelevant", "partial", "exact"]


def wait_for(predicate, timeout, what, diagnose=None):
    """`predicate()`'s first truthy value within `timeout` s, else an AssertionError naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {diagnose()}" if diagnose else ""))


def register_adapter(registry: AdapterRegistry, task: str, labels: list[str], seed: int) -> str:
    """A freshly initialised LoRA adapter on the tiny backbone, published as a new version; returns it."""
    meta = AdapterMeta(task=task, labels=labels, backbone=modeling.TINY_BACKBONE, max_length=32, lora=LoraSpec(r=4, alpha=8))
    model = modeling.build_task_model(meta, seed=seed)
    info = registry.create_version(task, lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={"labels": labels}, metrics={"val_accuracy": 0.5}, lineage={"trigger": "test"})
    return info.version


_EMBEDDED: list[Path] = []


def small_catalog(tmp: Path):
    """The small generated catalog (seed 1: 120 products, 20 queries) in `tmp/catalog` and its tiny-BERT
    vectors, made by the real embed job (Ray Data), in `tmp/emb`; returns the catalog. The job runs once
    per test session (the same catalog and backbone give the same vectors): later calls copy its output."""
    from core.config import load_config
    from core.job_configs import EmbedCatalogConfig
    from data_pipelines import embed_catalog
    from data_pipelines.catalog import generate_catalog, write_catalog

    catalog = generate_catalog(seed=1, n_products=120, n_queries=20, candidates_per_query=10)
    if not _EMBEDDED:
        made = Path(tempfile.mkdtemp(prefix="aisle-test-catalog-"))
        atexit.register(shutil.rmtree, made, True)
        write_catalog(catalog, made / "catalog")
        embed_catalog.run(load_config(EmbedCatalogConfig, None, [f"catalog_dir={made / 'catalog'}", f"output={made / 'emb'}",
                                                                 "backbone=tiny-random-bert", "cpus_per_actor=0.5"]))
        _EMBEDDED.append(made)
    for name in ("catalog", "emb"):
        shutil.copytree(_EMBEDDED[0] / name, tmp / name)
    return catalog


@contextmanager
def running_app(tmp: Path, client_timeout: float = 60,
                serve_args: dict | None = None) -> Iterator[tuple[httpx.Client, AdapterRegistry, Path]]:
    """Serve the whole app from `tmp` on 127.0.0.1:<free port>; yields (client, registry, tmp).

    `serve_args`: ServeConfig keys on top of the tiny settings. Needs a running Ray (the `ray_session` fixture)."""
    from ray import serve

    from serve.app import build_app

    small_catalog(tmp)
    registry = AdapterRegistry(tmp / "registry")
    for task, labels in (("sentiment", SENTIMENT_LABELS), ("relevance", RELEVANCE_LABELS)):
        registry.promote(task, register_adapter(registry, task, labels, seed=1))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"registry": str(tmp / "registry"), "embeddings": str(tmp / "emb"),
                             "catalog_dir": str(tmp / "catalog"), "backbone": "tiny-random-bert",
                             "threads_per_replica": 1, "current_ttl_s": 0.2, **(serve_args or {})}),
                  name=APP_NAME, route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=client_timeout) as client:
            yield client, registry, tmp
    finally:
        serve.shutdown()


def prepare_relevance(prepared: Path, catalog) -> None:
    """Relevance train/val splits (by query) as `data_pipelines.prepare` writes them: what a stream
    update's replay sample and its gate read."""
    from core.tasks import get_task
    from data_pipelines.prepare import join_catalog

    examples = get_task("relevance").make_examples(join_catalog(catalog.judgements, catalog.queries, catalog.products))
    queries = sorted(examples["query_id"].unique())
    cut = int(len(queries) * 0.7)
    for split, ids in (("train", queries[:cut]), ("val", queries[cut:])):
        out = prepared / "relevance" / split
        out.mkdir(parents=True)
        examples[examples["query_id"].isin(ids)].drop(columns=["drop_reason", "dedupe_key"]).to_parquet(out / "p.parquet")


def register_offline_relevance(registry: AdapterRegistry) -> str:
    """An untrained relevance adapter on the tiny backbone with a full training config (an
    incremental update starts from it), registered as an offline version and made CURRENT."""
    from core.config import load_config, to_dict
    from core.job_configs import FinetuneConfig
    from train.finetune import adapter_meta

    cfg = load_config(FinetuneConfig, None, ["task=relevance", "model.backbone=tiny-random-bert", "model.max_length=32",
                                            "model.lora_r=4", "model.lora_alpha=8"])
    meta = adapter_meta(cfg, RELEVANCE_LABELS)
    model = modeling.build_task_model(meta, seed=0)
    info = registry.create_version("relevance", lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={**to_dict(cfg), "labels": RELEVANCE_LABELS}, metrics={"val_ndcg@10": 0.5},
                                   lineage={"trigger": "offline"})
    registry.promote("relevance", info.version, reason="test set-up")
    return info.version



def register_generation_adapter(registry: AdapterRegistry, task: str, lm_cache: Path, seed: int = 0) -> str:
    """A random LoRA on the tiny Llama (core.lm.TINY_LM) published as a new version of a
    generation task and made CURRENT; returns the version."""
    import torch

    from core import lm

    base, _ = lm.load_lm(lm.TINY_LM, lm_cache)
    torch.manual_seed(seed)
    model = lm.attach_lora(base, lm.GenLora(r=2))
    info = registry.create_version(task, lambda d: lm.save_gen_adapter(model, d / ADAPTER_DIR, lm=lm.TINY_LM, task=task),
                                   config={"kind": "generation", "model": {"lm": lm.TINY_LM, "cache_dir": str(lm_cache)}},
                                   metrics={"val_loss": 10.0}, lineage={"trigger": "test"})
    registry.promote(task, info.version)
    return info.version
