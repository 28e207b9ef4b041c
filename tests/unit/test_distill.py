"""Consolidation targets from the online click layer (core.distill) and the warm trainer learning them."""

from __future__ import annotations

import numpy as np
import pytest

from core.click_config import ClickModelConfig
from core.click_model import catalog_for
from core.click_snapshot import Snapshot
from core.distill import distilled_examples, grade_distribution
from core.text import bucket

PRODUCTS = [{"product_id": f"p{i}", "category": "home", "brand": "Oakly" if i < 2 else "Other", "colour": "red",
             "material": "oak"} for i in range(5)]
TEXTS = {p["product_id"]: f"product {p['product_id']}" for p in PRODUCTS}
SNAP = Snapshot(offset=100, epoch=0, ts=0.0, enabled=True, effects=(("home|brand=Oakly", 0.5),), max_boost=0.8,
                max_penalty=0.5, segment_top_n=10, boost_min_score=0.5)


def impressions(session: str, query: str, scores: dict[str, float], **extra) -> list[dict]:
    return [{"type": "impression", "session": session, "user": "u" + session, "query": query, "product_id": p,
             "position": i, "score": s, "flags": [], **extra} for i, (p, s) in enumerate(scores.items())]


@pytest.mark.parametrize("target", [0.0, 0.3, 1.0, 1.6, 2.0, 2.7, -1.0])
def test_grade_distribution_has_the_target_as_its_expected_grade(target):
    probs = grade_distribution(target)
    assert sum(probs) == pytest.approx(1.0) and min(probs) >= 0
    assert np.dot(probs, [0, 1, 2]) == pytest.approx(min(2.0, max(0.0, target)))


def test_targets_are_the_served_scores_with_the_layers_effects():
    catalog = catalog_for(PRODUCTS, ClickModelConfig())
    records = (impressions("s1", "kitchen table", {"p0": 1.2, "p2": 1.4, "p1": 0.3})
               + impressions("s2", "kitchen table", {"p0": 1.0, "p2": 1.4})
               + impressions("s3", "other table", {"p3": 0.9}, flags=["rate"])  # flagged: left out
               + [{**impressions("s4", "table", {"p4": 1.0})[0], "score": None}])  # no served score: left out
    frame, counts = distilled_examples(records, SNAP, catalog, TEXTS)
    targets = dict(zip(frame["product_id"], frame["target"]))
    assert targets == pytest.approx({"p0": 1.1 + 0.5, "p2": 1.4, "p1": 0.3})  # p1 scored under the boost floor
    assert counts == {"pairs": 3, "moved": 1, "snapshot": "100.0"}
    assert dict(zip(frame["product_id"], frame["label"])) == {"p0": "exact", "p2": "partial", "p1": "irrelevant"}
    stated, _ = distilled_examples(impressions("s5", "oakly table", {"p0": 1.2}), SNAP, catalog, TEXTS)
    assert stated["target"].tolist() == [1.2]  # the query asked for the brand: no brand key applies


def test_sessions_the_gate_holds_out_never_become_targets():
    catalog = catalog_for(PRODUCTS, ClickModelConfig())
    records = [r for s in range(40) for r in impressions(f"s{s}", f"q{s}", {"p2": 1.0})]
    frame, _ = distilled_examples(records, SNAP, catalog, TEXTS, holdout_fraction=0.25, seed=7)
    held = {f"s{s}" for s in range(40) if bucket(f"s{s}", 7) < 2500}
    assert held and set(frame["split_group"]).isdisjoint(held) and len(frame) == 40 - len(held)


def test_the_warm_trainer_moves_scores_toward_distilled_targets(tmp_path):
    import pandas as pd

    from core import modeling
    from core.config import from_dict
    from core.job_configs import FinetuneConfig
    from core.modeling import AdapterMeta, LoraSpec
    from core.registry import AdapterRegistry
    from core.tasks import expected_grade
    from core.registry import ADAPTER_DIR
    from train.warm import WarmTrainer

    meta = AdapterMeta(task="relevance", labels=["irrelevant", "partial", "exact"], backbone=modeling.TINY_BACKBONE,
                       max_length=32, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    registry = AdapterRegistry(tmp_path / "registry")
    parent = registry.create_version("relevance", lambda d: modeling.save_adapter(modeling.build_task_model(meta), meta,
                                                                                 d / ADAPTER_DIR),
                                     config={}, metrics={}, lineage={"trigger": "offline"})
    pairs = [("oak table", "oak table by oakly"), ("oak table", "steel chair by other")]
    frame = pd.DataFrame([{"example_id": f"e{i}", "query_id": "q", "product_id": f"p{i}", "query": q, "product_text": t,
                           "label": "partial", "target": target, "split_group": "s"}
                          for i, ((q, t), target) in enumerate(zip(pairs, (1.9, 0.1)))] * 16)
    ft = from_dict(FinetuneConfig, {"task": "relevance", "registry": str(tmp_path / "registry"),
                                    "model": {"backbone": modeling.TINY_BACKBONE, "max_length": 32},
                                    "train": {"epochs": 10, "batch_size": 8, "lr": 2e-2, "top_layers": 1}})
    candidate = WarmTrainer(modeling.TINY_BACKBONE, threads=1).train(ft, parent, frame, {})
    tok = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    before, after = (expected_grade(modeling.predict_proba(modeling.load_adapter(v.path / ADAPTER_DIR)[0], tok, pairs, 32))
                     for v in (parent, candidate))
    assert after[0] - after[1] > before[0] - before[1] + 0.3  # the boosted pair rose above the other
    assert after[0] > before[0] and after[1] < before[1]
