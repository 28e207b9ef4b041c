"""The typed config of the stream (`aisle stream`, configs/stream.yaml): when updates fire and how they
train, the quality gate, the click layer, the recommend task's updates, and the API served beside them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from core.click_config import ClickModelConfig
from core.config import doc
from core.screening import ScreenConfig
from core.serve_config import ServeConfig
from core.workspace import path_field, resolve_paths, root_field


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
    niceness: int = doc(19, "CPU niceness of the learning actors (UpdateCoordinator, RecUpdater: training and gate), "
                            "as serve.model_niceness is the reranker's: on shared cores the ingress, retriever and click "
                            "layer (Ray's workers run at 15) come first, and learning and reranking share the rest")
    seed: int = doc(0, "seed of sampling and shuffling (the update number is added)")

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.replay_examples < 0:
            raise ValueError("update.epochs, update.batch_size >= 1, update.lr > 0, update.replay_examples >= 0")
        if not 0 <= self.niceness <= 19:
            raise ValueError(f"update.niceness must be 0..19 (got {self.niceness})")
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
    min_mean_change: float | None = doc(0.0, "least mean nDCG@10 change over every query the gate judged (original "
                                             "set outside trend-touched queries, and fresh held-out lists): a version "
                                             "measured no better than CURRENT only churns the rankings nobody judged "
                                             "(null: off, the tolerance alone decides)")

    def __post_init__(self):
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError("gate.trim_fraction must be within 0 (a plain mean) and 0.5 (exclusive)")
        if self.min_mean_change is not None and not -1.0 <= self.min_mean_change <= 1.0:
            raise ValueError("gate.min_mean_change must be within -1 and 1 (an nDCG@10 change), or null (off)")


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
    state_resources: dict[str, float] = doc({}, "custom Ray resources of the actors that keep the stream's state on "
                                                "disk (FeedbackLog, ClickLayer, UpdateCoordinator, RecUpdater): declare "
                                                "them on the node whose disk holds log_dir, updates_dir and the click state "
                                                "(`ray start --resources='{\"aisle_stream_disk\": 1}'`); {}: Ray's "
                                                "default placement (on one machine, that machine)")
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
