"""The incremental update's parts without Ray: the newest-lists cap, the offline anchor lookup, and
the gate's reuse of lower-layer states (tiny random BERT)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling
from core.config import from_dict
from core.modeling import AdapterMeta, LoraSpec
from core.registry import AdapterRegistry, offline_anchor
from core.registry import ADAPTER_DIR
from core.stream_config import StreamConfig
from train.incremental import Gate, newest_lists


def test_newest_lists_keeps_whole_newest_lists_within_the_cap():
    frame = pd.DataFrame({"query_id": ["a"] * 3 + ["b"] * 4 + ["c"] * 2, "x": range(9)})
    assert newest_lists(frame, 20).equals(frame)
    kept = newest_lists(frame, 6)  # c (2) + b (4): a would pass the cap
    assert list(kept["query_id"].unique()) == ["b", "c"] and len(kept) == 6
    assert list(newest_lists(frame, 1)["query_id"]) == ["c", "c"]  # the newest list stays whole


def test_offline_anchor_is_the_newest_offline_version(tmp_path):
    registry = AdapterRegistry(tmp_path)
    for trigger in ("offline", "stream", "offline", "stream"):
        registry.create_version("relevance", lambda d: (d / ADAPTER_DIR).mkdir(), config={}, metrics={},
                                lineage={"trigger": trigger})
    assert offline_anchor(registry, "relevance").version == "v3"


def _relevance_pairs(n_queries: int, per_query: int = 6) -> pd.DataFrame:
    words = ["navy sneakers", "oak table", "wool scarf", "steel pan", "linen shirt", "leather boots"]
    rows = []
    for q in range(n_queries):
        for i in range(per_query):
            rows.append({"example_id": f"e{q}-{i}", "query_id": f"q{q}", "product_id": f"p{i}",
                         "query": words[q % len(words)], "product_text": f"{words[(q + i) % len(words)]} item {i}",
                         "label": ("exact", "partial", "irrelevant")[i % 3], "split_group": f"q{q}"})
    return pd.DataFrame(rows)


def _relevance_version(registry, seed: int, parent_dir=None):
    """A tiny relevance adapter: random, or `parent_dir`'s with only the top layer and head changed."""
    meta = AdapterMeta(task="relevance", labels=["irrelevant", "partial", "exact"], backbone=modeling.TINY_BACKBONE,
                       max_length=32, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = modeling.load_adapter(parent_dir, trainable=True)[0] if parent_dir else modeling.build_task_model(meta)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad and (parent_dir is None or modeling.layer_index(name) == 1 or name.startswith("head.")):
            p.data.add_(torch.randn_like(p) * 0.3)
    return registry.create_version("relevance", lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={}, metrics={}, lineage={"trigger": "offline" if parent_dir is None else "stream"})


def test_the_gate_reuses_lower_layer_states_for_a_top_layers_update_and_decides_alike(tmp_path):
    (tmp_path / "data" / "relevance" / "val").mkdir(parents=True)
    _relevance_pairs(8).to_parquet(tmp_path / "data" / "relevance" / "val" / "part-0.parquet")
    registry = AdapterRegistry(tmp_path / "registry")
    parent = _relevance_version(registry, seed=1)
    candidate = _relevance_version(registry, seed=2, parent_dir=parent.path / ADAPTER_DIR)
    holdout = _relevance_pairs(3)
    base = {"data_dir": str(tmp_path / "data"), "registry": str(tmp_path / "registry"),
            "gate": {"original_queries": 4, "min_holdout_lists": 1}}
    full = Gate(from_dict(StreamConfig, base), modeling.TINY_BACKBONE)
    cached = Gate(from_dict(StreamConfig, {**base, "update": {"top_layers": 1}}), modeling.TINY_BACKBONE)
    assert (full.start, cached.start) == (None, 1)
    ok_full, _, m_full = full.decide(parent, candidate, holdout, anchor=parent)
    ok_cached, _, m_cached = cached.decide(parent, candidate, holdout, anchor=parent)
    # the candidate on the original set and on the held-out lists ran from the parent's cached states
    assert (full.prefix_hits, cached.prefix_hits) == (0, 2)
    assert ok_full == ok_cached
    assert m_cached.keys() == m_full.keys()
    for key in ("original_ndcg_candidate", "fresh_ndcg_candidate", "original_ndcg_current", "fresh_ndcg_current"):
        assert m_cached[key] == pytest.approx(m_full[key], abs=0.01), key


def test_the_trimmed_original_check_tells_a_trend_on_few_queries_from_forgetting_on_many(tmp_path):
    """Per-query nDCG@10 changes: two queries lose 0.2 each (their stale judgments against a
    trend the candidate learnt), or every query loses 0.03 (forgetting). The plain mean rejects
    both; the trimmed mean (10% cut at each end of 20 queries) passes the first and rejects the second."""
    from types import SimpleNamespace

    (tmp_path / "data" / "relevance" / "val").mkdir(parents=True)
    _relevance_pairs(4).to_parquet(tmp_path / "data" / "relevance" / "val" / "part-0.parquet")
    cfg = {"data_dir": str(tmp_path / "data"), "registry": str(tmp_path / "registry"), "gate": {"original_queries": 4}}
    plain = Gate(from_dict(StreamConfig, cfg), modeling.TINY_BACKBONE)
    trimmed = Gate(from_dict(StreamConfig, {**cfg, "gate": {**cfg["gate"], "trim_fraction": 0.1}}), modeling.TINY_BACKBONE)
    queries = [f"q{i}" for i in range(20)]
    scores = {"parent": {q: 0.8 for q in queries},
              "trend": {q: 0.8 - (0.2 if i < 2 else 0.0) for i, q in enumerate(queries)},
              "forgot": {q: 0.77 for q in queries}}
    for gate in (plain, trimmed):
        gate._original_scores.update(scores)
    parent, trend, forgot = (SimpleNamespace(model_id=k) for k in ("parent", "trend", "forgot"))
    assert plain.original_change(trend, parent) == pytest.approx(-0.02)
    assert plain.original_change(forgot, parent) == pytest.approx(-0.03)
    assert trimmed.original_change(trend, parent) == pytest.approx(0.0)
    assert trimmed.original_change(forgot, parent) == pytest.approx(-0.03)
    assert plain.original_ndcg(trend) == trimmed.original_ndcg(trend) == pytest.approx(0.78)


def test_the_gate_fields_are_checked_when_the_config_loads():
    with pytest.raises(ValueError, match="trim_fraction"):
        from_dict(StreamConfig, {"gate": {"trim_fraction": 0.5}})
    with pytest.raises(ValueError, match="min_mean_change"):
        from_dict(StreamConfig, {"gate": {"min_mean_change": 2.0}})


def _finetune_config(tmp_path, top_layers=1, epochs=2):
    from core.job_configs import FinetuneConfig

    return from_dict(FinetuneConfig, {"task": "relevance", "registry": str(tmp_path / "registry"),
                                      "model": {"backbone": modeling.TINY_BACKBONE, "max_length": 32},
                                      "train": {"epochs": epochs, "batch_size": 8, "lr": 5e-3, "top_layers": top_layers}})


def test_the_warm_trainer_trains_only_the_top_layers_from_the_parent_and_registers_the_candidate(tmp_path):
    from safetensors.torch import load_file

    from train.warm import WarmTrainer

    registry = AdapterRegistry(tmp_path / "registry")
    parent = _relevance_version(registry, seed=1)
    trainer = WarmTrainer(modeling.TINY_BACKBONE, threads=1)
    first = trainer.train(_finetune_config(tmp_path), parent, _relevance_pairs(6), {"update_id": "u1"})
    second = trainer.train(_finetune_config(tmp_path), parent, _relevance_pairs(6), {"update_id": "u2"})
    assert (first.version, second.version) == ("v2", "v3") and registry.current("relevance") is None  # never promoted
    assert first.lineage["trainer"] == "warm" and first.lineage["parent"] == "v1" and len(first.lineage["epoch_losses"]) == 2
    w = {v.version: load_file(str(v.path / ADAPTER_DIR / "lora" / "adapter_model.safetensors"))
         for v in (parent, first, second)}
    top = [k for k in w["v1"] if modeling.layer_index(k) == 1]
    lower = [k for k in w["v1"] if modeling.layer_index(k) == 0]
    assert top and lower
    assert any(not torch.equal(w["v2"][k], w["v1"][k]) for k in top)
    assert all(torch.equal(w["v2"][k], w["v1"][k]) for k in lower)
    # each update starts from the parent on a fresh copy of the backbone: the same data, the same candidate
    assert all(torch.allclose(w["v2"][k], w["v3"][k]) for k in top)
    probs = []
    for version in (first, second):
        model, _ = modeling.load_adapter(version.path / ADAPTER_DIR)
        tok = modeling.load_tokenizer(modeling.TINY_BACKBONE)
        probs.append(modeling.predict_proba(model, tok, [("oak table", "oak table item 1")], 32))
    assert probs[0] == pytest.approx(probs[1], abs=1e-5)


def test_the_warm_trainer_stops_when_the_stop_file_appears(tmp_path):
    from train.warm import TrainingStopped, WarmTrainer

    registry = AdapterRegistry(tmp_path / "registry")
    parent = _relevance_version(registry, seed=1)
    stop = tmp_path / "STOP"
    stop.touch()
    with pytest.raises(TrainingStopped):
        WarmTrainer(modeling.TINY_BACKBONE, threads=1).train(_finetune_config(tmp_path), parent, _relevance_pairs(4),
                                                             {}, stop_file=stop)
    assert [v.version for v in registry.versions("relevance")] == ["v1"]


def test_the_gate_judges_trend_touched_original_queries_on_fresh_evidence_only(tmp_path):
    (tmp_path / "data" / "relevance" / "val").mkdir(parents=True)
    _relevance_pairs(8).to_parquet(tmp_path / "data" / "relevance" / "val" / "part-0.parquet")
    registry = AdapterRegistry(tmp_path / "registry")
    parent = _relevance_version(registry, seed=1)
    candidate = _relevance_version(registry, seed=2, parent_dir=parent.path / ADAPTER_DIR)
    gate = Gate(from_dict(StreamConfig, {"data_dir": str(tmp_path / "data"), "registry": str(tmp_path / "registry"),
                                         "gate": {"original_queries": 8, "min_holdout_lists": 1, "tolerance": 0.0}}),
                modeling.TINY_BACKBONE)
    per_query = {q: gate._original_by_query(candidate)[q] - gate._original_by_query(parent)[q]
                 for q in gate._original_by_query(parent)}
    worst = min(per_query, key=per_query.get)
    assert per_query[worst] < 0  # the random candidate loses somewhere, so leaving queries out shows
    rest = [q for q in per_query if per_query[q] >= 0]
    _, _, all_m = gate.decide(parent, candidate, _relevance_pairs(3), touched=frozenset())
    ok, reason, m = gate.decide(parent, candidate, _relevance_pairs(3),
                                touched=frozenset(q for q in per_query if q not in rest) | {"not-an-original-query"})
    assert m["original_trend_touched"] == len(per_query) - len(rest)
    assert "trend-touched original queries judged on fresh evidence only" in reason
    assert m["original_change_current"] >= 0 > all_m["original_change_current"]
    assert "original-set" not in reason  # the queries it lost on were all trend-touched


def test_touched_queries_are_those_whose_pool_the_snapshot_moves(tmp_path):
    from core.click_config import ClickModelConfig
    from core.click_model import catalog_for
    from core.click_snapshot import Snapshot

    (tmp_path / "data" / "relevance" / "val").mkdir(parents=True)
    frame = _relevance_pairs(4)
    frame.to_parquet(tmp_path / "data" / "relevance" / "val" / "part-0.parquet")
    gate = Gate(from_dict(StreamConfig, {"data_dir": str(tmp_path / "data"), "gate": {"original_queries": 4}}),
                modeling.TINY_BACKBONE)
    products = [{"product_id": f"p{i}", "category": "home" if i < 4 else "fashion", "brand": f"b{i}", "colour": "red",
                 "material": "pine"} for i in range(6)]
    catalog = catalog_for(products, ClickModelConfig())
    snap = Snapshot(offset=10, epoch=0, ts=0.0, enabled=True, effects=(("home|brand=b1", 0.3),), max_boost=0.8,
                    max_penalty=0.5, segment_top_n=10, boost_min_score=0.5)
    # every query's pool holds p0..p5, mostly home: each query's segment is home, and p1 is in it
    assert gate.touched_queries(snap, catalog) == frozenset(frame["query_id"].unique())
    off = Snapshot(offset=10, epoch=1, ts=0.0, enabled=False, effects=snap.effects, max_boost=0.8, max_penalty=0.5,
                   segment_top_n=10)
    assert gate.touched_queries(off, catalog) == frozenset()


def _gate(tmp_path, tolerance=0.02, min_mean_change=0.0):
    (tmp_path / "data" / "relevance" / "val").mkdir(parents=True, exist_ok=True)
    _relevance_pairs(8).to_parquet(tmp_path / "data" / "relevance" / "val" / "part-0.parquet")
    return Gate(from_dict(StreamConfig, {"data_dir": str(tmp_path / "data"), "registry": str(tmp_path / "registry"),
                                         "gate": {"original_queries": 8, "min_holdout_lists": 1, "tolerance": tolerance,
                                                  "min_mean_change": min_mean_change}}), modeling.TINY_BACKBONE)


def test_a_candidate_measured_no_better_is_not_promoted_within_the_tolerance(tmp_path):
    """Two random versions: within a tolerance of 1.0 either may follow the other, but only the one
    whose mean change over every judged query (original set and fresh lists pooled) is >= 0."""
    registry = AdapterRegistry(tmp_path / "registry")
    one = _relevance_version(registry, seed=1)
    two = _relevance_version(registry, seed=2, parent_dir=one.path / ADAPTER_DIR)
    fresh = _relevance_pairs(3)
    gate = _gate(tmp_path, tolerance=1.0)
    _, _, m = gate.decide(one, two, fresh)
    assert m["judged_queries"] == 8 + 3 and m["judged_mean_change"] != 0.0
    expected = np.mean(list(gate._original_changes(two, one, frozenset()))
                       + [gate.ndcg_by_query(two, fresh)[q] - gate.ndcg_by_query(one, fresh)[q] for q in
                          gate.ndcg_by_query(one, fresh)])
    assert m["judged_mean_change"] == pytest.approx(expected, abs=1e-4)
    worse, better = (two, one) if m["judged_mean_change"] < 0 else (one, two)
    ok, reason, m = gate.decide(better, worse, fresh)  # the candidate loses on balance, within the tolerance
    assert not ok and reason.startswith("no gain: mean nDCG@10 change -") and "over the 11 judged queries" in reason
    ok, reason, m = gate.decide(worse, better, fresh)
    assert ok and m["judged_mean_change"] > 0 and "no regression" in reason
    ok, _, _ = _gate(tmp_path, tolerance=1.0, min_mean_change=None).decide(better, worse, fresh)
    assert ok  # off: the tolerance alone decides


def _copy_version(registry, source, lineage):
    model, meta = modeling.load_adapter(source.path / ADAPTER_DIR)
    return registry.create_version("relevance", lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                   config={}, metrics={}, lineage=lineage)


def test_the_gate_passes_a_good_candidate_and_rejects_a_degraded_one_with_its_reason(tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    parent = _relevance_version(registry, seed=1)
    same = _copy_version(registry, parent, {"trigger": "stream"})  # as good as CURRENT
    gate = _gate(tmp_path)
    ok, reason, m = gate.decide(parent, same, _relevance_pairs(3), anchor=parent)
    assert ok and m["original_change_current"] == 0.0 and "no regression" in reason
    # degraded: the head inverted, so what was ranked first comes last
    model, meta = modeling.load_adapter(parent.path / ADAPTER_DIR)
    with torch.no_grad():
        model.head[1].weight.mul_(-1.0)
    bad = registry.create_version("relevance", lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR),
                                  config={}, metrics={}, lineage={"trigger": "stream"})
    ok, reason, m = gate.decide(parent, bad, _relevance_pairs(3), anchor=parent)
    assert not ok and m["original_change_current"] < -0.02
    assert reason.startswith("original-set nDCG@10") and "fresh held-out nDCG@10" in reason


def test_the_offline_anchor_rule_fires_when_small_losses_add_up(tmp_path):
    """Each candidate within the tolerance of its parent, the chain beyond it from the offline adapter."""
    registry = AdapterRegistry(tmp_path / "registry")
    offline = _relevance_version(registry, seed=1)
    gate = _gate(tmp_path, tolerance=0.0)
    drifted = _relevance_version(registry, seed=2, parent_dir=offline.path / ADAPTER_DIR)
    change = gate.original_change(drifted, offline)
    assert change != 0.0
    worse, better = (drifted, offline) if change < 0 else (offline, drifted)
    gate.tolerance = abs(change) / 2
    copy = _copy_version(registry, worse, {"trigger": "stream"})
    ok, reason, m = gate.decide(worse, copy, _relevance_pairs(3), anchor=better)
    assert m["original_change_current"] == 0.0  # no loss against its parent...
    assert not ok and f"< offline {better.model_id}" in reason  # ...but the anchor holds the line
