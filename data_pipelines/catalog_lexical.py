"""How far exact word matching gets on a generated catalog: shared-token rates and BM25 nDCG@10,
with and without the vocabulary's synonyms (the diagnostics docs/catalog.md reports)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from . import _catalog_vocab as V
from .catalog_products import TOKEN_RE, content_tokens

if TYPE_CHECKING:
    from .catalog import Catalog


def _expansions() -> dict[tuple[str, ...], set[str]]:
    """Phrase -> tokens of every name for the same thing (a 'knows synonyms' proxy)."""
    groups: list[list[str]] = []
    for t in V.TYPES.values():
        groups.append([*t.titles, *t.query_names, *t.synonyms])
    for h, members in V.HYPERNYMS.items():
        groups.append([*V.HYPERNYM_WORDS[h]] + [n for m in members for n in V.TYPES[m].titles])
    for fam, ws in V.COLOUR_FAMILIES.items():
        groups.append([*ws, *V.FAMILY_QUERY_WORDS[fam]])
    for fam, ws in V.MATERIAL_FAMILIES.items():
        groups.append([fam, *ws])
    table: dict[tuple[str, ...], set[str]] = {}
    for grp in groups:
        toks = set().union(*(content_tokens(p) for p in grp))
        for phrase in grp:
            key = tuple(TOKEN_RE.findall(phrase.lower()))
            if key:
                table.setdefault(key, set()).update(toks)
    return table


def _expand(text: str, table, max_len: int) -> dict[str, float]:
    toks = TOKEN_RE.findall(str(text).lower())
    weights = {t: 1.0 for t in content_tokens(text)}
    i = 0
    while i < len(toks):
        for n in range(min(max_len, len(toks) - i), 0, -1):
            if tuple(toks[i:i + n]) in table:
                for t in table[tuple(toks[i:i + n])]:
                    weights.setdefault(t, 0.5)
                i += n
                break
        else:
            i += 1
    return weights


def lexical_stats(catalog: Catalog, k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
    """How far exact word matching gets (see docs/catalog.md).

    - queries_exact_no_shared_token_title / _title_desc: fraction of queries where some
      judged grade-2 product shares no content token with the query text.
    - exact_items_no_shared_token_title: same, per judged grade-2 item.
    - grade0_share_token_title: fraction of judged grade-0 items sharing >= 1 token.
    - ndcg10_bm25 / ndcg10_bm25_synonyms / ndcg10_random: ranking each query's pool
      with BM25 over title+description, BM25 with vocabulary-based query expansion,
      and random order (mean of 20 shuffles).
    """
    p = catalog.products
    title_tok = dict(zip(p["product_id"], (content_tokens(x) for x in p["title"])))
    docs = {pid: TOKEN_RE.findall(f"{t} {d}".lower())
            for pid, t, d in zip(p["product_id"], p["title"], p["description"])}
    df: dict[str, int] = {}
    for toks in docs.values():
        for t in set(toks):
            df[t] = df.get(t, 0) + 1
    n_docs, avgdl = len(docs), np.mean([len(x) for x in docs.values()])
    idf = {t: math.log(1 + (n_docs - v + 0.5) / (v + 0.5)) for t, v in df.items()}
    table = _expansions()
    max_len = max(len(k) for k in table)
    rng = np.random.default_rng(0)
    texts = dict(zip(catalog.queries["query_id"], catalog.queries["text"]))
    q_any, q_any_td, ex_items, ex_none, neg_items, neg_share = 0, 0, 0, 0, 0, 0
    nd = {"bm25": [], "bm25_synonyms": [], "random": []}

    def ndcg(gains: np.ndarray, order: np.ndarray) -> float:
        disc = 1 / np.log2(np.arange(2, 12))
        ideal = (2.0 ** np.sort(gains)[::-1][:10] - 1) @ disc[: min(10, len(gains))]
        got = (2.0 ** gains[order][:10] - 1) @ disc[: min(10, len(gains))]
        return float(got / ideal) if ideal > 0 else 0.0

    for qid, grp in catalog.judgements.groupby("query_id", sort=True):
        q = content_tokens(texts[qid])
        pids, gains = grp["product_id"].to_numpy(), grp["grade"].to_numpy()
        shared = np.array([bool(q & title_tok[x]) for x in pids])
        shared_td = np.array([bool(q & set(docs[x])) for x in pids])
        ex = gains == 2
        q_any += bool((ex & ~shared).any())
        q_any_td += bool((ex & ~shared_td).any())
        ex_items += int(ex.sum())
        ex_none += int((ex & ~shared).sum())
        neg_items += int((gains == 0).sum())
        neg_share += int(((gains == 0) & shared).sum())
        for name, w in (("bm25", {t: 1.0 for t in q}),
                        ("bm25_synonyms", _expand(texts[qid], table, max_len))):
            scores = np.zeros(len(pids))
            for j, x in enumerate(pids):
                tf: dict[str, int] = {}
                for t in docs[x]:
                    if t in w:
                        tf[t] = tf.get(t, 0) + 1
                dl = len(docs[x])
                scores[j] = sum(w[t] * idf[t] * f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avgdl))
                                for t, f in tf.items())
            nd[name].append(ndcg(gains, np.argsort(-scores, kind="stable")))
        nd["random"].append(np.mean([ndcg(gains, rng.permutation(len(gains))) for _ in range(20)]))
    nq = max(1, catalog.judgements["query_id"].nunique())
    return {
        "queries_exact_no_shared_token_title": q_any / nq,
        "queries_exact_no_shared_token_title_desc": q_any_td / nq,
        "exact_items_no_shared_token_title": ex_none / max(1, ex_items),
        "grade0_share_token_title": neg_share / max(1, neg_items),
        **{f"ndcg10_{k}": float(np.mean(v)) if v else 0.0 for k, v in nd.items()},
    }
