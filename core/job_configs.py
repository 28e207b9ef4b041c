"""The typed config of every job. Presets live in configs/*.yaml; `core.config.load_config` builds these.

Each field carries a one-line doc (`aisle config <job>` prints them). Validation that spans fields
sits in `__post_init__` and raises ValueError, which `load_config` turns into a ConfigError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from core.click_config import ClickModelConfig
from core.config import doc
from core.screening import ScreenConfig
from core.workspace import path_field, resolve_paths, root_field

TaskName = str  # a built-in task (core.tasks.TASKS) or one declared in configs/tasks.yaml (core.declared_tasks)
PrepareTask = str  # a task of a table or the catalog, or "recommend" (an interaction log)


def check_task(name: str, key: str = "task", extra: tuple[str, ...] = ()) -> None:
    """A ValueError naming `key` unless `name` is a built-in or declared task (`core.tasks.get_task`)
    or one of `extra`."""
    from core.tasks import NoSuchTaskError, get_task

    if name in extra:
        return
    try:
        get_task(name)
    except NoSuchTaskError as e:
        raise ValueError(f"{key}: {e}") from None


@dataclass
class SplitConfig:
    val_fraction: float = doc(0.1, "share of groups (products, queries) in the validation split")
    test_fraction: float = doc(0.1, "share of groups in the held-back test split")
    seed: int = doc(0, "seed of the group hash that assigns splits")

    def __post_init__(self):
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("split fractions must be in [0, 1) and sum below 1")


@dataclass
class CatalogConfig:
    seed: int = doc(0, "seed of the generated catalog, queries and judgements")
    n_products: int = doc(3000, "products in the generated catalog")
    n_queries: int = doc(600, "shopper queries with graded judgements")
    candidates_per_query: int = doc(40, "judged products per query (the pool a reranker sorts)")


@dataclass
class LogColumnsConfig:
    user: str = doc("CustomerID", "column of the user (customer) id")
    item: str = doc("StockCode", "column of the item (product) id")
    timestamp: str = doc("InvoiceDate", "column of the event time (any format pandas parses)")
    basket: str | None = doc("InvoiceNo", "optional column of the basket (invoice, order, session) id")
    quantity: str | None = doc("Quantity", "optional column of the quantity (<= 0: a return, dropped)")
    event: str | None = doc(None, "optional column of the event type (see event_types)")


@dataclass
class ItemColumnsConfig:
    id: str = doc("StockCode", "column of the item id in the item table (or in the log)")
    text: list[str] = doc(["Description"], "text columns that describe an item, joined in this order")


@dataclass
class InteractionSourceConfig:
    log: str = doc("data/retail/online_retail.parquet", "interaction log (CSV, Parquet or JSONL): one row per purchase or click")
    items: str | None = doc(None, "item table (CSV, Parquet or JSONL); None: each item's most frequent text in the log")
    columns: LogColumnsConfig = doc(LogColumnsConfig, "which log column is which")
    item_columns: ItemColumnsConfig = doc(ItemColumnsConfig, "which item-table (or log) columns give the item id and text")
    cancel_prefix: str | None = doc("C", "a basket id starting with this is a cancellation (dropped)")
    non_product_items: list[str] = doc(["POST", "DOT", "M", "D", "C2", "S", "BANK CHARGES", "AMAZONFEE", "CRUK",
                                        "PADS", "B", "DCGS*", "gift_0001_*"],
                                       "item ids that are not products (glob patterns, any case): postage, fees, adjustments")
    event_types: list[str] = doc([], "event types kept when the log has an event column (empty keeps all)")
    split: Literal["leave_last_out", "time"] = doc("leave_last_out", "leave-last-out per user, or a global time cut")
    cut: str | None = doc(None, "with split=time: interactions from this time on are the test targets")
    min_interactions: int = doc(3, "leave-last-out: users with fewer interactions only train")

    def __post_init__(self):
        if self.split == "time" and not self.cut:
            raise ValueError("sources.recommend.split=time needs sources.recommend.cut (a timestamp)")


@dataclass
class SourcesConfig:
    sentiment: str = doc("data/reviews/womens_clothing_reviews.parquet", "reviews file (CSV, Parquet or JSONL)")
    intent: str = doc("data/intent/bitext_customer_support.csv", "support messages file")
    catalog_dir: str = path_field("catalog", "generated catalog (products, queries, judgements); made if missing")
    events: str | None = doc(None, "optional click/purchase log (CSV, Parquet or JSONL) to clean and pseudonymise")
    catalog: CatalogConfig = doc(CatalogConfig, "catalog generator settings")
    recommend: InteractionSourceConfig = doc(InteractionSourceConfig, "interaction log for the recommend task")
    columns: dict[str, dict[str, str]] = doc({}, "your file's column names for a built-in task's: {task: {its column: "
                                                 "yours}}, e.g. {sentiment: {Review Text: body, Rating: stars}} (a "
                                                 "task of your own: declare it in configs/tasks.yaml)")


@dataclass
class PrepareConfig:
    workspace: str | None = root_field()
    tasks: list[PrepareTask] = doc(["sentiment", "intent", "relevance"], "tasks to prepare")
    output_dir: str = path_field("prepared", "where <task>/{train,val,test}.parquet and the report go")
    salt: str = doc("aisle-dev-salt", "salt for user-id pseudonyms; set your own secret in production")
    max_rows: int | None = doc(None, "cap on rows read per source (for quick runs); None reads all")
    num_cpus_per_task: float = doc(1.0, "CPUs per Ray Data cleaning task: one task per CPU at a time measured fastest "
                                        "(prepare_bench on 2 cores: 1.49 at 1.0, 1.27 at 0.5); lower it to share a busy machine")
    rows_per_block: int = doc(100_000, "rows per block after reading: one file becomes blocks cleaned in parallel "
                                       "(fewer, larger blocks cost less per block; a block is cleaned in memory)")
    split: SplitConfig = doc(SplitConfig, "how examples are split without leakage")
    sources: SourcesConfig = doc(SourcesConfig, "input files")

    def __post_init__(self):
        resolve_paths(self)
        from core.gen_tasks import GEN_TASKS

        for name in self.tasks:
            check_task(name, "tasks", extra=("recommend", *GEN_TASKS))


@dataclass
class ModelConfig:
    backbone: str = doc("minilm", "'minilm' (packaged all-MiniLM-L6-v2), 'tiny-random-bert' (tests) or a local HF dir")
    max_length: int = doc(128, "tokens per input; longer inputs are truncated")
    lora_r: int = doc(8, "LoRA rank")
    lora_alpha: int = doc(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = doc(0.1, "dropout on the LoRA path")
    lora_targets: list[str] = doc(["query", "value"], "attention/MLP module names that get LoRA")
    layers: int | None = doc(None, "a student: run only the backbone's bottom layers (null: all)")

    def __post_init__(self):
        if self.max_length < 8 or self.max_length > 512:
            raise ValueError("model.max_length must be within 8..512")
        if self.lora_r < 1:
            raise ValueError("model.lora_r must be >= 1")
        if self.layers is not None and self.layers < 1:
            raise ValueError("model.layers must be >= 1 (or null: every layer)")


@dataclass
class OptimConfig:
    epochs: int = doc(2, "passes over the training split")
    batch_size: int = doc(32, "examples per step (per worker)")
    lr: float = doc(5e-4, "peak learning rate (LoRA and head)")
    weight_decay: float = doc(0.01, "AdamW weight decay")
    warmup_fraction: float = doc(0.06, "share of steps with linear warm-up")
    max_steps_per_epoch: int | None = doc(None, "stop an epoch early after this many steps (quick runs)")
    max_train_examples: int | None = doc(None, "sample at most this many training examples (seeded)")
    max_eval_examples: int | None = doc(None, "evaluate on at most this many validation examples (seeded)")
    top_layers: int | None = doc(None, "train only the LoRA of the top N encoder layers and the head (backward stops there); None: all")
    cache_lower_layers: bool = doc(False, "with top_layers: compute the frozen lower layers' states once (first epoch) and replay them")
    tune_class_offsets: bool = doc(True, "macro-F1 tasks: per-class decision offsets chosen on validation, folded into the head's bias")
    cpu_bf16: Literal["auto", "always", "never"] = doc(
        "auto", "CPU training forwards under bf16 autocast (weights, gradients and optimizer state stay fp32; "
                "validation and evaluation run fp32): auto = where the CPU has bf16 matrix units (AMX, AVX512-BF16)")
    seed: int = doc(0, "seed for initialisation, sampling and shuffling")

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("train.epochs and train.batch_size must be >= 1 and train.lr > 0")
        if self.top_layers is not None and self.top_layers < 1:
            raise ValueError("train.top_layers must be >= 1 (or null: all layers)")
        if self.cache_lower_layers and self.top_layers is None:
            raise ValueError("train.cache_lower_layers needs train.top_layers (the layers below them are what is cached)")


@dataclass
class ScalingSettings:
    num_workers: int = doc(1, "Ray Train workers (data-parallel)")
    cpus_per_worker: float = doc(1.0, "CPUs each worker reserves; keep below the cluster's total")
    threads_per_worker: int = doc(2, "torch intra-op threads in each worker")
    use_gpu: bool = doc(False, "train on GPU workers (one GPU each): bf16 autocast, pinned batch copies")
    worker_resources: dict[str, float] = doc({}, "custom Ray resources each worker asks for besides CPUs and GPUs "
                                             "(e.g. {trainer: 1}: only on nodes that declare it, one per node)")
    max_failures: int = doc(0, "worker failures (a lost node) a run recovers from, each from its latest "
                               "checkpoint (Ray Train's FailureConfig); -1: no limit")


@dataclass
class FinetuneConfig:
    workspace: str | None = root_field()
    task: TaskName = doc("sentiment", "which task to train")
    data_dir: str = path_field("prepared", "prepared data (output of data_pipelines.prepare)")
    registry: str = path_field("registry", "adapter registry root")
    storage_path: str = path_field("runs", "Ray Train run storage (checkpoints per epoch)")
    run_name: str | None = doc(None, "Ray Train run name; default <task>-<timestamp>")
    resume_from: str | None = doc(None, "checkpoint directory to resume from (continues its epoch count)")
    promote: bool = doc(True, "make the new version CURRENT when the task has none yet")
    model: ModelConfig = doc(ModelConfig, "backbone and LoRA")
    train: OptimConfig = doc(OptimConfig, "optimisation")
    scaling: ScalingSettings = doc(ScalingSettings, "Ray Train workers")

    def __post_init__(self):
        resolve_paths(self)
        check_task(self.task)


@dataclass
class StudentModelConfig(ModelConfig):
    """A student's model: fewer layers, LoRA on every attention projection of the ones it keeps."""
    max_length: int | None = doc(None, "tokens per (query, product) pair (null: the teacher's)")
    lora_r: int = doc(16, "LoRA rank")
    lora_alpha: int = doc(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_targets: list[str] = doc(["query", "key", "value"], "attention module names that get LoRA")
    layers: int | None = doc(3, "bottom encoder layers the student runs (MiniLM has 6)")

    def __post_init__(self):
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise ValueError("model.max_length must be within 8..512 (or null: the teacher's)")
        if self.lora_r < 1 or (self.layers is not None and self.layers < 1):
            raise ValueError("model.lora_r and model.layers must be >= 1")


@dataclass
class DistillConfig:
    workspace: str | None = root_field()
    teacher: str | None = doc(None, "relevance version to distil (default: its CURRENT)")
    data_dir: str = path_field("prepared", "prepared data: relevance's splits; the student's are written beside them")
    catalog_dir: str = path_field("catalog", "the search catalog (product texts)")
    embeddings: str = path_field("embeddings", "catalog embeddings (`aisle embed`): the first stage")
    registry: str = path_field("registry", "adapter registry root")
    storage_path: str = path_field("runs", "Ray Train run storage (checkpoints per epoch)")
    candidates: int = doc(30, "first-stage candidates per training query the teacher scores (what search reranks)")
    lexical_weight: float = doc(0.3, "the first stage's BM25 weight (ServeConfig.first_stage_lexical_weight)")
    max_judged: int | None = doc(6000, "judged training pairs added (seeded sample; null: all)")
    batch_size: int = doc(64, "pairs per teacher forward")
    actors: int = doc(1, "most teacher actors scoring pairs (Ray Data)")
    cpus_per_actor: float = doc(1.0, "CPUs each teacher actor reserves")
    threads_per_actor: int = doc(2, "torch threads in each teacher actor")
    promote: bool = doc(True, "make the student CURRENT of relevance_student")
    model: StudentModelConfig = doc(StudentModelConfig, "the student's depth and LoRA")
    train: OptimConfig = doc(OptimConfig, "optimisation")
    scaling: ScalingSettings = doc(ScalingSettings, "Ray Train workers")

    def __post_init__(self):
        resolve_paths(self)
        if not 1 <= self.candidates <= 256 or self.batch_size < 1 or self.actors < 1 or self.threads_per_actor < 1:
            raise ValueError("candidates must be within 1..256; batch_size, actors and threads_per_actor >= 1")
        if not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError("lexical_weight must be within 0..1")
        if self.cpus_per_actor <= 0:
            raise ValueError("cpus_per_actor must be > 0")


@dataclass
class EvaluateConfig:
    workspace: str | None = root_field()
    task: TaskName = doc("sentiment", "which task to evaluate")
    version: str | None = doc(None, "adapter version (default: CURRENT)")
    split: Literal["val", "test"] = doc("test", "which split")
    data_dir: str = path_field("prepared", "prepared data")
    registry: str = path_field("registry", "adapter registry root")
    baselines: bool = doc(True, "compute the task's baselines in the same run")
    first_stage_lexical_weight: float = doc(0.3, "relevance's first_stage baseline: search's first stage (1 - w) x "
                                                 "cosine + w x BM25, as serve.first_stage_lexical_weight")
    max_examples: int | None = doc(None, "evaluate on at most this many examples (seeded sample; groups kept whole)")
    batch_size: int = doc(64, "inference batch size")
    output: str | None = doc(None, "write the result table as JSON here")

    def __post_init__(self):
        resolve_paths(self)
        check_task(self.task)


@dataclass
class RecModelConfig:
    backbone: str = doc("minilm", "'minilm' (shipped) or a local Hugging Face model directory")
    max_length: int = doc(24, "item text tokens (product names are short)")
    dim: int = doc(256, "width of the user and item vectors")
    history: int = doc(20, "recent items that make a shopper's state")
    top_layers: int = doc(2, "encoder layers whose LoRA trains; the frozen ones below are computed once per item")
    lora_r: int = doc(8, "LoRA rank")
    lora_alpha: int = doc(16, "LoRA alpha")
    lora_targets: list[str] = doc(["query", "value"], "modules LoRA adapts")


@dataclass
class RecOptimConfig:
    epochs: int = doc(3, "passes over the training interactions")
    batch_size: int = doc(512, "examples per step; the batch's targets are each other's negatives")
    lr: float = doc(3e-3, "learning rate of the towers (id embeddings, projections, user pooling)")
    text_lr: float = doc(5e-4, "learning rate of the LoRA weights")
    text_every: int = doc(4, "the text tower trains on every n-th batch; the others use the cached text table")
    refresh_every: int = doc(100, "steps between refreshes of the item-text table from the current adapter")
    max_train_examples: int | None = doc(None, "cap on training examples per epoch (seeded sample); None uses all")
    max_eval_users: int | None = doc(None, "validate on at most this many users (seeded sample)")
    seed: int = doc(0, "seed of initialisation and example order")


@dataclass
class RecommendTrainConfig:
    workspace: str | None = root_field()
    data_dir: str = path_field("prepared", "prepared data (`aisle prepare tasks=[recommend]`)")
    registry: str = path_field("registry", "adapter registry root")
    storage_path: str = path_field("runs", "Ray Train run storage (a checkpoint per epoch)")
    promote: bool = doc(True, "make the new version CURRENT when the task has none yet")
    model: RecModelConfig = doc(RecModelConfig, "backbone, LoRA and towers")
    train: RecOptimConfig = doc(RecOptimConfig, "optimisation")
    scaling: ScalingSettings = doc(ScalingSettings, "Ray Train workers")

    def __post_init__(self):
        resolve_paths(self)


@dataclass
class RecommendEvalConfig:
    workspace: str | None = root_field()
    data_dir: str = path_field("prepared", "prepared data")
    registry: str = path_field("registry", "adapter registry root")
    version: str | None = doc(None, "recommend adapter version (default: CURRENT)")
    split: Literal["val", "test"] = doc("test", "which targets, when no later log is given")
    later_log: str | None = doc(None, "a later log of the same shop (same columns as sources.recommend): "
                                      "each returning user's purchases after their history are the targets")
    source: InteractionSourceConfig = doc(InteractionSourceConfig, "columns and cleaning rules of later_log")
    salt: str = doc("aisle-dev-salt", "the prepare salt (user ids of later_log are pseudonymised with it)")
    cold_max: int = doc(5, "an item with fewer training interactions is cold-start")
    baselines: bool = doc(True, "compute popularity, repeat, item-knn and zero-shot in the same run")
    max_users: int | None = doc(None, "evaluate at most this many targets (seeded sample)")
    output: str | None = doc(None, "write the result as JSON here")

    def __post_init__(self):
        resolve_paths(self)


@dataclass
class EmbedCatalogConfig:
    workspace: str | None = root_field()
    catalog_dir: str = path_field("catalog", "catalog directory holding products.parquet (from `aisle prepare` or `aisle catalog`)")
    output: str = path_field("embeddings", "output directory: Parquet part files plus _meta.json, replaced atomically")
    backbone: str = doc("minilm", "'minilm' (packaged all-MiniLM-L6-v2), 'tiny-random-bert' (tests) or a local HF dir")
    max_length: int = doc(128, "tokens per product text; longer texts are truncated")
    batch_size: int = doc(64, "product texts per forward pass")
    actors: int = doc(1, "most embedding actors in the pool (each loads the backbone once)")
    cpus_per_actor: float = doc(1.0, "CPUs each actor reserves (fractional is fine); never the cluster's total")
    threads_per_actor: int = doc(2, "torch intra-op threads in each actor")

    def __post_init__(self):
        resolve_paths(self)
        if self.max_length < 8 or self.max_length > 512:
            raise ValueError("max_length must be within 8..512")
        if self.batch_size < 1 or self.actors < 1 or self.threads_per_actor < 1:
            raise ValueError("batch_size, actors and threads_per_actor must be >= 1")
        if self.cpus_per_actor <= 0:
            raise ValueError("cpus_per_actor must be > 0")


@dataclass
class RecItemVectorsConfig:
    workspace: str | None = root_field()
    registry: str = path_field("registry", "adapter registry root")
    version: str | None = doc(None, "the recommend version whose item vectors to compute (None: CURRENT)")
    data_dir: str = path_field("prepared", "prepared data (`aisle prepare tasks=[recommend]`): the item table")
    catalog_dir: str | None = path_field("catalog", "the search catalog, whose products are recommendable too (null: none)")
    output: str = path_field("recommend_vectors", "output directory: Parquet part files plus _meta.json, replaced atomically")
    batch_size: int = doc(256, "items per forward pass")
    actors: int = doc(1, "most actors in the pool (each loads the recommend version once)")
    cpus_per_actor: float = doc(1.0, "CPUs each actor reserves (fractional is fine)")
    threads_per_actor: int = doc(2, "torch intra-op threads in each actor")

    def __post_init__(self):
        resolve_paths(self)
        if self.batch_size < 1 or self.actors < 1 or self.threads_per_actor < 1 or self.cpus_per_actor <= 0:
            raise ValueError("batch_size, actors and threads_per_actor must be >= 1, cpus_per_actor > 0")


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
    max_inflight_search: int = doc(8, "searches in flight before the ingress answers 503 with Retry-After (0: no limit)")
    rerank_budget_ms: float = doc(120.0, "a search waits this long (or twice the reranker's best pace) for its scores, "
                                         "then answers in the first stage's order (`reranked: 0`) while the scoring goes "
                                         "on to fill the cache (0, or no score cache: wait)")
    max_inflight: int = doc(0, "the same for each other model route (predict, recommend)")
    retry_after_s: int = doc(1, "the Retry-After seconds of a 503")
    ensemble_offline_weight: float = doc(0.0, "search scores = w * offline adapter + (1 - w) * CURRENT (0: CURRENT only)")
    online_refresh_s: float = doc(0.25, "search: how often the ingress fetches the click layer's newest snapshot, in the "
                                        "background (0: the online layer is never applied)")
    ingest_token: str | None = doc(None, "bearer token for POST /v1/events (env AISLE_INGEST_TOKEN wins; unset: ingest off)")
    admin_token: str | None = doc(None, "bearer token for promote/rollback (env AISLE_ADMIN_TOKEN wins; unset: admin off)")
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
        if min(self.rerank_words, self.score_cache_entries, self.max_inflight, self.max_inflight_search) < 0 or self.retry_after_s < 1:
            raise ValueError("rerank_words, score_cache_entries and max_inflight must be >= 0, retry_after_s >= 1")
        if not 0.0 <= self.online_refresh_s <= 1.0:
            raise ValueError("online_refresh_s must be within 0..1 (0: off)")
        if self.rerank_budget_ms < 0:
            raise ValueError("rerank_budget_ms must be >= 0 (0: no budget)")
        if not 0.0 <= self.ensemble_offline_weight <= 1.0:
            raise ValueError("ensemble_offline_weight must be within 0..1")
        if self.use_gpu and self.int8:
            raise ValueError("int8 dynamic quantization is CPU-only: set use_gpu=false or int8=false")
        if self.int8 and self.cpu_bf16 == "always":
            raise ValueError("int8 and cpu_bf16=always are two ways to a cheaper CPU forward: choose one")


@dataclass
class UpdatePolicy:
    min_examples: int = doc(96, "labelled examples (clicks, purchases, skip-above negatives) that fire an update")
    max_wait_s: float = doc(300.0, "an update also fires this long after the oldest pending event ...")
    min_examples_on_timeout: int = doc(16, "... if at least this many labelled examples are pending")
    cooldown_s: float = doc(10.0, "least time from the end of one update to the start of the next")
    poll_s: float = doc(0.5, "how often the coordinator reads new events from the log")
    watch_s: float = doc(90.0, "an event joins a consolidation window only once it is this old (ingest time): the "
                               "watch in which the click layer's safeguards freeze an attack and quarantine its "
                               "accounts, so a window holding it is held; the fast path serves events at once (0: off)")
    surge_factor: float = doc(3.0, "a window whose event rate is this many times the usual is not auto-promoted (0: off)")
    surge_peak_s: float = doc(20.0, "... nor one whose busiest stretch this long is (a flood in the window's tail; 0: average only)")
    surge_burst_s: float = doc(2.0, "... nor one whose busiest stretch this short is (a flood of a few seconds, which "
                                    "the longer stretch dilutes; 0: off) ...")
    surge_burst_min_events: int = doc(100, "... when that stretch holds at least this many events (a few events close "
                                           "together in a quiet stream are no flood)")
    max_flagged_share: float = doc(0.2, "a window in which the anomaly screen flagged more than this share of the events "
                                        "(and at least min_flagged events) is under attack: not auto-promoted, since "
                                        "the attack's unflagged events are in its rest (1: off)")
    min_flagged: int = doc(20, "... flagged events before that share counts (a few stray flags hold nothing)")

    def __post_init__(self):
        if self.min_examples < 1 or self.min_examples_on_timeout < 1:
            raise ValueError("policy.min_examples and policy.min_examples_on_timeout must be >= 1")
        if self.max_wait_s <= 0 or self.cooldown_s < 0 or self.poll_s <= 0 or self.watch_s < 0:
            raise ValueError("policy.max_wait_s and policy.poll_s must be > 0, policy.cooldown_s and watch_s >= 0")
        if self.surge_peak_s < 0 or self.surge_burst_s < 0 or self.surge_burst_min_events < 1:
            raise ValueError("policy.surge_peak_s and policy.surge_burst_s must be >= 0, policy.surge_burst_min_events >= 1")
        if not 0 < self.max_flagged_share <= 1 or self.min_flagged < 1:
            raise ValueError("policy.max_flagged_share must be in (0, 1] and policy.min_flagged >= 1")


@dataclass
class UpdateTraining:
    epochs: int = doc(2, "passes over the update's examples (fresh feedback + replay sample)")
    lr: float = doc(5e-4, "peak learning rate of the incremental LoRA update")
    batch_size: int = doc(32, "examples per step")
    replay_examples: int = doc(128, "offline training examples mixed in against forgetting (0: none)")
    max_fresh_examples: int = doc(256, "newest fresh examples one update trains on (bounds its time when events pile up)")
    holdout_fraction: float = doc(0.2, "share of fresh result lists (by session) held out for the gate")
    eta: float = doc(1.0, "position-bias exponent: P(examined at position p) = (1 / (p + 1)) ** eta")
    top_layers: int | None = doc(None, "train only the LoRA of the top N encoder layers and the head (None: all): a shorter backward pass")
    max_weight: float = doc(2.0, "cap on a click's inverse-propensity weight (higher caps cost original-set nDCG)")
    targets: Literal["distilled", "clicks"] = doc("distilled", "what an update learns from the window: distilled (each "
                                                  "impressed pair toward the score the online click layer serves it; "
                                                  "needs the warm trainer and a running click layer, else clicks) or "
                                                  "clicks (click labels with inverse-propensity weights)")
    trainer: Literal["warm", "ray_train"] = doc("warm", "warm: train in the long-lived UpdateCoordinator actor, which keeps "
                                                        "the backbone (no job start-up); ray_train: one Ray Train job per update")
    cpus_per_worker: float = doc(0.25, "CPUs the Ray Train worker reserves (fractional: serving holds the rest)")
    threads_per_worker: int = doc(2, "torch threads of the update's training (warm trainer or Ray Train worker)")
    use_gpu: bool = doc(False, "train updates on a GPU worker (bf16 autocast, pinned batch copies)")
    seed: int = doc(0, "seed of sampling and shuffling (the update number is added)")

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.replay_examples < 0:
            raise ValueError("update.epochs, update.batch_size >= 1, update.lr > 0, update.replay_examples >= 0")
        if self.top_layers is not None and self.top_layers < 1:
            raise ValueError("update.top_layers must be >= 1 (or null: all layers)")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError("update.holdout_fraction must be within (0, 1)")


@dataclass
class GateConfig:
    original_queries: int = doc(32, "queries of the offline validation split the gate scores (whole judged pools)")
    tolerance: float = doc(0.02, "largest nDCG@10 drop a candidate may show (vs CURRENT on both sets, vs offline on the original)")
    min_holdout_lists: int = doc(3, "fewer held-out fresh result lists than this: the original set alone decides")
    trim_fraction: float = doc(0.0, "original-set checks: share of queries left out at each end of the per-query "
                                     "nDCG@10 changes (trimmed mean): a trend moves a few queries far, forgetting many a little")

    def __post_init__(self):
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError("gate.trim_fraction must be within 0 (a plain mean) and 0.5 (exclusive)")


@dataclass
class ClickLayerConfig:
    state_dir: str | None = doc(None, "the online click layer's checkpoint and audit lines (None: `click/` beside log_dir)")
    publish_s: float = doc(0.25, "the layer reads the log and publishes a snapshot this often (when idle)")
    checkpoint_s: float = doc(5.0, "checkpoint interval (a restart replays the log from the checkpoint)")

    def __post_init__(self):
        if not (0 < self.publish_s <= 1.0 and self.checkpoint_s > 0):
            raise ValueError("click_layer.publish_s must be in (0, 1] (a snapshot at least every second), "
                             "checkpoint_s > 0")


@dataclass
class RecStreamConfig:
    enabled: bool = doc(True, "the recommend adapter learns from the stream too (when it has a CURRENT version "
                              "and prepared data); its updates are gated like relevance's")
    min_examples: int = doc(64, "new next-item examples (from shoppers outside the holdout) that fire an update")
    max_wait_s: float = doc(120.0, "an update also fires this long after the window's first example ...")
    min_examples_on_timeout: int = doc(16, "... if at least this many examples are pending")
    cooldown_s: float = doc(10.0, "least time from the end of one update to the start of the next")
    poll_s: float = doc(0.5, "how often the log is read")
    holdout_share: float = doc(0.25, "share of shoppers (by salted id hash) whose examples never train: the gate's fresh set")
    epochs: int = doc(1, "passes over the update's examples (recent + replay; 2 measured worse on both sets)")
    batch_size: int = doc(64, "examples per step; the batch's targets are each other's negatives")
    lr: float = doc(1e-4, "learning rate of the towers (a trained model: 1e-3 undid more than it learnt, measured)")
    text_lr: float = doc(5e-5, "learning rate of the LoRA weights")
    replay_examples: int = doc(128, "offline next-item examples mixed into each update against forgetting (0: none)")
    replay_pool: int = doc(5000, "offline examples sampled once at start, from which each update's replay is drawn")
    train_buffer: int = doc(512, "newest training examples kept across updates; each update trains on them all")
    fresh_buffer: int = doc(256, "newest held-out examples kept across updates; the gate judges on them all")
    tolerance: float = doc(0.01, "largest NDCG@10 drop a candidate may show against CURRENT (fresh and offline sets)")
    min_holdout: int = doc(16, "held-out fresh examples the gate needs before it promotes anything")
    judge_unlisted_only: bool = doc(True, "the gate scores held-out next items the shopper did not take from a "
                                          "recommendation list (a position and no query): a click on CURRENT's own list "
                                          "favours CURRENT")
    offline_users: int = doc(300, "offline validation users the gate scores (seeded sample)")
    threads: int = doc(1, "torch threads of the updater actor")
    audit_log: str | None = doc(None, "one JSON line per recommend update (None: recommend_audit.jsonl beside audit_log)")

    def __post_init__(self):
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError("recommend.holdout_share must be in [0, 1)")
        if self.min_examples < 1 or self.batch_size < 2 or self.epochs < 1:
            raise ValueError("recommend.min_examples >= 1, batch_size >= 2 and epochs >= 1")


@dataclass
class StreamConfig:
    workspace: str | None = root_field()
    task: Literal["relevance"] = doc("relevance", "the task the stream updates (clicks and purchases judge search)")
    log_dir: str = path_field("stream_log", "FeedbackLog write-ahead log and consumer offsets")
    updates_dir: str = path_field("stream_updates", "per-update training data and Ray Train runs")
    audit_log: str = path_field("stream_audit", "one JSON line per update decision")
    registry: str = path_field("registry", "adapter registry root (CURRENT is read and moved here)")
    data_dir: str = path_field("prepared", "prepared offline data: replay sample and the gate's original set")
    catalog_dir: str = path_field("catalog", "catalog (product texts of clicked products)")
    salt: str = doc("aisle-dev-salt", "salt of user and session pseudonyms; set your own secret in production")
    segment_bytes: int = doc(8 << 20, "write-ahead log segment size")
    archive_uri: str | None = doc(None, "copy each sealed log segment here (s3://bucket/prefix or a path); None: local only")
    policy: UpdatePolicy = doc(UpdatePolicy, "when an update fires")
    update: UpdateTraining = doc(UpdateTraining, "how an update trains")
    gate: GateConfig = doc(GateConfig, "when a candidate is promoted")
    screen: ScreenConfig = doc(ScreenConfig, "anomaly screening (flagged events never train)")
    serve: ServeConfig = doc(ServeConfig, "the HTTP API started with the stream (`aisle stream`)")
    click_model: ClickModelConfig = doc(ClickModelConfig, "the online click model (the fast path: rankings move in seconds)")
    click_layer: ClickLayerConfig = doc(ClickLayerConfig, "where and how often the click layer runs")
    recommend: RecStreamConfig = doc(RecStreamConfig, "the recommend task's stream updates (next clicks and purchases)")

    @property
    def recommend_audit_log(self) -> str:
        return self.recommend.audit_log or os.path.join(os.path.dirname(os.path.abspath(self.audit_log)),
                                                        "recommend_audit.jsonl")

    @property
    def click_state_dir(self) -> str:
        return self.click_layer.state_dir or os.path.join(os.path.dirname(os.path.abspath(self.log_dir)), "click")

    def __post_init__(self):
        resolve_paths(self)
