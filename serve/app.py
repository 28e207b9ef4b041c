"""The Serve application: Ingress -> TaskModel (multiplexed adapters), Retriever and Recommender.

`build_app(args)` is the import path for `serve run configs/serve.yaml` / `serve deploy`; scaling
(replicas, autoscaling, max_ongoing_requests, max_queued_requests) lives in that YAML.
`aisle serve` runs it embedded on 127.0.0.1:8000.
"""

from __future__ import annotations


from core import storage
from core.config import from_dict
from core.serve_config import ServeConfig
from serve.ingress import Ingress
from serve.generator import GeneratorServer
from serve.model_server import TaskModelServer
from serve.recommender import Recommender
from serve.retriever import Retriever


def build_app(args: dict | None = None):
    """The import path of `serve run` / `serve deploy`: Serve requires a builder of exactly one argument."""
    return build_graph(args)


def model_deployment_options(cfg: ServeConfig, model_options: dict | None = None) -> dict:
    """TaskModel's deployment options: `model_options`, plus one GPU per replica when `cfg.use_gpu`
    (added to the deployment's own ray_actor_options; a serve.yaml's ray_actor_options replace these)."""
    options = dict(model_options or {})
    if cfg.use_gpu:
        actor = {**(TaskModelServer.ray_actor_options or {}), **options.get("ray_actor_options", {})}
        actor.setdefault("num_gpus", 1)
        options["ray_actor_options"] = actor
    return options


def build_graph(args: dict | None = None, model_options: dict | None = None):
    """`model_options`: Serve deployment options for TaskModel (replicas...), for callers without a YAML."""
    cfg = from_dict(ServeConfig, args or {})
    registry = storage.absolute(cfg.registry)  # replicas run elsewhere; an s3:// root stays as it is
    model = TaskModelServer.options(**model_deployment_options(cfg, model_options)).bind(
        registry=registry, backbone=cfg.backbone, threads=cfg.threads_per_replica,
        max_batch_inputs=cfg.max_batch_inputs, batch_wait_s=cfg.batch_wait_ms / 1000,
        max_adapters=cfg.max_adapters_per_replica, mode=cfg.mode, int8=cfg.int8, use_gpu=cfg.use_gpu,
        mix_adapters=cfg.mix_adapters, cpu_bf16=cfg.cpu_bf16,
        niceness=cfg.model_niceness)
    # Always deployed (serve.yaml names it): without embeddings it answers status() with what is missing.
    retriever = Retriever.bind(embeddings=storage.absolute(cfg.embeddings), catalog_dir=storage.absolute(cfg.catalog_dir))
    # Always deployed too: without a recommend adapter it says so and the ingress falls back.
    recommender = Recommender.bind(registry=registry, data_dir=storage.absolute(cfg.data_dir), salt=cfg.salt,
                                   catalog_dir=storage.absolute(cfg.catalog_dir) if cfg.recommend_catalog_products else None,
                                   session_weight=cfg.recommend_session_weight,
                                   vectors=storage.absolute(cfg.recommend_vectors) if cfg.recommend_vectors else None)
    # Always deployed as well: it loads the LM only when a generation adapter is first asked for.
    generator = GeneratorServer.bind(registry=registry, lm_cache_dir=storage.absolute(cfg.lm_cache_dir),
                                     threads=cfg.generation_threads, max_batch=cfg.generation_max_batch,
                                     batch_wait_s=cfg.generation_batch_wait_ms / 1000)
    return Ingress.bind(model, retriever, registry, recommender=recommender, generator=generator,
                        max_generated_tokens=cfg.max_generated_tokens, current_ttl_s=cfg.current_ttl_s,
                        rerank_candidates=cfg.rerank_candidates, ensemble_offline_weight=cfg.ensemble_offline_weight,
                        ingest_token=cfg.ingest_token, admin_token=cfg.admin_token,
                        first_stage_lexical_weight=cfg.first_stage_lexical_weight, rerank_words=cfg.rerank_words,
                        score_cache_entries=cfg.score_cache_entries,
                        first_stage_cache_entries=cfg.first_stage_cache_entries, max_inflight_search=cfg.max_inflight_search,
                        max_inflight=cfg.max_inflight, retry_after_s=cfg.retry_after_s,
                        online_refresh_s=cfg.online_refresh_s, search_reranker=cfg.search_reranker,
                        rerank_budget_ms=cfg.rerank_budget_ms, rerank_budget_pace=cfg.rerank_budget_pace)
