"""Incremental updates of the recommend adapter from the stream, trained in a warm process.

The RecUpdater actor (actors/rec_updater.py) keeps one `WarmRecTrainer` for as long as the stream
runs: the tokenizer, one pristine backbone, the serving catalog's item texts with the states of
their frozen lower layers (computed once: only the top `top_layers` train), a replay sample of the
offline training histories and the offline validation users. An update
1. copies CURRENT and trains it on the recent next-item examples plus the replay sample, with
   the offline objective (in-batch sampled softmax, logQ from the update's own item counts), a
   fixed number of epochs (nothing is chosen on the held-out shoppers: the gate alone scores them);
2. scores CURRENT and the candidate over the whole serving catalog: AUC on the held-out
   shoppers' recent next items (`fresh_auc`), and NDCG@10 on the offline validation users (there
   also the offline-trained version the chain of stream updates started from);
3. registers the candidate and promotes it when `core.rec_stream.decide` says so.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core import modeling as Mo
from core import rec_model as R
from core import recommend as RC
from core.config import to_dict
from core.rec_stream import NextItem, RecGateResult, decide
from core.registry import ADAPTER_DIR, AdapterRegistry, model_id
from core.stream_config import RecStreamConfig

TASK = "recommend"


@dataclass
class UpdateResult:
    parent: str
    candidate: str
    promoted: bool
    gate: RecGateResult
    train_examples: int
    replay_examples: int
    seconds: dict[str, float]

    def record(self) -> dict:
        g = self.gate
        return {"parent": model_id(TASK, self.parent), "candidate": model_id(TASK, self.candidate),
                "decision": "promoted" if self.promoted else "rejected", "reason": g.reason,
                "metrics": {"fresh_auc_current": g.fresh_current, "fresh_auc_candidate": g.fresh_candidate,
                            "offline_ndcg@10_current": g.offline_current, "offline_ndcg@10_candidate": g.offline_candidate},
                "examples": {"train": self.train_examples, "replay": self.replay_examples},
                "seconds": self.seconds}


class WarmRecTrainer:
    """What every update of one stream shares; `update` runs one."""

    def __init__(self, backbone: str, items: pd.DataFrame, cfg: RecStreamConfig, offline: dict[str, pd.DataFrame] | None,
                 seed: int = 0):
        self.cfg = cfg
        self.tokenizer = Mo.load_tokenizer(backbone)
        self._backbone = Mo.load_backbone(backbone)
        self.catalog = RC.Catalog(items["item_id"].astype(str).tolist())
        self.texts = items["text"].astype(str).tolist()
        self._rng = np.random.default_rng(seed)
        self._item_texts: R.ItemTexts | None = None
        self._tables: dict[str, torch.Tensor] = {}   # text-vector table per registered version
        self._offline_scores: dict[str, float] = {}
        self.replay: list[tuple[list[int], int]] = []
        self.offline_val: RC.EvalSet | None = None
        if offline is not None:
            self._offline_sets(offline)

    def _offline_sets(self, data: dict[str, pd.DataFrame]) -> None:
        train = data["train"][data["train"]["item_id"].isin(self.catalog.index)]
        idx, user_start, targets = RC.training_examples(train.reset_index(drop=True), self.catalog)
        if len(targets):
            keep = self._rng.choice(targets, min(len(targets), self.cfg.replay_pool), replace=False)
            self.replay = [(h.tolist(), int(idx[p])) for h, p in zip(RC.histories_at(idx, user_start, keep, 50), keep)]
        counts = RC.train_counts(self.catalog, train)
        val = RC.eval_set(self.catalog, train, data["val"], counts)
        if len(val.targets) > self.cfg.offline_users:
            pick = np.sort(self._rng.choice(len(val.targets), self.cfg.offline_users, replace=False))
            val = RC.EvalSet([val.histories[i] for i in pick], val.targets[pick], val.new_to_user[pick],
                             val.cold[pick], [val.users[i] for i in pick])
        self.offline_val = val if len(val.targets) else None

    # ---- models and their item tables ---------------------------------------------------------
    def load(self, directory) -> R.RecModel:
        return R.load(directory, backbone=copy.deepcopy(self._backbone))

    def item_texts(self, model: R.RecModel) -> R.ItemTexts:
        if self._item_texts is None:
            self._item_texts = R.ItemTexts(model, self.tokenizer, self.texts)
        return self._item_texts.with_model(model)

    def table(self, model: R.RecModel, version: str | None = None) -> torch.Tensor:
        if version is not None and version in self._tables:
            return self._tables[version]
        model.eval()
        table = self.item_texts(model).table()
        if version is not None:
            self._tables = {version: table}   # CURRENT's only: the next update starts from it
        return table

    # ---- training ---------------------------------------------------------------------------------
    def train(self, parent: R.RecModel, parent_table: torch.Tensor, examples: list[NextItem]) -> tuple[R.RecModel, int]:
        """A candidate trained from `parent` on `examples` + a replay sample; returns it and the replay count."""
        cfg = self.cfg
        model = copy.deepcopy(parent)
        fresh = [(self.catalog.encode(list(e.history)), self.catalog.index[e.target]) for e in examples]
        n_replay = min(len(self.replay), cfg.replay_examples)
        replay = [self.replay[i] for i in self._rng.choice(len(self.replay), n_replay, replace=False)] if n_replay else []
        data = fresh + replay
        n, L, B = len(self.catalog), model.meta.history, cfg.batch_size
        known = {item: i for i, item in enumerate(model.item_ids)}
        model_ids = torch.tensor([known.get(i, len(model.item_ids)) for i in self.catalog.ids] + [len(model.item_ids)])
        counts = np.bincount([t for _, t in data], minlength=n).astype(np.float64)
        log_q = torch.tensor(np.log((counts + 1.0) / (counts + 1.0).sum()), dtype=torch.float32)
        texts = self.item_texts(model)
        table = torch.cat([parent_table, torch.zeros(1, parent_table.shape[1])])   # row n: history padding
        groups = [{"params": [p for k, p in model.named_parameters() if p.requires_grad and k.startswith("encoder.")],
                   "lr": cfg.text_lr},
                  {"params": [p for k, p in model.named_parameters() if p.requires_grad and not k.startswith("encoder.")],
                   "lr": cfg.lr}]
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        model.train()
        for _ in range(cfg.epochs):
            order = self._rng.permutation(len(data))
            for lo in range(0, len(order), B):
                batch = [data[i] for i in order[lo:lo + B]]
                if len(batch) < 2:
                    continue
                tgt = torch.tensor([t for _, t in batch])
                hist, mask = R.right_aligned([h for h, _ in batch], L, n)
                uniq, inverse = torch.unique(tgt, return_inverse=True)
                item_vecs = model.candidate_vectors(texts.encode(uniq), model_ids[uniq])[inverse]
                hist_vecs = model.history_vectors(table[hist], model_ids[hist]) * mask.unsqueeze(-1)
                loss = R.in_batch_loss(model.user_vectors(hist_vecs, mask), item_vecs, tgt, log_q, model.scale())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return model.eval(), n_replay

    # ---- scoring ------------------------------------------------------------------------------------
    def scorer(self, model: R.RecModel, table: torch.Tensor) -> R.RecScorer:
        return R.RecScorer(model, self.tokenizer, self.catalog.ids, self.texts, text_vectors=table)

    def fresh_auc(self, scorer: R.RecScorer, examples: list[NextItem]) -> float | None:
        """The share of the catalog ranked below each example's next item, averaged (1: always first,
        0.5: chance). Top-10 metrics on a few dozen next clicks among thousands of items are mostly 0."""
        if not examples:
            return None
        hists = [self.catalog.encode(list(e.history)) for e in examples]
        targets = np.array([self.catalog.index[e.target] for e in examples])
        ranks = np.concatenate([RC.ranks_of(scorer(hists[i:i + 256]), targets[i:i + 256])
                                for i in range(0, len(hists), 256)])
        return float(np.mean(1.0 - ranks / max(1, len(self.catalog) - 1)))

    def offline_ndcg(self, scorer: R.RecScorer, version: str | None = None) -> float:
        if self.offline_val is None:
            return float("nan")
        if version is not None and version in self._offline_scores:
            return self._offline_scores[version]
        value = RC.evaluate(scorer, self.offline_val)["all"]["ndcg@10"]
        if version is not None:
            self._offline_scores[version] = value
        return value

    # ---- one update ---------------------------------------------------------------------------------
    def anchor_offline(self, registry: AdapterRegistry, version: str) -> tuple[str, float]:
        """The offline-trained version `version` descends from, and its offline NDCG@10."""
        info = registry.get(TASK, version)
        while info.lineage.get("trigger") == "stream" and info.lineage.get("parent"):
            info = registry.get(TASK, info.lineage["parent"])
        if info.version not in self._offline_scores:
            model = self.load(registry.local_dir(TASK, info.version) / ADAPTER_DIR)
            table = self._tables.get(info.version)
            if table is None:
                model.eval()
                table = self.item_texts(model).table()
            self.offline_ndcg(self.scorer(model, table), info.version)
        return info.version, self._offline_scores[info.version]

    def update(self, registry: AdapterRegistry, train: list[NextItem], fresh: list[NextItem], lineage: dict) -> UpdateResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        parent_info = registry.get(TASK)
        _, anchor = self.anchor_offline(registry, parent_info.version)
        parent = self.load(registry.local_dir(TASK, parent_info.version) / ADAPTER_DIR)
        parent_table = self.table(parent, parent_info.version)
        t1 = time.perf_counter()
        candidate, n_replay = self.train(parent, parent_table, train)
        t2 = time.perf_counter()
        cand_table = self.table(candidate)
        current_scorer, cand_scorer = self.scorer(parent, parent_table), self.scorer(candidate, cand_table)
        gate = decide(self.fresh_auc(current_scorer, fresh), self.fresh_auc(cand_scorer, fresh), len(fresh),
                      self.offline_ndcg(current_scorer, parent_info.version), self.offline_ndcg(cand_scorer),
                      cfg.tolerance, cfg.min_holdout, offline_anchor=anchor if self.offline_val is not None else None)
        t3 = time.perf_counter()
        info = registry.create_version(
            TASK, lambda d: R.save(candidate, d / ADAPTER_DIR), config={**parent_info.config, "stream": to_dict(cfg)},
            metrics={"fresh_auc": gate.fresh_candidate, "offline_ndcg@10": gate.offline_candidate,
                     "val_ndcg@10": gate.offline_candidate},
            lineage={"parent": parent_info.version, "trigger": "stream", **lineage})
        if gate.promote:
            registry.promote(TASK, info.version, reason=f"stream update: {gate.reason}",
                             expected_current=parent_info.version)
            self._tables = {info.version: cand_table}
            self._offline_scores[info.version] = gate.offline_candidate
        seconds = {"load": round(t1 - t0, 2), "train": round(t2 - t1, 2), "gate": round(t3 - t2, 2),
                   "total": round(time.perf_counter() - t0, 2)}
        return UpdateResult(parent_info.version, info.version, gate.promote, gate, len(train), n_replay, seconds)
