"""Unit tests of the drift scenarios (data_pipelines.drift): each kind moves the truth only where it
applies, specs load from configs/drift/, and held-out queries share no text or intent with the
shoppers' pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import ConfigError
from core.text import dedupe_key, normalize_text
from data_pipelines.catalog import generate_catalog, grade, write_catalog
from data_pipelines.drift import (
    DRIFT_KINDS,
    Drift,
    DriftSpec,
    hold_out_queries,
    load_drift,
    pick_trend,
    resolve,
    true_grade,
)
from data_pipelines.simulator import ShopperSimulator, main

SPECS = Path(__file__).resolve().parents[2] / "configs" / "drift"


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog(seed=0, n_products=400, n_queries=120)


def shoe(brand="Acme", colour="navy", material="mesh", ptype="running shoes", category="footwear") -> dict:
    return {"product_type": ptype, "category": category, "brand": brand, "colour": colour, "material": material,
            "size": "10", "price": 80.0}


def test_attribute_trend_by_hand():
    drift = Drift(kind="attribute_trend", category="footwear", attribute="colour", value="blue")
    assert drift.name == "blue colour trend in footwear"
    want = {"product_type": "running shoes"}
    cases = [(shoe(colour="navy"), 2, 2),                          # blue family, exact: stays 2
             (shoe(colour="cobalt", ptype="walking shoes"), 1, 2),  # blue family, near type: gains
             (shoe(colour="red"), 2, 1),                           # other colour, exact: drops
             (shoe(colour="red", ptype="walking shoes"), 1, 1),
             (shoe(colour="navy", ptype="t-shirt", category="tops"), 0, 0)]
    for product, base, drifted in cases:
        assert grade(want, product) == base
        assert true_grade(want, product, drift) == drifted
    assert true_grade({**want, "colour_family": "red"}, shoe(colour="red"), drift) == 2  # names a colour
    material = Drift(kind="attribute_trend", category="footwear", attribute="material", value="knit")
    assert true_grade(want, shoe(material="knit"), material) == 2
    assert true_grade(want, shoe(material="mesh"), material) == 1
    strong = Drift(kind="attribute_trend", category="footwear", attribute="colour", value="navy", strength=2)
    assert true_grade(want, shoe(colour="red"), strong) == 0


def test_fading_line_by_hand():
    drift = Drift(kind="fading_line", category="footwear", brand="Acme")
    assert drift.name == "Acme fading in footwear"
    want = {"product_type": "running shoes"}
    assert true_grade(want, shoe("Acme"), drift) == 1
    assert true_grade(want, shoe("Acme", ptype="walking shoes"), drift) == 0
    assert true_grade(want, shoe("Strivo"), drift) == 2  # others keep their grade
    assert true_grade({**want, "brand": "Acme"}, shoe("Acme"), drift) == 2  # asked for it by name
    assert true_grade(want, shoe("Acme"), Drift(kind="fading_line", category="footwear", brand="Acme", strength=2)) == 0


@pytest.mark.parametrize("bad, message", [
    ({"kind": "price_shock", "category": "footwear", "brand": "Acme"}, "kind"),
    ({"kind": "attribute_trend", "category": "footwear", "attribute": "size", "value": "10"}, "attribute"),
    ({"kind": "fading_line", "category": "footwear"}, "brand"),
    ({"category": "footwear", "brand": "Acme", "strength": 3}, "strength"),
])
def test_a_drift_that_cannot_mean_anything_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        Drift(**bad)


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_each_kind_moves_the_truth_only_where_it_applies(catalog, kind):
    drift = load_drift(SPECS / f"{kind}.yaml", catalog, seed=0)
    assert drift.kind == kind
    sim = ShopperSimulator(catalog, drift=drift)
    affected = set(sim.affected_queries())
    assert affected
    constraints = {q: json.loads(c) for q, c in zip(catalog.queries["query_id"], catalog.queries["constraints"])}
    products = {r["product_id"]: r for r in catalog.products.to_dict("records")}
    moved = 0
    for qid, group in catalog.judgements.groupby("query_id"):
        pids, base = list(group["product_id"]), list(group["grade"])
        truth = sim.truth(qid, pids)
        if qid not in affected:
            assert truth == base
            continue
        assert drift.applies(constraints[qid])
        for pid, b, t in zip(pids, base, truth):
            favoured = drift.matches(products[pid])
            if kind == "fading_line":
                assert t == (b - 1 if favoured and b else b)
            elif favoured:
                assert t == (2 if b else 0)
            else:
                assert t == min(b, 1)
            moved += t != b
    assert moved >= len(affected)  # every affected query has something that moved, on average


def test_the_brand_trend_spec_is_todays_trend(catalog):
    assert load_drift(SPECS / "brand_trend.yaml", catalog, seed=1) == pick_trend(catalog, seed=1)
    assert pick_trend(catalog, seed=0) == Drift(category="tops", brand="Undyed")  # as before the drift module


def test_specs_are_typed_and_may_name_where_they_apply(catalog, tmp_path):
    named = resolve(DriftSpec(kind="attribute_trend", category="footwear", attribute="material", value="knit",
                              start_s=90.0), catalog)
    assert (named.category, named.value, named.start_s) == ("footwear", "knit", 90.0)
    assert not named.started(89.0) and named.started(90.0)
    picked = resolve(DriftSpec(kind="fading_line", category="footwear"), catalog, seed=2)
    assert picked.category == "footwear" and picked.brand
    spec = tmp_path / "typo.yaml"
    spec.write_text("kind: brand_trend\nstrenght: 2\n")
    with pytest.raises(ConfigError, match="unknown config key 'strenght'"):
        load_drift(spec, catalog)
    with pytest.raises(ConfigError, match="kind"):
        load_drift(SPECS / "brand_trend.yaml", catalog, overrides=["kind=price_shock"])
    assert load_drift(SPECS / "fading_line.yaml", catalog, overrides=["strength=2"]).strength == 2


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_held_out_queries_share_no_text_or_intent_with_the_shoppers(catalog, kind):
    sim = ShopperSimulator(catalog, seed=3, drift=load_drift(SPECS / f"{kind}.yaml", catalog))
    held = hold_out_queries(catalog, sim.affected_queries())
    assert held.evaluation and set(held.evaluation) <= set(sim.affected_queries()) <= set(catalog.queries["query_id"])
    sim.hold_out(held.excluded)
    text = dict(zip(catalog.queries["query_id"], (dedupe_key(normalize_text(t)) for t in catalog.queries["text"])))
    intent = dict(zip(catalog.queries["query_id"],
                      (json.dumps(json.loads(c), sort_keys=True) for c in catalog.queries["constraints"])))
    pool = [q for q in catalog.queries["query_id"] if q not in set(held.excluded)]
    assert {text[q] for q in pool}.isdisjoint(text[q] for q in held.evaluation)
    assert {intent[q] for q in pool}.isdisjoint(intent[q] for q in held.evaluation)
    searched = {sim.next_session().query_id for _ in range(600)}
    assert searched.isdisjoint(held.excluded) and searched


def test_held_out_groups_follow_text_and_intent_links():
    import pandas as pd
    from data_pipelines.catalog import Catalog

    queries = pd.DataFrame({"query_id": ["Q1", "Q2", "Q3", "Q4"],
                            "text": ["Red  Shoes", "red shoes!", "blue hat", "cap"],
                            "constraints": ['{"a": 1}', '{"a": 2}', '{"b": 1}', '{"b": 1}']})
    tiny = Catalog(products=pd.DataFrame(), queries=queries, judgements=pd.DataFrame())
    held = hold_out_queries(tiny, ["Q1", "Q3"], every=1)
    assert held.evaluation == ["Q1", "Q3"] and held.excluded == ["Q1", "Q2", "Q3", "Q4"]
    assert hold_out_queries(tiny, ["Q2"], every=1).excluded == ["Q1", "Q2"]  # same text once normalised
    with pytest.raises(ValueError, match="unknown query"):
        hold_out_queries(tiny, ["Q9"])


def test_cli_takes_a_drift_spec(catalog, tmp_path, capsys):
    write_catalog(catalog, tmp_path / "catalog")
    out = tmp_path / "events.jsonl"
    assert main(["--catalog", str(tmp_path / "catalog"), "--sessions", "20", "--out", str(out),
                 "--drift-spec", str(SPECS / "fading_line.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "drift: " in printed and " fading in " in printed
    with pytest.raises(SystemExit):
        main(["--catalog", str(tmp_path / "catalog"), "--out", str(out), "--drift-spec", str(tmp_path / "none.yaml")])
