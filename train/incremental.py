"""The incremental update: stream feedback -> a candidate adapter -> the quality gate -> promote or reject.

One update, as the UpdateCoordinator runs it (`run_update`):
1. the window's log records become labelled examples (`core.feedback`: purchases and clicks are
   positives with inverse-propensity weights, impressions skipped above a click are negatives,
   flagged events are left out); a share of the result lists, by session, is held out;
2. the rest, resampled by weight, is mixed with a replay sample of the offline training split
   (against forgetting) and trained with `train.finetune.run` (Ray Train, one small worker)
   starting from the CURRENT adapter: the candidate is registered, not promoted;
3. the gate scores candidate and CURRENT with nDCG@10 on (a) the held-out fresh lists and (b) a
   fixed sample of whole queries from the offline validation split (the original task), and
   promotes only if neither drops by more than `gate.tolerance`, if the mean change over all the
   queries it judged is at least `gate.min_mean_change` (no better: no promotion), and only if
   CURRENT is still the version the candidate was trained from (compare-and-swap in the registry);
4. the decision and its numbers are returned for the audit log.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core import storage
from core.adapter_bank import AdapterBank, Prefix
from core.config import from_dict
from core.distill import distilled_examples
from core.errors import AisleError
from core.feedback import examples_from_events, resample_by_weight, split_holdout
from core.job_configs import FinetuneConfig
from core.metrics import grouped_values, ndcg_at_k
from core.registry import ADAPTER_DIR, AdapterRegistry, RegistryError, VersionInfo, offline_anchor
from core.stream_config import StreamConfig
from core.tasks import expected_grade, get_task
from core.training import sample_examples
from train import finetune

TRAIN_COLUMNS = ("example_id", "query_id", "product_id", "query", "product_text", "label", "split_group")


@dataclass
class UpdateOutcome:
    update_id: str
    decision: str  # promoted | rejected | skipped | failed
    reason: str
    parent: str | None
    candidate: str | None = None
    examples: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_record(self) -> dict:
        return dataclasses.asdict(self)


class Gate:
    """Scores adapter versions with nDCG@10 on held-out lists; one backbone, adapters loaded per call.

    The original set (whole queries of the offline validation split) is fixed for the gate's life,
    so a version's score on it is computed once and cached. With `update.top_layers`, updates leave
    the layers below the top ones as the offline adapter made them, so the hidden states entering the
    first trained layer are the same for parent and candidate: the gate keeps them per input set
    (`AdapterBank.encode_prefix`) and runs only the top layers for the next version
    (a third of the forward work for the top 2 of 6 layers).
    """

    def __init__(self, cfg: StreamConfig, backbone: str, threads: int | None = None):
        self.task = get_task(cfg.task)
        self.tolerance, self.min_lists = cfg.gate.tolerance, cfg.gate.min_holdout_lists
        self.bank = AdapterBank(backbone, threads=threads)
        top = cfg.update.top_layers
        self.start = None  # the first trained layer, when the gate can reuse the states entering it
        if top and top < self.bank.num_layers() and self.bank.scores_from_prefix():
            self.start = self.bank.num_layers() - top
        val = storage.read_parquet(storage.join(cfg.data_dir, cfg.task, "val"))
        n_rows = cfg.gate.original_queries * int(val.groupby("query_id").size().median())
        self.original = sample_examples(val, "query_id", n_rows, seed=cfg.update.seed)
        self._original_scores: dict[str, dict[str, float]] = {}  # model id -> nDCG@10 per query
        self.trim, self.min_change = cfg.gate.trim_fraction, cfg.gate.min_mean_change
        # one prefix per input set: "original", and "holdout" (the current update's lists)
        self._prefixes: dict[str, tuple[tuple[str, str], Prefix]] = {}
        self.prefix_hits = 0

    def ndcg(self, version: VersionInfo, frame: pd.DataFrame, slot: str | None = None, ident: str = "") -> float:
        """nDCG@10 of `version` on `frame`. `slot` and `ident` name the input set, so that the
        hidden states below the trained layers can be reused for the next version scored on it."""
        return _mean(self.ndcg_by_query(version, frame, slot, ident))

    def ndcg_by_query(self, version: VersionInfo, frame: pd.DataFrame, slot: str | None = None,
                      ident: str = "") -> dict[str, float]:
        """nDCG@10 of `version` per query of `frame` (queries with no relevant product left out)."""
        name = version.model_id
        meta = self.bank.load(name, version.local_dir() / ADAPTER_DIR)
        try:
            probs = self._probs(name, self.task.to_inputs(frame), slot, ident)
        finally:
            self.bank.unload(name)
        labels = list(meta.labels)
        grades = np.array([labels.index(v) for v in frame["label"].astype(str)], dtype=float)
        return grouped_values(ndcg_at_k, frame["query_id"].astype(str).tolist(), expected_grade(probs), grades, k=10)

    def _probs(self, name: str, inputs: list, slot: str | None, ident: str):
        if self.start is None or slot is None:
            return self.bank.predict_proba(name, inputs)
        key = (ident, self.bank.lower_key(name, self.start))
        cached = self._prefixes.get(slot)
        if cached is not None and cached[0] == key:
            self.prefix_hits += 1
            return self.bank.predict_proba_from(name, cached[1])
        prefix, probs = self.bank.encode_prefix(name, inputs, self.start)
        self._prefixes[slot] = (key, prefix)
        return probs

    def original_ndcg(self, version: VersionInfo) -> float:
        return _mean(self._original_by_query(version))

    def _original_by_query(self, version: VersionInfo) -> dict[str, float]:
        if version.model_id not in self._original_scores:
            self._original_scores[version.model_id] = self.ndcg_by_query(version, self.original, "original")
        return self._original_scores[version.model_id]

    def original_change(self, candidate: VersionInfo, reference: VersionInfo, skip: frozenset[str] = frozenset()) -> float:
        """The candidate's nDCG@10 change against `reference` on the original set: the mean of the
        per-query changes, leaving out the `trim` share of queries at each end (a trimmed mean).

        A trend in the stream moves a few queries a long way: their offline judgments are stale, and
        a candidate that learnt the trend loses on them. Forgetting moves many queries a little.
        The trimmed mean tells the two apart; with trim 0 it is the plain difference of means."""
        changes = np.sort(self._original_changes(candidate, reference, skip))
        cut = int(self.trim * len(changes))
        kept = changes[cut:len(changes) - cut] if cut else changes
        return float(np.mean(kept)) if len(kept) else 0.0

    def _original_changes(self, candidate: VersionInfo, reference: VersionInfo, skip: frozenset[str]) -> list[float]:
        cand, ref = self._original_by_query(candidate), self._original_by_query(reference)
        return [cand[q] - ref[q] for q in cand if q in ref and q not in skip]

    def warm(self, registry: AdapterRegistry) -> None:
        """Score CURRENT and the offline adapter on the original set (cached for the first update)."""
        for version in (registry.get(self.task.name), offline_anchor(registry, self.task.name)):
            if version is not None:
                self.original_ndcg(version)

    def decide(self, parent: VersionInfo, candidate: VersionInfo, holdout: pd.DataFrame,
               anchor: VersionInfo | None = None, touched: frozenset[str] = frozenset()) -> tuple[bool, str, dict]:
        """Promote iff no nDCG@10 drop beyond the tolerance against CURRENT on the original set and on
        the fresh held-out lists, and none against the offline `anchor` on the original set: without
        the anchor, updates that each lose a little could slide far from the offline model. And only
        if the mean change over every judged query (both sets pooled, each query once) is at least
        `gate.min_mean_change`: each version also moves queries nobody judged, and one measured no
        better than CURRENT buys that churn for nothing.

        `touched`: original-set queries the online click layer moves (a trend is in their segment): their
        offline judgements are stale, so the original-set checks leave them out and the fresh held-out
        lists (shoppers' own clicks) judge them; the reason says how many were left out."""
        touched = frozenset(touched) & frozenset(self.original["query_id"].astype(str))
        m = {"original_ndcg_current": self.original_ndcg(parent), "original_ndcg_candidate": self.original_ndcg(candidate),
             "original_queries": int(self.original["query_id"].nunique()), "original_trend_touched": len(touched),
             "original_change_current": self.original_change(candidate, parent, touched)}
        trimmed = f" (trimmed mean of per-query changes, {self.trim:.0%} cut at each end)" if self.trim else ""
        problems = []
        if m["original_change_current"] < -self.tolerance:
            problems.append(f"original-set nDCG@10 {m['original_ndcg_candidate']:.4f} < CURRENT "
                            f"{m['original_ndcg_current']:.4f} - {self.tolerance}: change "
                            f"{m['original_change_current']:+.4f}{trimmed}")
        if anchor is not None:
            m["original_ndcg_offline"] = self.original_ndcg(anchor)
            m["original_change_offline"] = self.original_change(candidate, anchor, touched)
            if m["original_change_offline"] < -self.tolerance:
                problems.append(f"original-set nDCG@10 {m['original_ndcg_candidate']:.4f} < offline {anchor.model_id} "
                                f"{m['original_ndcg_offline']:.4f} - {self.tolerance}: change "
                                f"{m['original_change_offline']:+.4f}{trimmed}")
        lists = int(holdout["query_id"].nunique()) if len(holdout) else 0
        m["fresh_lists"] = lists
        changes = self._original_changes(candidate, parent, touched)  # every judged query's, pooled
        if lists >= self.min_lists:
            current, cand = (self.ndcg_by_query(parent, holdout, "holdout", candidate.model_id),
                             self.ndcg_by_query(candidate, holdout, "holdout", candidate.model_id))
            m["fresh_ndcg_current"], m["fresh_ndcg_candidate"] = _mean(current), _mean(cand)
            changes += [cand[q] - current[q] for q in cand if q in current]
            if m["fresh_ndcg_candidate"] < m["fresh_ndcg_current"] - self.tolerance:
                problems.append(f"fresh held-out nDCG@10 {m['fresh_ndcg_candidate']:.4f} < CURRENT "
                                f"{m['fresh_ndcg_current']:.4f} - {self.tolerance}")
        m["judged_queries"] = len(changes)
        m["judged_mean_change"] = float(np.mean(changes)) if changes else 0.0
        if self.min_change is not None and changes and m["judged_mean_change"] < self.min_change:
            problems.append(f"no gain: mean nDCG@10 change {m['judged_mean_change']:+.4f} over the {len(changes)} "
                            f"judged queries (original set and fresh held-out lists) < {self.min_change:+.4f}")
        m = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        judged = (f" ({len(touched)} trend-touched original queries judged on fresh evidence only, "
                  f"{m['original_queries'] - len(touched)} against the offline judgements)" if touched else "")
        if problems:
            return False, "; ".join(problems) + judged, m
        return True, f"no regression beyond {self.tolerance} on the original set or fresh held-out lists{judged}", m

    def touched_queries(self, snapshot, catalog) -> frozenset[str]:
        """Original-set queries whose judged pool the online layer's `snapshot` would move."""
        touched = set()
        for query_id, rows in self.original.groupby("query_id"):
            hits = [(str(p), 1.0) for p in rows["product_id"]]
            if snapshot.adjust(str(rows["query"].iloc[0]), hits, catalog).applied:
                touched.add(str(query_id))
        return frozenset(touched)


def _mean(per_query: dict[str, float]) -> float:
    """Mean nDCG@10 over queries; nan when no query has a relevant product (as `grouped_mean`)."""
    return float(np.mean(list(per_query.values()))) if per_query else float("nan")


def newest_lists(examples: pd.DataFrame, cap: int) -> pd.DataFrame:
    """The newest whole result lists holding at most about `cap` examples (examples come in log order)."""
    if len(examples) <= cap:
        return examples
    sizes = examples.groupby("query_id", sort=False).size()[::-1].cumsum()
    keep = set(sizes[sizes <= cap].index) or {sizes.index[0]}
    return examples[examples["query_id"].isin(keep)].reset_index(drop=True)


def replay_sample(cfg: StreamConfig, n: int, seed: int) -> pd.DataFrame:
    """n offline training examples (whole queries) of the task, against forgetting."""
    if n == 0:
        return pd.DataFrame(columns=list(TRAIN_COLUMNS))
    train = storage.read_parquet(storage.join(cfg.data_dir, cfg.task, "train"), columns=list(TRAIN_COLUMNS))
    return sample_examples(train, "query_id", n, seed)


class UpdateStopped(AisleError):
    """The update was stopped (its stop file appeared) before a decision: nothing to audit."""


def run_update(cfg: StreamConfig, records: list[dict], number: int, gate: Gate,
               product_texts: dict[str, str], span: dict, stop_file: Path | None = None,
               trainer=None, touched: frozenset[str] = frozenset(), online=None) -> UpdateOutcome:
    """Train a candidate from `records` (one window of the log) and gate it. Never raises for a
    failed training run: that is a 'failed' decision and CURRENT keeps serving. Raises UpdateStopped
    when `stop_file` exists after training (the training run sees it too, and ends early)."""
    start = time.perf_counter()
    registry = AdapterRegistry(cfg.registry)
    update_id = f"update-{number:05d}-{time.strftime('%Y%m%d-%H%M%S')}"
    current = registry.current(cfg.task)
    outcome = UpdateOutcome(update_id, "skipped", "", parent=current)
    examples, counts = examples_from_events(records, product_texts, cfg.update.eta, cfg.update.max_weight)
    outcome.examples = {**counts, "span": span}
    if current is None:
        outcome.reason = f"task {cfg.task} has no CURRENT version to update"
    elif examples.empty or not (examples["label"] != "irrelevant").any():
        outcome.reason = "no usable labelled example in the window (all flagged, no clicks, or not search results)"
    else:
        parent = registry.get(cfg.task, current)
        examples = newest_lists(examples, cfg.update.max_fresh_examples)
        train_fresh, holdout = split_holdout(examples, cfg.update.holdout_fraction, cfg.update.seed + number)
        t_train = time.perf_counter()
        try:
            fresh = train_fresh
            if cfg.update.targets == "distilled" and trainer is not None and online is not None:
                distilled, outcome.examples["distilled"] = distilled_examples(
                    records, *online, product_texts, cfg.update.holdout_fraction, cfg.update.seed + number)
                if len(distilled):
                    fresh = newest_lists(distilled, cfg.update.max_fresh_examples)
            candidate = _train_candidate(cfg, update_id, parent, fresh, holdout, number, span, counts, stop_file,
                                         trainer)
        except AisleError as e:
            _raise_if_stopped(stop_file, update_id)
            outcome.decision, outcome.reason = "failed", f"training failed: {e}"
        else:
            _raise_if_stopped(stop_file, update_id)
            outcome.candidate = candidate.model_id
            t_gate = time.perf_counter()
            ok, reason, metrics = gate.decide(parent, candidate, holdout, offline_anchor(registry, cfg.task), touched)
            outcome.metrics = {**metrics, "train_examples": int(len(train_fresh)), "holdout_examples": int(len(holdout)),
                               "train_job_s": round(t_gate - t_train, 2), "gate_s": round(time.perf_counter() - t_gate, 2)}
            outcome.decision, outcome.reason = ("promoted" if ok else "rejected"), reason
            registry.update_metrics(cfg.task, candidate.version, {f"gate_{k}": v for k, v in metrics.items()
                                                                   if isinstance(v, (int, float))})
            if ok:
                try:
                    registry.promote(cfg.task, candidate.version, reason=f"{update_id}: {reason}",
                                     expected_current=parent.version)
                except RegistryError as e:
                    outcome.decision, outcome.reason = "rejected", f"not promoted: {e}"
    outcome.seconds = round(time.perf_counter() - start, 2)
    return outcome


def _raise_if_stopped(stop_file: Path | None, update_id: str) -> None:
    if stop_file is not None and stop_file.exists():
        raise UpdateStopped(f"{update_id} stopped before its decision")


def _train_candidate(cfg: StreamConfig, update_id: str, parent: VersionInfo, train_fresh: pd.DataFrame,
                     holdout: pd.DataFrame, number: int, span: dict, counts: dict,
                     stop_file: Path | None = None, trainer=None) -> VersionInfo:
    """The candidate: trained by `trainer` (a train.warm.WarmTrainer, fixed epochs) when given, else by
    a Ray Train job (`train.finetune.run`, which picks its epoch on the fresh holdout)."""
    _raise_if_stopped(stop_file, update_id)  # asked to stop before training began: start no run
    seed = cfg.update.seed + number
    replay = replay_sample(cfg, cfg.update.replay_examples, seed)
    distilled = "target" in train_fresh.columns
    fresh = train_fresh[[*TRAIN_COLUMNS, "target"]] if distilled else resample_by_weight(train_fresh, seed)[list(TRAIN_COLUMNS)]
    train = pd.concat([fresh, replay], ignore_index=True).sample(frac=1.0, random_state=seed)
    # Per-epoch validation inside Ray Train picks the better epoch: on the held-out fresh lists when
    # there are any, else on a few of the gate's original queries.
    val = holdout[list(TRAIN_COLUMNS)] if len(holdout) else gate_fallback_val(cfg)
    data_dir = Path(cfg.updates_dir).resolve() / update_id
    for split, frame in (("train", train), ("val", val)):
        out = data_dir / cfg.task / split
        out.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out / "part-0.parquet", index=False)
    ft = from_dict(FinetuneConfig, {k: v for k, v in parent.config.items() if k != "labels"})
    ft = dataclasses.replace(
        ft, data_dir=str(data_dir), registry=cfg.registry, storage_path=str(Path(cfg.updates_dir).resolve() / "runs"),
        run_name=update_id, resume_from=None, promote=False,
        train=dataclasses.replace(ft.train, epochs=cfg.update.epochs, lr=cfg.update.lr, batch_size=cfg.update.batch_size,
                                  max_steps_per_epoch=None, max_train_examples=None, max_eval_examples=None,
                                  top_layers=cfg.update.top_layers, seed=seed),
        scaling=dataclasses.replace(ft.scaling, num_workers=1, cpus_per_worker=cfg.update.cpus_per_worker,
                                    threads_per_worker=cfg.update.threads_per_worker, use_gpu=cfg.update.use_gpu))
    lineage = {"update_id": update_id, "events": span, "targets": "distilled" if distilled else "clicks",
               "examples": {"fresh": int(len(fresh)), "replay": int(len(replay)), "holdout": int(len(holdout)),
                            **{k: counts[k] for k in ("exact", "partial", "irrelevant", "flagged")}}}
    if trainer is not None:
        try:
            return trainer.train(ft, parent, train, lineage, stop_file)
        except finetune.TrainingStopped:
            raise UpdateStopped(f"{update_id} stopped during training") from None
    return finetune.run(ft, parent=parent, trigger="stream", extra_lineage=lineage, stop_file=stop_file)


def gate_fallback_val(cfg: StreamConfig) -> pd.DataFrame:
    val = storage.read_parquet(storage.join(cfg.data_dir, cfg.task, "val"), columns=list(TRAIN_COLUMNS))
    return sample_examples(val, "query_id", 120, cfg.update.seed)
