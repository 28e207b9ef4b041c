"""Unit tests for the seeded synthetic catalog / query / judgement generator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_pipelines import _catalog_vocab as V
from data_pipelines.catalog import (
    CONSTRAINT_KEYS,
    JUDGEMENT_COLUMNS,
    NO_COLOUR,
    NOISE_TYPES,
    PRODUCT_COLUMNS,
    QUERY_COLUMNS,
    Catalog,
    GradeIndex,
    content_tokens,
    generate_catalog,
    grade,
    lexical_stats,
    main,
    read_catalog,
    write_catalog,
)

SMALL = dict(n_products=400, n_queries=80, candidates_per_query=30)


@pytest.fixture(scope="module")
def small() -> Catalog:
    return generate_catalog(seed=7, **SMALL)


@pytest.fixture(scope="module")
def default() -> Catalog:
    return generate_catalog()


# ------------------------------------------------------------------ schema
def test_schema_and_dtypes(small):
    p, q, j = small.products, small.queries, small.judgements
    assert tuple(p.columns) == PRODUCT_COLUMNS
    assert tuple(q.columns) == QUERY_COLUMNS
    assert tuple(j.columns) == JUDGEMENT_COLUMNS
    for df in (p, q, j):
        for col in df.columns:
            if col not in ("price", "grade"):
                assert pd.api.types.is_string_dtype(df[col]), col
                assert df[col].notna().all() and (df[col].str.len() > 0).all(), col
    assert p["price"].dtype == np.float64 and (p["price"] > 0).all()
    assert pd.api.types.is_integer_dtype(j["grade"])
    assert len(p) == 400 and len(q) == 80


def test_ids_unique_and_formatted(small):
    p, q, j = small.products, small.queries, small.judgements
    assert p["product_id"].is_unique and q["query_id"].is_unique
    assert p["product_id"].str.fullmatch(r"P\d{5}").all()
    assert q["query_id"].str.fullmatch(r"Q\d{4}").all()
    assert p["product_id"].iloc[0] == "P00001" and q["query_id"].iloc[0] == "Q0001"
    assert set(j["query_id"]) == set(q["query_id"])
    assert set(j["product_id"]) <= set(p["product_id"])


def test_product_fields_consistent(small):
    p = small.products
    assert p["category"].isin(V.CATEGORIES).all()
    assert p["product_type"].isin(V.TYPES).all()
    assert (p["product_type"].map(lambda t: V.TYPES[t].category) == p["category"]).all()
    coloured = p["product_type"].map(lambda t: V.TYPES[t].coloured)
    assert p.loc[coloured, "colour"].isin(V.COLOUR_FAMILY).all()
    assert (p.loc[~coloured, "colour"] == NO_COLOUR).all() and (~coloured).any()
    expected = ("brand: " + p["brand"] + "; colour: " + p["colour"] + "; material: "
                + p["material"] + "; size: " + p["size"])
    assert (p["attributes"] == expected).all()
    assert p["category"].nunique() >= 8


def test_judgements_unique_and_graded(small):
    j = small.judgements
    assert not j.duplicated(["query_id", "product_id"]).any()
    assert set(j["grade"].unique()) <= {0, 1, 2}
    assert set(j["grade"].unique()) == {0, 1, 2}
    per_query = j.groupby("query_id").size()
    assert (per_query <= SMALL["candidates_per_query"]).all()
    assert (per_query == SMALL["candidates_per_query"]).mean() > 0.9


def test_every_query_has_a_relevant_item(small):
    best = small.judgements.groupby("query_id")["grade"].max()
    assert (best >= 1).all()
    assert (best == 2).mean() > 0.8  # most intents are built from a real listing
    assert small.stats["n_queries"] == len(small.queries) == SMALL["n_queries"]


def test_dropped_queries_counts_the_sampled_intents_no_product_satisfies(monkeypatch):
    """`dropped_queries` is the number of sampled intents that no product grades above 0, recounted
    here with the public grade() over every product for each intent the generator sampled. An intent
    is anchored on one listing whose type it accepts, so that listing grades >= 1 and the count is 0:
    every attempt yields a query, and no more attempts are made than queries requested."""
    sampled = []
    vectorised = GradeIndex.grades

    def recording(self, c):
        sampled.append(json.loads(json.dumps(c)))
        return vectorised(self, c)

    monkeypatch.setattr(GradeIndex, "grades", recording)
    catalog = generate_catalog(seed=7, **SMALL)
    products = catalog.products.to_dict("records")
    unsatisfiable = sum(max(grade(c, p) for p in products) == 0 for c in sampled)
    assert catalog.stats["dropped_queries"] == unsatisfiable == 0
    assert len(sampled) == catalog.stats["n_queries"] + catalog.stats["dropped_queries"] == SMALL["n_queries"]


def test_queries_constraints_and_noise(small):
    for row in small.queries.itertuples():
        c = json.loads(row.constraints)
        noise = json.loads(row.noise)
        assert tuple(c) == CONSTRAINT_KEYS
        assert set(noise) <= set(NOISE_TYPES) and len(noise) == len(set(noise))
        assert (c["product_type"] is None) == (c["hypernym"] is not None)
        assert ("hypernym" in noise) == (c["hypernym"] is not None)
        n_attr = sum(c[k] is not None for k in
                     ("colour_family", "brand", "material_family", "size", "price_max"))
        expected = {"broad": {0}, "medium": {1}, "specific": {2, 3}}[row.specificity]
        assert n_attr in expected, (row.text, c)
        if "misspelling" not in noise and c["brand"] is not None:
            assert c["brand"].lower() in row.text.lower()


def test_vocabulary_is_consistent():
    for t in V.TYPES.values():
        assert t.category in V.CATEGORIES
        assert set(t.related) <= set(V.TYPES) and t.name not in t.related, t.name
        assert t.titles and t.query_names and t.materials and t.sizes
        assert not t.coloured or set(V.PALETTES[t.palette]) <= set(V.COLOUR_FAMILY), t.name
    for h, members in V.HYPERNYMS.items():
        assert members and set(members) <= set(V.TYPES), h
        assert len({V.TYPES[m].category for m in members}) == 1, h
    names = [b for c in V.CATEGORIES.values() for b, _ in c.brands]
    assert len(names) == len(set(names))


# ------------------------------------------------------------------ grading
def test_grade_agrees_with_every_judgement(small):
    products = small.products.set_index("product_id", drop=False)
    records = {pid: r for pid, r in zip(products.index, products.to_dict("records"))}
    intents = {qid: json.loads(c) for qid, c in zip(small.queries["query_id"],
                                                     small.queries["constraints"])}
    got = [grade(intents[q], records[p]) for q, p in
           zip(small.judgements["query_id"], small.judgements["product_id"])]
    assert got == small.judgements["grade"].tolist()


def test_vectorised_grading_matches_grade(small):
    rows = small.products.to_dict("records")
    index = GradeIndex(rows)
    for c in small.queries["constraints"].head(25):
        intent = json.loads(c)
        assert index.grades(intent).tolist() == [grade(intent, r) for r in rows]


def _product(**kw):
    base = dict(product_type="running shoes", category="footwear", brand="Acme", colour="cobalt",
                material="mesh", size="10", price=79.99)
    return {**base, **kw}


def test_grade_rules_by_hand():
    c = {"product_type": "running shoes", "colour_family": "blue", "price_max": 80}
    assert grade(c, _product()) == 2  # cobalt is in the blue family, 79.99 <= 80
    assert grade(c, _product(colour="navy")) == 2
    assert grade(c, _product(colour="burgundy")) == 1  # right type, wrong colour
    assert grade(c, _product(price=80.01)) == 1
    assert grade(c, _product(product_type="walking shoes")) == 1  # related type, attrs ok
    assert grade(c, _product(product_type="walking shoes", colour="red")) == 0
    assert grade(c, _product(product_type="sandals")) == 0
    assert grade(c, _product(product_type="yoga mat", category="sports & outdoors")) == 0
    assert grade({"product_type": "t-shirt", "brand": "acme"}, _product(
        product_type="t-shirt", category="tops", brand="Acme")) == 2  # brand case-insensitive
    wool = {"product_type": "beanie", "material_family": "wool"}
    assert grade(wool, _product(product_type="beanie", category="accessories",
                                material="merino wool")) == 2
    assert grade(wool, _product(product_type="beanie", category="accessories",
                                material="acrylic")) == 1
    boots = {"hypernym": "boots", "colour_family": "black"}
    assert grade(boots, _product(product_type="hiking boots", colour="onyx")) == 2
    assert grade(boots, _product(product_type="hiking boots", colour="tan")) == 1
    assert grade(boots, _product(product_type="sandals", colour="black")) == 1  # same category
    assert grade(boots, _product(product_type="sandals", colour="tan")) == 0
    assert grade(boots, _product(product_type="beanie", category="accessories",
                                 colour="black")) == 0


def test_grade_accepts_pandas_rows(small):
    row = small.products.iloc[0]
    c = {"product_type": row["product_type"], "brand": row["brand"], "size": row["size"]}
    assert grade(c, row) == 2


# ------------------------------------------------------------------ determinism
def test_same_seed_identical_different_seed_differs(small):
    again = generate_catalog(seed=7, **SMALL)
    for name in ("products", "queries", "judgements"):
        pd.testing.assert_frame_equal(getattr(small, name), getattr(again, name))
    assert again.stats == small.stats
    other = generate_catalog(seed=8, **SMALL)
    assert not other.products.equals(small.products)
    assert not other.queries.equals(small.queries)


def test_default_size_deterministic(default):
    again = generate_catalog(seed=0)
    for name in ("products", "queries", "judgements"):
        pd.testing.assert_frame_equal(getattr(default, name), getattr(again, name))
    assert len(default.products) == 3000 and len(default.queries) == 600
    assert len(default.judgements) == 600 * 40


def test_does_not_touch_global_random_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    generate_catalog(seed=3, n_products=100, n_queries=10)
    assert (np.random.get_state()[1] == before).all()


# ------------------------------------------------------------------ realism
def test_lexical_mismatch(default):
    s = lexical_stats(default)
    # some grade-2 product shares no content word with the query text
    assert s["queries_exact_no_shared_token_title"] >= 0.35
    assert s["queries_exact_no_shared_token_title_desc"] >= 0.15
    # a good share of the irrelevant judged items *do* share words with the query
    assert s["grade0_share_token_title"] >= 0.3
    # exact matching is far from solving it; knowing synonyms helps
    assert s["ndcg10_random"] < s["ndcg10_bm25"] < 0.85
    assert s["ndcg10_bm25_synonyms"] > s["ndcg10_bm25"] + 0.05


def test_lexical_mismatch_small(small):
    assert lexical_stats(small)["queries_exact_no_shared_token_title"] >= 0.2


def test_pool_contains_hard_negatives(default):
    src = default.stats["pool_sources"]
    assert src["hard_negative"] > 0.1 * default.stats["judgements"]
    assert src["random_negative"] > 0
    assert sum(src.values()) == len(default.judgements)
    j = default.judgements.merge(default.queries[["query_id", "text"]], on="query_id")
    titles = dict(zip(default.products["product_id"], default.products["title"]))
    neg = j[j["grade"] == 0]
    share = [bool(content_tokens(t) & content_tokens(titles[p]))
             for t, p in zip(neg["text"], neg["product_id"])]
    assert np.sum(share) >= src["hard_negative"]  # every hard negative shares a word


def test_noise_and_specificity_mix(default):
    n = len(default.queries)
    noise = default.stats["noise_counts"]
    assert 0.08 <= noise["misspelling"] / n <= 0.18
    assert noise["synonym"] / n >= 0.25
    for kind in ("hypernym", "colour_family", "colour_variant", "material_family", "word_order",
                 "dropped_word", "filler", "lowercase"):
        assert noise[kind] > 0, kind
    spec = default.queries["specificity"].value_counts(normalize=True)
    assert set(spec.index) == {"broad", "medium", "specific"} and spec.min() > 0.2


def test_price_spread_per_type(default):
    q = default.products.groupby("product_type")["price"].quantile([0.1, 0.9]).unstack()
    assert (q[0.9] / q[0.1] > 1.4).mean() > 0.9
    med = default.products.groupby("product_type")["price"].median()
    assert med["screen protector"] < med["running shoes"] < med["parka"]


# ------------------------------------------------------------------ io + cli
def test_write_read_round_trip(small, tmp_path):
    paths = write_catalog(small, tmp_path / "cat")
    assert set(paths) == {"products", "queries", "judgements"}
    assert all(p.exists() and p.suffix == ".parquet" for p in paths.values())
    back = read_catalog(tmp_path / "cat")
    for name in ("products", "queries", "judgements"):
        pd.testing.assert_frame_equal(getattr(small, name), getattr(back, name))
    assert back.stats == small.stats


@pytest.mark.parametrize("argv", [["--n-products", "10"], ["--n-queries", "0"],
                                  ["--seed", "-1"], ["--seed", "abc"],
                                  ["--candidates-per-query", "1"]])
def test_cli_rejects_bad_arguments(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), *argv])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1 and "error" in err
    assert not (tmp_path / "x").exists()


def test_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["--out", str(out), "--seed", "1", "--n-products", "120", "--n-queries", "12",
                 "--candidates-per-query", "10"]) == 0
    assert "120 products, 12 queries" in capsys.readouterr().out
    assert len(read_catalog(out).judgements) == 120


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_products"):
        generate_catalog(n_products=49)
    with pytest.raises(ValueError, match="candidates_per_query"):
        generate_catalog(n_products=60, candidates_per_query=61)
