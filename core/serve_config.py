"""The typed config of the HTTP API (`aisle serve`, the args of configs/serve.yaml): one flat section
(Serve YAML takes a flat `args` mapping), validated on construction like every job config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import doc
from core.workspace import path_field, resolve_paths, root_field


@dataclass
class ServeConfig:
    workspace: str | None = root_field()
    registry: str = path_field("registry", "adapter registry root (CURRENT pointers are read per request, cached)")
    embeddings: str = path_field("embeddings", "catalog embeddings for /v1/search and /v1/recommend")
    catalog_dir: str = path_field("catalog", "catalog (product texts for reranking)")
    data_dir: str = path_field("prepared", "prepared data: the recommend task's items and stored shopper histories")
    salt: str = doc("aisle-dev-salt", "the prepare salt: stored histories are keyed by salted user ids")
    recommend_catalog_products: bool = doc(True, "/v1/recommend ranks catalog_dir's products too, beside the prepared "
                                                 "items (one shop, one catalog)")
    access_log: bool = doc(False, "a line per request from every replica (console and replica logs); "
                                  "`aisle serve` and the demo keep them off")
    recommend_vectors: str | None = path_field("recommend_vectors", "item vectors from `aisle embed recommend`, "
                                        "read when their version is CURRENT (else the catalog is embedded at load)")
    recommend_session_weight: float = doc(1.0, "/v1/recommend {user_id}: weight of the live session's own user vector, "
                                               "added to the whole history's (0: history alone)")
    backbone: str = doc("minilm", "backbone every adapter was trained on")
    threads_per_replica: int = doc(2, "torch intra-op threads in each task-model replica")
    mode: Literal["multi", "merged"] = doc("multi", "multi: LoRA adapters multiplexed on one backbone; "
                                           "merged: each adapter folded into its own backbone copy (one hot adapter)")
    int8: bool = doc(False, "CPU: dynamic int8 quantization (feed-forward layers in multi mode, all in merged)")
    use_gpu: bool = doc(False, "task-model replicas on a CUDA GPU (num_gpus=1 each), bf16 autocast; not with int8")
    cpu_bf16: Literal["auto", "always", "never"] = doc(
        "auto", "CPU replicas forward under bf16 autocast (weights fp32): auto = where the replica's CPU has bf16 "
                "matrix units (AMX, AVX512-BF16; ~3x faster there) and int8 is off")
    model_niceness: int = doc(19, "CPU priority of each task-model replica: its niceness is raised to this (Ray's "
                                  "workers start at 15; 19 is the lowest), so the proxy, ingress and first stage, "
                                  "light but latency-bound, run first when the reranker has the cores (0: as started)")
    max_adapters_per_replica: int = doc(16, "adapters a replica keeps loaded (least recently used evicted)")
    max_batch_inputs: int = doc(64, "dynamic batching: inputs per forward pass at most")
    batch_wait_ms: float = doc(4.0, "dynamic batching: longest wait for a batch to fill")
    mix_adapters: bool = doc(True, "one forward pass for the requests of several adapters batched together "
                                   "(each row through its own LoRA and head); false: one pass per adapter")
    current_ttl_s: float = doc(1.0, "how long the ingress caches a task's CURRENT version")
    rerank_candidates: int = doc(20, "first-stage candidates the relevance adapter reranks for /v1/search")
    search_reranker: Literal["auto", "relevance", "relevance_student"] = doc(
        "auto", "what reranks /v1/search: auto = relevance_student's CURRENT while it was distilled from "
                "relevance's CURRENT (`aisle distill`), else relevance; or always the one named")
    first_stage_lexical_weight: float = doc(0.3, "search's first stage: (1 - w) * bi-encoder cosine + w * BM25, each "
                                                 "min-max scaled over the pooled candidates (0: cosine only)")
    rerank_words: int = doc(0, "product text cut to its first words in reranked pairs (0: whole, the adapter's max_length cuts)")
    score_cache_entries: int = doc(100_000, "reranker scores cached by (version, query, product text), LRU (0: off)")
    first_stage_cache_entries: int = doc(1024, "the first stage's candidates the ingress keeps per query (LRU, ~15 KB "
                                               "each; 0: off), emptied when the catalog changes (through another "
                                               "ingress replica: seen within current_ttl_s)")
    max_inflight_search: int = doc(8, "searches in flight before the ingress answers 503 with Retry-After (0: no limit)")
    rerank_budget_ms: float = doc(120.0, "a search waits this long (or rerank_budget_pace x the reranker's best pace) for its scores, "
                                         "then answers in the first stage's order (`reranked: 0`) while the scoring goes "
                                         "on to fill the cache (0, or no score cache: wait)")
    rerank_budget_pace: float = doc(0.0, "0: rerank_budget_ms alone, a hard latency target; or, on a machine where it is "
                                         "longer, the budget is this many times (>= 1) the reranker's best pace over its "
                                         "last 64 whole scorings (a slow machine reranks more searches, some slowly)")
    max_inflight: int = doc(0, "the same for each other model route (predict, recommend)")
    retry_after_s: int = doc(1, "the Retry-After seconds of a 503")
    ensemble_offline_weight: float = doc(0.0, "search scores = w * offline adapter + (1 - w) * CURRENT (0: CURRENT only)")
    online_refresh_s: float = doc(0.25, "search: how often the ingress fetches the click layer's newest snapshot, in the "
                                        "background (0: the online layer is never applied)")
    ingest_token: str | None = doc(None, "bearer token for POST /v1/events (env AISLE_INGEST_TOKEN wins; unset: ingest off)")
    admin_token: str | None = doc(None, "bearer token for the admin routes (promote, rollback, release, /v1/online, "
                                        "/v1/products; env AISLE_ADMIN_TOKEN wins; unset: admin off)")
    lm_cache_dir: str = path_field("lm", "where the generation LM was converted (`aisle train describe` does it)")
    generation_threads: int = doc(2, "torch threads of each Generator replica (POST /v1/generate/<task>)")
    generation_max_batch: int = doc(8, "generation: requests decoded together at most (continuous batching: they join "
                                       "and leave the running decode between steps)")
    generation_batch_wait_ms: float = doc(10.0, "generation: when the model was idle, longest wait for a burst to arrive "
                                                "together")
    max_generated_tokens: int = doc(256, "a request's max_tokens above this is refused (413)")
    host: str = doc("127.0.0.1", "HTTP bind address (aisle serve)")
    port: int = doc(8000, "HTTP port (aisle serve)")

    def __post_init__(self):
        resolve_paths(self)
        # One request is never split across batches: the largest (64 inputs, or a search's rerank
        # candidates, up to 50) must fit in one.
        if self.max_batch_inputs < max(64, self.rerank_candidates):
            raise ValueError("max_batch_inputs must be >= 64 and >= rerank_candidates")
        if not 1 <= self.rerank_candidates <= 256:
            raise ValueError("rerank_candidates must be within 1..256")
        if self.max_adapters_per_replica < 1:
            raise ValueError("max_adapters_per_replica must be >= 1")
        if not 0.0 <= self.first_stage_lexical_weight <= 1.0:
            raise ValueError("first_stage_lexical_weight must be within 0..1")
        if min(self.rerank_words, self.score_cache_entries, self.first_stage_cache_entries, self.max_inflight,
               self.max_inflight_search) < 0 or self.retry_after_s < 1:
            raise ValueError("rerank_words, score_cache_entries, first_stage_cache_entries and max_inflight must be >= 0, "
                             "retry_after_s >= 1")
        if not 0 <= self.model_niceness <= 19:
            raise ValueError("model_niceness must be within 0..19 (a process may lower its priority, not raise it)")
        if not 0.0 <= self.online_refresh_s <= 1.0:
            raise ValueError("online_refresh_s must be within 0..1 (0: off)")
        if self.rerank_budget_ms < 0:
            raise ValueError("rerank_budget_ms must be >= 0 (0: no budget)")
        if not (self.rerank_budget_pace == 0 or self.rerank_budget_pace >= 1):
            raise ValueError("rerank_budget_pace must be 0 (rerank_budget_ms alone) or >= 1")
        if not 0.0 <= self.ensemble_offline_weight <= 1.0:
            raise ValueError("ensemble_offline_weight must be within 0..1")
        if self.use_gpu and self.int8:
            raise ValueError("int8 dynamic quantization is CPU-only: set use_gpu=false or int8=false")
        if self.int8 and self.cpu_bf16 == "always":
            raise ValueError("int8 and cpu_bf16=always are two ways to a cheaper CPU forward: choose one")
