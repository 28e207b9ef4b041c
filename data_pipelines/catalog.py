"""Seeded synthetic e-commerce search-relevance data: a product catalog, shopper
queries written with realistic vocabulary mismatch, and graded judgements.

There is no public search-relevance set we can ship, so Aisle makes its own.
Each query carries a hidden structured intent (``constraints``); ``grade`` turns
intent + product attributes into the true relevance (0 irrelevant, 1 partial,
2 exact).  The query *text* is a noisy surface form of that intent (synonyms,
hypernyms, colour/material words from the same family, misspellings, word order),
so exact word matching does not solve the task.  See docs/catalog.md.

This module assembles and stores a catalog; its parts live in files of one idea each: the
vocabulary (`_catalog_vocab`), products (`catalog_products`), queries and judging pools
(`catalog_queries`), the relevance truth (`catalog_grades`), lexical diagnostics (`catalog_lexical`).

    python -m data_pipelines.catalog --out data/generated/catalog --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .catalog_grades import GradeIndex, grade
from .catalog_lexical import lexical_stats
from .catalog_products import NO_COLOUR, PRODUCT_COLUMNS, content_tokens, make_products
from .catalog_queries import (CONSTRAINT_KEYS, NOISE_TYPES, QUERY_COLUMNS, SPECIFICITIES, judging_pool, realise,
                              sample_intent)

__all__ = ["Catalog", "generate_catalog", "write_catalog", "read_catalog", "grade", "lexical_stats",
           "content_tokens", "GradeIndex", "PRODUCT_COLUMNS", "QUERY_COLUMNS", "JUDGEMENT_COLUMNS",
           "CONSTRAINT_KEYS", "SPECIFICITIES", "NOISE_TYPES", "NO_COLOUR", "main"]

log = logging.getLogger(__name__)

JUDGEMENT_COLUMNS = ("query_id", "product_id", "grade")
MIN_PRODUCTS = 50
_STATS_KEY = b"aisle.catalog.stats"


@dataclass(frozen=True, eq=False)
class Catalog:
    """Products, queries and judgements.  ``stats`` holds generation counts
    (dropped queries, pool composition, ...); it is not part of equality."""

    products: pd.DataFrame
    queries: pd.DataFrame
    judgements: pd.DataFrame
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------ public API
def _validate(seed, n_products, n_queries, candidates_per_query) -> None:
    for name, v in (("seed", seed), ("n_products", n_products), ("n_queries", n_queries),
                    ("candidates_per_query", candidates_per_query)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_products < MIN_PRODUCTS:
        raise ValueError(f"n_products must be >= {MIN_PRODUCTS}, got {n_products}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if not 2 <= candidates_per_query <= n_products:
        raise ValueError(f"candidates_per_query must be in [2, n_products], got {candidates_per_query}")


def generate_catalog(seed: int = 0, n_products: int = 3000, n_queries: int = 600,
                     candidates_per_query: int = 40) -> Catalog:
    """Deterministic for a given seed (numpy default_rng only, no global state)."""
    _validate(seed, n_products, n_queries, candidates_per_query)
    rng = np.random.default_rng(seed)
    products, lines = make_products(rng, n_products)
    rows = products.to_dict("records")
    index = GradeIndex(rows)
    postings: dict[str, list[int]] = {}
    for i, title in enumerate(products["title"]):
        for tok in content_tokens(title):
            postings.setdefault(tok, []).append(i)
    post = {k: np.array(v) for k, v in postings.items()}
    pids = products["product_id"].to_numpy()

    width = max(4, len(str(n_queries)))
    q_rows, j_q, j_p, j_g = [], [], [], []
    sources = dict.fromkeys(("exact", "partial", "hard_negative", "random_negative"), 0)
    dropped = off_catalog = no_exact = attempts = 0
    while len(q_rows) < n_queries and attempts < 3 * n_queries:
        attempts += 1
        spec = SPECIFICITIES[int(rng.choice(3, p=[0.3, 0.4, 0.3]))]
        prod = rows[int(rng.integers(n_products))]
        c, off = sample_intent(rng, prod, spec, lines)
        text, noise = realise(rng, c, prod)
        g = index.grades(c)
        if g.max() == 0:
            dropped += 1
            continue
        overlap = np.zeros(n_products, dtype=np.int64)
        for tok in content_tokens(text):
            if tok in post:
                overlap[post[tok]] += 1
        pool = judging_pool(rng, g, overlap, candidates_per_query)
        qid = f"Q{len(q_rows) + 1:0{width}d}"
        members = np.sort(np.concatenate(list(pool.values())))
        for i in members:
            j_q.append(qid)
            j_p.append(pids[i])
            j_g.append(grade(c, rows[i]))  # the public function is the source of truth
        for k, v in pool.items():
            sources[k] += len(v)
        off_catalog += off
        no_exact += int((g == 2).sum() == 0)
        q_rows.append({"query_id": qid, "text": text, "specificity": spec,
                       "constraints": json.dumps(c), "noise": json.dumps(noise)})
    if dropped:
        log.info("dropped %d queries with no relevant product", dropped)
    queries = pd.DataFrame(q_rows, columns=list(QUERY_COLUMNS))
    judgements = pd.DataFrame({"query_id": j_q, "product_id": j_p,
                               "grade": np.array(j_g, dtype=np.int64)})
    noise_counts = pd.Series([n for s in queries["noise"] for n in json.loads(s)]).value_counts()
    stats = {
        "seed": int(seed), "n_products": int(n_products), "n_queries": len(queries),
        "candidates_per_query": int(candidates_per_query), "dropped_queries": dropped,
        "queries_without_exact_match": no_exact, "off_catalog_intents": off_catalog,
        "judgements": len(judgements), "pool_sources": sources,
        "grade_counts": {str(k): int((judgements["grade"] == k).sum()) for k in (0, 1, 2)},
        "specificity_counts": {s: int((queries["specificity"] == s).sum()) for s in SPECIFICITIES},
        "noise_counts": {n: int(noise_counts.get(n, 0)) for n in NOISE_TYPES},
    }
    return Catalog(products, queries, judgements, stats)


def write_catalog(catalog: Catalog, out_dir: str | Path) -> dict[str, Path]:
    """Write products/queries/judgements.parquet (stats kept in schema metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("products", "queries", "judgements"):
        table = pa.Table.from_pandas(getattr(catalog, name), preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_STATS_KEY] = json.dumps(catalog.stats).encode()
        paths[name] = out / f"{name}.parquet"
        pq.write_table(table.replace_schema_metadata(meta), paths[name])
    return paths


def read_catalog(out_dir: str | Path) -> Catalog:
    import pyarrow.parquet as pq

    out = Path(out_dir)
    frames = {n: pd.read_parquet(out / f"{n}.parquet") for n in ("products", "queries", "judgements")}
    meta = pq.read_schema(out / "products.parquet").metadata or {}
    stats = json.loads(meta[_STATS_KEY]) if _STATS_KEY in meta else {}
    return Catalog(frames["products"], frames["queries"], frames["judgements"], stats)


# ------------------------------------------------------------------ CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m data_pipelines.catalog",
                     description="Generate the synthetic catalog / queries / judgements.")
    parser.add_argument("--out", default="data/generated/catalog", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-products", type=int, default=3000)
    parser.add_argument("--n-queries", type=int, default=600)
    parser.add_argument("--candidates-per-query", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        _validate(args.seed, args.n_products, args.n_queries, args.candidates_per_query)
    except ValueError as e:
        parser.error(str(e).replace("n_products", "--n-products").replace(
            "n_queries", "--n-queries").replace("candidates_per_query", "--candidates-per-query"))
    cat = generate_catalog(args.seed, args.n_products, args.n_queries, args.candidates_per_query)
    paths = write_catalog(cat, args.out)
    s = cat.stats
    print(f"wrote {len(cat.products)} products, {len(cat.queries)} queries, "
          f"{len(cat.judgements)} judgements (grades 0/1/2: {s['grade_counts']['0']}/"
          f"{s['grade_counts']['1']}/{s['grade_counts']['2']}; dropped queries: "
          f"{s['dropped_queries']}) to {paths['products'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
