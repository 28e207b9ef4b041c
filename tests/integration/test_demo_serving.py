"""The demo's serving and stream steps on a tiny random BERT: it embeds a missing catalog, serves on
127.0.0.1 (a free port when the configured one is taken), sends the example requests over real HTTP,
prints each answer with the model that produced it, streams simulated shoppers until the update
coordinator decides, prints the audit lines, and shuts Serve and the stream actors down."""

from __future__ import annotations

import re
import socket

import httpx
import pandas as pd
import pytest

from aisle import demo
from aisle.demo import DemoConfig
from aisle.demo_requests import SEARCH
from ops.runtime import free_port
from core import modeling
from core.config import ConfigError
from core.modeling import AdapterMeta, LoraSpec
from core.registry import ADAPTER_DIR, AdapterRegistry
from tests.integration.serve_helpers import prepare_relevance, register_generation_adapter, register_offline_relevance

LABELS = {"sentiment": ["negative", "neutral", "positive"], "intent": ["cancel_order", "get_refund", "track_refund"]}


def _register(registry: AdapterRegistry, task: str) -> str:
    meta = AdapterMeta(task=task, labels=LABELS[task], backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8))
    model = modeling.build_task_model(meta, seed=1)
    info = registry.create_version(task, lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={"labels": LABELS[task]}, metrics={"val_macro_f1": 0.5, "test_macro_f1": 0.25},
                                   lineage={"trigger": "test"})
    registry.promote(task, info.version)
    return info.version


def _answers(printed: str) -> dict[str, tuple[str, str, str]]:
    """'METHOD path' -> (status, model, request id) from send_examples' printed lines."""
    found = re.findall(r"^(POST|GET) (\S+).*\n  -> (\d+)  model (\S+)  request_id (\S+)$", printed, re.M)
    return {f"{method} {path}": (status, model, rid) for method, path, status, model, rid in found}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_demo_serving_step_embeds_serves_answers_and_shuts_down(ray_session, tmp_path, capsys):
    from data_pipelines.catalog import generate_catalog, write_catalog

    catalog = generate_catalog(seed=1, n_products=120, n_queries=20, candidates_per_query=10)
    write_catalog(catalog, tmp_path / "catalog")
    prepare_relevance(tmp_path / "prepared", catalog)
    registry = AdapterRegistry(tmp_path / "registry")
    for task in LABELS:
        _register(registry, task)
    register_offline_relevance(registry)
    for task in ("describe", "summarize", "reply"):  # the demo asks each generation task once
        register_generation_adapter(registry, task, tmp_path / "lm")
    with socket.socket() as taken:  # the configured port is in use: the demo must pick another
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cfg = DemoConfig(serve=[f"registry={tmp_path / 'registry'}", f"embeddings={tmp_path / 'emb'}",
                                f"catalog_dir={tmp_path / 'catalog'}", "backbone=tiny-random-bert",
                                "threads_per_replica=1", f"port={busy}", f"lm_cache_dir={tmp_path / 'lm'}"],
                         embed=["cpus_per_actor=0.5", "threads_per_actor=1"],
                         # watch_s=0: these overrides replace configs/demo.yaml's (watch_s=20); with the stream
                         # preset's 90 s each decision waited 90 s (305 s for the test).
                         stream=[f"data_dir={tmp_path / 'prepared'}", "policy.min_examples=12", "policy.cooldown_s=0",
                                 "policy.watch_s=0",
                                 "policy.poll_s=0.2", "update.epochs=1", "update.batch_size=8",
                                 "update.replay_examples=40", "update.threads_per_worker=1", "gate.original_queries=3"],
                         # 60: the fast path gets a quarter (on the tiny random model in a 20-query world the
                         # online layer seldom moves the shown query, and it waited its whole 22 s at 90)
                         stream_dir=str(tmp_path / "demo_stream"), stream_budget_s=60)
        try:
            exchanges = demo.serve_and_send_examples(demo.serve_config(cfg), cfg)
        finally:
            from ray import serve

            serve.shutdown()  # a no-op when the step already shut it down
    printed = capsys.readouterr().out

    assert "== 4/6 embed the catalog" in printed and (tmp_path / "emb" / "_meta.json").is_file()
    url = re.search(r"^Example requests to (http://127\.0\.0\.1:(\d+))$", printed, re.M)
    assert url and int(url.group(2)) != busy
    assert "Serve and the stream actors shut down" in printed
    assert "== 6/6 the stream" in printed and "Audit log" in printed and "Online click layer (" in printed
    assert printed.count("then a click farm floods the stream") == 2
    audit_lines = printed[printed.index("Audit log"):].splitlines()[1:]
    assert any(" promoted " in line or " rejected " in line for line in audit_lines), printed
    assert re.search(r"streamed \d+ sessions: \d+ events, \d+ new", printed)
    with pytest.raises(httpx.TransportError):  # nothing listens there any more
        httpx.get(f"{url.group(1)}/healthz", timeout=5)

    answers = _answers(printed)
    assert {k: v[:2] for k, v in answers.items()} == {
        "POST /v1/predict/sentiment": ("200", "sentiment@v1"),
        "POST /v1/predict/intent": ("200", "intent@v1"),
        "POST /v1/search": ("200", "relevance@v1"),
        "POST /v1/recommend": ("200", "retrieval:tiny-random-bert"),
        "GET /v1/adapters/sentiment": ("200", "sentiment@v1"),
        "POST /v1/generate/describe": ("200", "describe@v1"),
        "POST /v1/generate/summarize": ("200", "summarize@v1"),
        "POST /v1/generate/reply": ("200", "reply@v1"),
    }, printed
    assert all(re.fullmatch(r"[0-9a-f-]{32,36}", rid) for _, _, rid in answers.values()), printed
    assert [ex.request_id for ex in exchanges] == [rid for _, _, rid in answers.values()]
    assert "CURRENT v1 of 1 version(s)" in printed and "test_macro_f1 0.2500" in printed
    assert printed.count("request_id") == 8

    by_path = {ex.path: ex for ex in exchanges}
    assert all(ex.ok for ex in exchanges)
    assert len(by_path["/v1/predict/sentiment"].body["predictions"]) == len(by_path["/v1/predict/sentiment"].payload["inputs"])
    hits = by_path["/v1/search"].body["products"]
    assert len(hits) == SEARCH["k"]
    catalog_ids = set(pd.read_parquet(tmp_path / "catalog" / "products.parquet")["product_id"])
    assert by_path["/v1/recommend"].payload["product_ids"] == [hits[0]["product_id"]]
    assert hits[0]["product_id"] in catalog_ids
    assert {p["product_id"] for p in by_path["/v1/recommend"].body["products"]} <= catalog_ids - {hits[0]["product_id"]}


def test_demo_serves_on_loopback_only_and_checks_overrides_before_training():
    with pytest.raises(ConfigError, match="127.0.0.1 only"):
        demo.serve_config(DemoConfig(serve=["host=0.0.0.0"]))
    with pytest.raises(ConfigError, match="colour"):
        demo.serve_config(DemoConfig(serve=["colour=red"]))
    with pytest.raises(ConfigError, match="actors"):
        demo.serve_config(DemoConfig(embed=["actors=zero"]))


def test_free_port_keeps_a_free_preferred_port_and_avoids_a_taken_one():
    preferred = free_port("127.0.0.1", 0)
    assert free_port("127.0.0.1", preferred) == preferred
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert free_port("127.0.0.1", taken.getsockname()[1]) != taken.getsockname()[1]
