"""Evaluate a recommend adapter by full-catalog ranking, beside its baselines in the same run.

Targets are the prepared test (or val) split, each predicted from the user's history before it;
or, with `later_log=FILE`, a later log of the same shop (cleaned by the same rules and salt): each
returning user's purchases after their prepared history. Every target is ranked against the whole
catalog (no sampled negatives): HR@10, NDCG@10 and MRR on all targets, on items new to the user,
and on cold-start items (fewer than `cold_max` training interactions). Baselines: popularity,
repeat purchase, item-to-item co-occurrence (item-knn) and the zero-shot backbone.

    aisle evaluate recommend [version=v2 later_log=data/later.parquet ...]
    python -m train.recommend_eval --config configs/evaluate_recommend.yaml
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.registry import ADAPTER_DIR
from core import storage
from core.config import to_dict
from core.errors import InputError
from core.fingerprint import evaluation_fingerprint, load_result, save_result
from core.job_configs import RecommendEvalConfig
from ops.runtime import job_main

TASK = "recommend"
BASELINES = ("popularity", "repeat", "item-knn", "zero-shot")


@dataclass
class RecEvaluation:
    version: str
    targets: str
    results: dict[str, dict[str, dict[str, float]]]
    """scorer -> slice (all, new, cold) -> metric."""

    def table(self) -> str:
        lines = [f"recommend {self.version} on {self.targets}: full-catalog ranking",
                 f"  {'scorer':<11} {'slice':<6} {'n':>6} {'HR@10':>7} {'NDCG@10':>8} {'MRR':>7}"]
        for name, slices in self.results.items():
            for sl in ("all", "new", "cold"):
                r = slices[sl]
                lines.append(f"  {name:<11} {sl:<6} {r['n']:>6} {r['hr@10']:>7.4f} {r['ndcg@10']:>8.4f} {r['mrr']:>7.4f}")
        return "\n".join(lines)


def targets_and_history(cfg: RecommendEvalConfig, data: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(history every target is predicted from, targets, what the targets are)."""
    if cfg.later_log:
        from core.interactions import clean_log, later_targets
        from core.text import salted_hash
        from data_pipelines.interactions import clean_rules, log_columns
        from data_pipelines.sources import check_source, read_source

        src = cfg.source
        src.log = cfg.later_log
        cols = dataclasses.replace(log_columns(src), item_text=())   # item texts come from the prepared table
        check_source(cfg.later_log, cols.present(), what="later log")
        later = read_source(cfg.later_log, cols.present()).to_pandas()
        events, _ = clean_log(later, cols, clean_rules(src), data["items"])
        events["user_id"] = events["user_id"].map(lambda u: salted_hash(u, cfg.salt))
        return data["events"], later_targets(data["events"], events), f"later log {cfg.later_log}"
    if cfg.split == "val":
        return data["train"], data["val"], "val targets (leave-last-out)"
    history = pd.concat([data["train"], data["val"]]).sort_values(["user_id", "ts", "seq"], kind="stable")
    return history, data["test"], "test targets (leave-last-out)"


def run(cfg: RecommendEvalConfig) -> RecEvaluation:
    from core.registry import AdapterRegistry
    from data_pipelines.interactions import read_prepared

    data = read_prepared(cfg.data_dir)
    registry = AdapterRegistry(cfg.registry)
    info = registry.get(TASK, cfg.version)
    fp = _fingerprint(cfg, info) if cfg.reuse else None
    if (kept := load_result(cfg.cache_dir, TASK, fp)) is not None:
        print(f"[{TASK}] reusing the evaluation of {info.model_id} kept under {cfg.cache_dir} "
              f"(fingerprint {fp[:12]}; reuse=false evaluates anew)")
        evaluation = RecEvaluation(**kept)
    else:
        evaluation = evaluate(cfg, data, registry.local_dir(TASK, info.version) / ADAPTER_DIR, info.version)
        save_result(cfg.cache_dir, TASK, fp, dataclasses.asdict(evaluation))  # only with reuse (no fingerprint without)
    print(evaluation.table())
    if cfg.output:
        storage.write_text(cfg.output, json.dumps(dataclasses.asdict(evaluation), indent=2))
    return evaluation


def evaluate(cfg: RecommendEvalConfig, data: dict[str, pd.DataFrame], adapter_dir, version: str) -> RecEvaluation:
    """The model and (with `cfg.baselines`) every baseline on the same targets, ranked against the
    whole catalog."""
    import torch

    from core import modeling as Mo
    from core import rec_model as R
    from core import recommend as RC

    catalog = RC.Catalog(data["items"]["item_id"].tolist())
    texts = data["items"]["text"].tolist()
    counts = RC.train_counts(catalog, data["train"])
    history, targets, what = targets_and_history(cfg, data)
    if len(targets) == 0:
        raise InputError(f"no targets to evaluate ({what}): no returning user with a purchase of a known item")
    es = RC.eval_set(catalog, history, targets, counts, cold_max=cfg.cold_max)
    if cfg.max_users and len(es.targets) > cfg.max_users:
        keep = np.sort(np.random.default_rng(0).choice(len(es.targets), cfg.max_users, replace=False))
        es = RC.EvalSet([es.histories[i] for i in keep], es.targets[keep], es.new_to_user[keep], es.cold[keep],
                        [es.users[i] for i in keep])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = R.load(adapter_dir)
    tokenizer = Mo.load_tokenizer(model.meta.backbone)
    results = {"model": RC.evaluate(R.RecScorer(model, tokenizer, catalog.ids, texts), es)}
    if cfg.baselines:
        for name, scorer in baseline_scorers(catalog, data["train"], counts, texts, model.meta).items():
            results[name] = RC.evaluate(scorer, es)
    return RecEvaluation(version, what, results)


def _fingerprint(cfg: RecommendEvalConfig, info) -> str:
    """The prepared data and the later log's content (if any) beside what every evaluation's
    fingerprint holds (core.fingerprint.evaluation_fingerprint)."""
    data = {"data": storage.absolute(storage.join(cfg.data_dir, TASK))}
    if cfg.later_log:
        data["later_log"] = storage.absolute(cfg.later_log)
    return evaluation_fingerprint("evaluate_recommend", to_dict(cfg), data, info, places=("later_log",))


def baseline_scorers(catalog, train: pd.DataFrame, counts: np.ndarray, texts: list[str], meta) -> dict:
    from core import modeling as Mo
    from core import recommend as RC

    backbone = Mo.load_backbone(meta.backbone)
    vectors = Mo.embed(backbone, Mo.load_tokenizer(meta.backbone), texts, max_length=meta.max_length, batch_size=256)
    return {"popularity": RC.popularity_scorer(counts), "repeat": RC.repeat_scorer(counts),
            "item-knn": RC.item_knn_scorer(RC.cooccurrence(catalog, train), counts),
            "zero-shot": RC.embedding_scorer(vectors, recent=meta.history)}


def main(argv: list[str] | None = None) -> int:
    return job_main(RecommendEvalConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
