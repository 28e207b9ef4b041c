"""The typed configs of the batch jobs: prepare, train, distill, evaluate, embed. Presets live in
configs/*.yaml; `core.config.load_config` builds these. Serving's config is core.serve_config, the
stream's core.stream_config, generation's core.gen_config.

Each field carries a one-line doc (`aisle config <job>` prints them). Validation that spans fields
sits in `__post_init__` and raises ValueError, which `load_config` turns into a ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import doc
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
    spelling: bool = doc(False, "correct each input's unknown words against the training split's vocabulary (one edit "
                                "away, or two words run together) before the model reads it, in training, "
                                "evaluation and serving alike; saved with the adapter (core/spelling.py)")

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
    probe_examples: int = doc(0, "linear probing first (LP-FT): the head starts as a logistic regression fitted on "
                                 "the frozen features of this many training examples (one forward pass each); 0: a "
                                 "random head")
    typo_rate: float = doc(0.0, "training batches only: each word of 3+ letters gets one random slip (a letter deleted, "
                                "swapped, doubled or replaced, or the space to the next word left out) with this "
                                "probability, fresh every epoch, so typed messages with typos read like the ones "
                                "learned (core/typos.py; with cache_lower_layers, later epochs replay the first "
                                "epoch's); 0: the text as written")
    ordinal_smoothing: float = doc(0.0, "tasks whose labels group finer ordered grades (sentiment: 1-2, 3 and 4-5 "
                                        "stars): an example whose grade borders another class (2 or 4 stars) trains "
                                        "toward that class by this share and toward its own by the rest; 0: hard labels")
    max_length: int | None = doc(None, "training batches truncate to this many tokens (shorter steps, more examples in "
                                       "the same time); validation, evaluation and serving read model.max_length; "
                                       "null: model.max_length")
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
        if not 0.0 <= self.typo_rate < 1.0:
            raise ValueError("train.typo_rate must be in [0, 1)")
        if not 0.0 <= self.ordinal_smoothing < 0.5:
            raise ValueError("train.ordinal_smoothing must be in [0, 0.5) (at 0.5 a 2-star review would be as neutral as negative)")
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise ValueError("train.max_length must be within 8..512 (or null: model.max_length)")
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
    reuse: bool = doc(False, "return the registered version trained from the same settings, prepared data and code "
                             "(its fingerprint, in the version's lineage) instead of training again")
    model: ModelConfig = doc(ModelConfig, "backbone and LoRA")
    train: OptimConfig = doc(OptimConfig, "optimisation")
    scaling: ScalingSettings = doc(ScalingSettings, "Ray Train workers")

    def __post_init__(self):
        resolve_paths(self)
        check_task(self.task)
        if self.train.max_length is not None and self.train.max_length > self.model.max_length:
            raise ValueError(f"train.max_length ({self.train.max_length}) must not exceed model.max_length "
                             f"({self.model.max_length}): the model would train on text it is never shown")

    @property
    def train_length(self) -> int:
        """Tokens per training input: train.max_length, or model.max_length when that is null."""
        return self.train.max_length or self.model.max_length


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
    reuse: bool = doc(False, "return the result an earlier reuse=true evaluation kept under cache_dir for the same "
                             "version, settings, data and code instead of evaluating again (and keep this one)")
    cache_dir: str = path_field("cache", "where evaluation results are kept for reuse (one JSON per fingerprint)")

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
    reuse: bool = doc(False, "return the registered version trained from the same settings, prepared data and code "
                             "(its fingerprint, in the version's lineage) instead of training again")
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
    reuse: bool = doc(False, "return the result an earlier reuse=true evaluation kept under cache_dir for the same "
                             "version, settings, data and code instead of evaluating again (and keep this one)")
    cache_dir: str = path_field("cache", "where evaluation results are kept for reuse (one JSON per fingerprint)")

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
