"""Seeded synthetic e-commerce search-relevance data: a product catalog, shopper
queries written with realistic vocabulary mismatch, and graded judgements.

There is no public search-relevance set we can ship, so Aisle makes its own.
Each query carries a hidden structured intent (``constraints``); ``grade`` turns
intent + product attributes into the true relevance (0 irrelevant, 1 partial,
2 exact).  The query *text* is a noisy surface form of that intent (synonyms,
hypernyms, colour/material words from the same family, misspellings, word order),
so exact word matching does not solve the task.  See docs/catalog.md.

    python -m data_pipelines.catalog --out data/generated/catalog --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import _catalog_vocab as V

log = logging.getLogger(__name__)

PRODUCT_COLUMNS = ("product_id", "title", "description", "category", "product_type", "brand",
                   "colour", "material", "size", "price", "attributes")
QUERY_COLUMNS = ("query_id", "text", "specificity", "constraints", "noise")
JUDGEMENT_COLUMNS = ("query_id", "product_id", "grade")
CONSTRAINT_KEYS = ("category", "product_type", "hypernym", "accepted_types", "related_types",
                   "colour_family", "brand", "material_family", "size", "price_max")
SPECIFICITIES = ("broad", "medium", "specific")
NOISE_TYPES = ("synonym", "hypernym", "inflection", "colour_family", "colour_variant",
               "material_family", "word_order", "dropped_word", "filler", "misspelling",
               "lowercase")
MIN_PRODUCTS = 50
NO_COLOUR = "n/a"
_STATS_KEY = b"aisle.catalog.stats"
_ACRONYMS = {"pvc", "tpe", "tpu", "eva", "pet", "bpa", "usb", "spf", "uv400"}


@dataclass(frozen=True, eq=False)
class Catalog:
    """Products, queries and judgements.  ``stats`` holds generation counts
    (dropped queries, pool composition, ...); it is not part of equality."""

    products: pd.DataFrame
    queries: pd.DataFrame
    judgements: pd.DataFrame
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------ grading
def _hypernym_category(hypernym: str) -> str | None:
    members = V.HYPERNYMS.get(hypernym, ())
    return V.TYPES[members[0]].category if members else None


def _attributes_match(c: Mapping, product: Mapping) -> bool:
    fam = c.get("colour_family")
    if fam is not None and V.COLOUR_FAMILY.get(str(product["colour"]).lower()) != fam:
        return False
    brand = c.get("brand")
    if brand is not None and str(product["brand"]).casefold() != str(brand).casefold():
        return False
    mat = c.get("material_family")
    if mat is not None and V.material_family(product["material"]) != mat:
        return False
    size = c.get("size")
    if size is not None and str(product["size"]) != str(size):
        return False
    cap = c.get("price_max")
    return cap is None or float(product["price"]) <= float(cap)


def grade(constraints: Mapping, product: Mapping) -> int:
    """True relevance of ``product`` for a query intent; pure function of both.

    2: the type is wanted (``accepted_types``: the product_type, or the members
       of the hypernym class) and every stated attribute matches (colour by
       family, material by family, brand, size, price <= price_max).
    1: wanted type with one or more stated attributes wrong, or a near type
       (``related_types``; for hypernym queries any type of the same category)
       whose stated attributes all match.
    0: everything else.
    ``accepted_types``/``related_types``/``category`` default from the vocabulary
    when missing, so a hand-written {"product_type": "running shoes"} works.
    """
    hyper = constraints.get("hypernym")
    ptype = str(product["product_type"])
    accepted = constraints.get("accepted_types")
    if accepted is None:
        accepted = V.HYPERNYMS.get(hyper, ()) if hyper else (constraints.get("product_type"),)
    if ptype in accepted:
        return 2 if _attributes_match(constraints, product) else 1
    if hyper:
        near = str(product["category"]) == (constraints.get("category")
                                             or _hypernym_category(hyper))
    else:
        related = constraints.get("related_types")
        if related is None:
            spec = V.TYPES.get(constraints.get("product_type"))
            related = spec.related if spec else ()
        near = ptype in related
    return 1 if near and _attributes_match(constraints, product) else 0


class _Index:
    """Integer-coded product attributes for vectorised grading (mirrors grade())."""

    def __init__(self, rows: Sequence[Mapping]):
        self.vocab: dict[str, dict[str, int]] = {}
        get = {"type": lambda r: r["product_type"], "cat": lambda r: r["category"],
               "cfam": lambda r: V.COLOUR_FAMILY.get(r["colour"].lower(), ""),
               "brand": lambda r: r["brand"].casefold(),
               "mfam": lambda r: V.material_family(r["material"]), "size": lambda r: r["size"]}
        for name, fn in get.items():
            voc = self.vocab.setdefault(name, {})
            setattr(self, name, np.array([voc.setdefault(fn(r), len(voc)) for r in rows]))
        self.price = np.array([r["price"] for r in rows], dtype=float)
        self.n = len(rows)

    def _code(self, name: str, value) -> int:
        if name == "brand":
            value = str(value).casefold()
        return self.vocab[name].get(value, -1)

    def grades(self, c: Mapping) -> np.ndarray:
        tv = self.vocab["type"]
        wanted = np.isin(self.type, [tv[t] for t in c["accepted_types"] if t in tv])
        if c.get("hypernym"):
            near = (self.cat == self._code("cat", c["category"])) & ~wanted
        else:
            near = np.isin(self.type, [tv[t] for t in c["related_types"] if t in tv])
        ok = np.ones(self.n, dtype=bool)
        for key, name in (("colour_family", "cfam"), ("brand", "brand"),
                          ("material_family", "mfam"), ("size", "size")):
            if c.get(key) is not None:
                ok &= getattr(self, name) == self._code(name, c[key])
        if c.get("price_max") is not None:
            ok &= self.price <= float(c["price_max"])
        return np.where(wanted, np.where(ok, 2, 1), np.where(near & ok, 1, 0)).astype(np.int64)


# ------------------------------------------------------------------ text helpers
def _pick(seq: Sequence, u: float):
    return seq[min(int(u * len(seq)), len(seq) - 1)]


def _tc(s: str) -> str:
    """Title case for listings, keeping acronyms (PVC, USB-C) upper-case."""
    return " ".join("-".join(p.upper() if p.lower() in _ACRONYMS else p[:1].upper() + p[1:]
                             for p in w.split("-")) for w in s.split(" "))


_TOKEN_RE = re.compile(r"[a-z0-9]+")


def content_tokens(text: str) -> set[str]:
    """Lower-cased alphanumeric tokens minus stop words and single letters (lexical proxy)."""
    return {t for t in _TOKEN_RE.findall(str(text).lower())
            if t not in V.STOPWORDS and (len(t) > 1 or t.isdigit())}


# ------------------------------------------------------------------ products
def _model_name(rng: np.random.Generator) -> str:
    pre = V.MODEL_PREFIXES[rng.integers(len(V.MODEL_PREFIXES))]
    suf = V.MODEL_SUFFIXES[rng.integers(len(V.MODEL_SUFFIXES))]
    r = rng.random()
    if r < 0.5:
        return pre + suf
    return f"{pre} {suf.title()}" if r < 0.8 else f"{pre} {rng.integers(2, 10)}"


def _brand_lines(rng) -> dict[str, list[tuple[str, list[str]]]]:
    """Which brands sell which types (seed dependent), and their model lines."""
    lines = {}
    for tname, t in V.TYPES.items():
        brands = V.CATEGORIES[t.category].brands
        mask = rng.random(len(brands)) < 0.7
        if mask.sum() < 2:
            mask[rng.choice(len(brands), 2, replace=False)] = True
        lines[tname] = [(brands[i][0], [_model_name(rng) for _ in range(1 + rng.integers(3))])
                        for i in np.flatnonzero(mask)]
    return lines


def _price(median: float, sigma: float, tier: int, z: float, u: float) -> float:
    x = max(2.5, median * (0.75, 1.0, 1.45)[tier] * math.exp(sigma * min(max(z, -2.5), 2.5)))
    if u < 0.6:
        return round(max(round(x), 3) - 0.01, 2)  # 49.99
    if u < 0.8:
        return float(round(x))  # 50.00
    if u < 0.95:
        return round(max(round(x * 2) / 2, 3) - 0.01, 2)  # 49.49 / 49.99
    return round(x, 2)


def _size_title(t: V.TypeSpec, size: str, u: float) -> str:
    if size == "One Size":
        return ""
    if t.sizes is V.SIZE_SCHEMES["shoe"]:
        return f"{'US' if u < 0.3 else 'Size'} {size}"
    if size in V.APPAREL_SIZE_WORDS:
        return f"Size {size}"
    if "x" in size and size.replace("x", "").isdigit():
        w, l_ = size.split("x")
        return f"{w}W x {l_}L" if u < 0.6 else f"W{w} L{l_}"
    if not size[0].isdigit():
        return size.title()  # "Large", "Regular"
    return size.replace(" ", "") if u < 0.3 else size


def _title(t, cat, brand, model, audience, colour, material, size, u) -> str:
    # a few sellers name the type with the main shopper word ("Hoodie", "Sneakers")
    name = _pick(t.titles, u[0]) if u[1] >= 0.08 or not t.synonyms else _tc(t.synonyms[0])
    col = _tc(colour) if t.coloured and u[2] >= 0.1 else ""
    dup = content_tokens(material) & content_tokens(name)  # no "Leather Leather Belt"
    mat = _tc(material) if u[3] < 0.65 and not dup else ""
    size_s = _size_title(t, size, u[4])
    mkt = _pick(cat.marketing, u[5]) if u[6] < 0.5 else ""
    if cat.name in ("tops", "bottoms") and u[9] < 0.7:
        model = ""  # apparel listings rarely name a model line

    def j(*ps):
        return " ".join(p for p in ps if p)

    def tail(sep, *ps):
        return sep.join(p for p in ps if p)

    style = int(u[7] * 6)
    if style == 0:
        rest = tail(", ", col, mat, size_s)
        return j(brand, audience, model, name) + (f" - {rest}" if rest else "")
    if style == 1:
        s = j(brand, model, name)
        if audience in ("Men's", "Women's"):
            s += " for " + audience[:-2]
        return s + (f" ({col})" if col else "")
    if style == 2:
        rest = tail(" | ", col, size_s)
        return j(mkt, mat, name, "by", brand) + (f" | {rest}" if rest else "")
    if style == 3:
        return tail(", ", f"{name} - {j(brand, model)}", j(col, mat), size_s)
    if style == 4:
        return j(brand, audience, col, mat, name) + (f", {size_s}" if size_s else "")
    return j(brand, model, mkt, name) + (f" in {col}" if col else "")


def _description(t, cat, brand, model, colour, material, u) -> str:
    tdesc = _pick(t.titles, u[0]).lower()
    if u[1] < 0.25 and t.synonyms:
        tdesc = _pick(t.synonyms, u[2])  # some sellers use the shopper word
    adj = _pick(cat.marketing, u[3]).lower()
    feats = list(cat.features)
    f = [feats.pop(min(int(u[4 + k] * len(feats)), len(feats) - 1)) for k in range(3)]
    use = _pick(cat.uses, u[7])
    style = int(u[8] * 4)
    if style == 2 and not (t.coloured and model):
        style = 0
    first = (f"{adj.capitalize()} {tdesc} from {brand}, made from {material}.",
             f"Made from {material} and built for {use}: {adj} {tdesc} from {brand}.",
             f"The {brand} {model} {tdesc}, in {colour} {material}.",
             f"{adj.capitalize()} {material} {tdesc} for {use}.")[style]
    second = _pick((f"Features {f[0]}, {f[1]} and {f[2]}.", f"Designed with {f[0]} and {f[1]}.",
                    f"Expect {f[0]} and {f[1]}."), u[9])
    sentences = [first, second, _pick(cat.care, u[10])]
    return " ".join(sentences[: 1 if u[11] < 0.2 else 2 if u[11] < 0.65 else 3])


def _make_products(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict]:
    lines = _brand_lines(rng)
    tiers = {b: tier for c in V.CATEGORIES.values() for b, tier in c.brands}
    names = list(V.TYPES)
    per_cat = pd.Series([V.TYPES[t].category for t in names]).value_counts()
    w = np.array([V.CATEGORIES[V.TYPES[t].category].weight / per_cat[V.TYPES[t].category]
                  for t in names]) * rng.uniform(0.6, 1.4, len(names))  # seed-level popularity
    tidx = rng.choice(len(names), size=n, p=w / w.sum())
    u = rng.random((n, 32))
    z = rng.standard_normal(n)
    width = max(5, len(str(n)))
    rows = []
    for i in range(n):
        t = V.TYPES[names[tidx[i]]]
        cat = V.CATEGORIES[t.category]
        brand, models = _pick(lines[t.name], u[i, 0])
        # types whose colour is not a product property (skincare, knives) carry "n/a"
        colour = _pick(V.PALETTES[t.palette], u[i, 1]) if t.coloured else NO_COLOUR
        material = _pick(t.materials, u[i, 2])
        size = _pick(t.sizes, u[i, 3])
        model = _pick(models, u[i, 4]) if u[i, 5] < 0.75 else ""
        audience = _pick(t.audience, u[i, 6]) if t.audience and u[i, 7] < 0.8 else ""
        rows.append({
            "product_id": f"P{i + 1:0{width}d}",
            "title": _title(t, cat, brand, model, audience, colour, material, size, u[i, 8:18]),
            "description": _description(t, cat, brand, model, colour, material, u[i, 18:30]),
            "category": t.category, "product_type": t.name, "brand": brand, "colour": colour,
            "material": material, "size": size,
            "price": _price(*t.price, tiers[brand], z[i], u[i, 30]),
            "attributes": f"brand: {brand}; colour: {colour}; material: {material}; size: {size}",
        })
    return pd.DataFrame(rows, columns=list(PRODUCT_COLUMNS)), lines


# ------------------------------------------------------------------ queries
_ATTR_WEIGHTS = {"colour_family": 0.3, "brand": 0.25, "material_family": 0.2,
                 "price_max": 0.15, "size": 0.1}


def _price_cap(price: float, bump: bool) -> int:
    caps = [c for c in V.PRICE_CAPS if c >= price] or [V.PRICE_CAPS[-1] * 2]
    return caps[1] if bump and len(caps) > 1 else caps[0]


def _sample_intent(rng, prod: Mapping, spec: str, lines) -> tuple[dict, bool]:
    """Hidden intent anchored on one product (so exact matches usually exist)."""
    t = V.TYPES[prod["product_type"]]
    hyper = None
    if (spec == "broad" and rng.random() < 0.3) or (spec == "medium" and rng.random() < 0.15):
        hyps = [h for h, members in V.HYPERNYMS.items() if t.name in members]
        hyper = hyps[rng.integers(len(hyps))] if hyps else None
    n_attr = {"broad": 0, "medium": 1, "specific": 2 + int(rng.random() < 0.4)}[spec]
    families = {V.COLOUR_FAMILY[x] for x in V.PALETTES[t.palette]} if t.coloured else set()
    options = {"colour_family": len(families) > 1,
               "brand": len(lines[t.name]) > 1 or hyper is not None,
               "material_family": len({V.material_family(m) for m in t.materials}) > 1,
               "price_max": True, "size": len(t.sizes) > 1 and hyper is None}
    keys = [k for k, ok in options.items() if ok]
    p = np.array([_ATTR_WEIGHTS[k] for k in keys])
    chosen = {str(k) for k in rng.choice(keys, size=min(n_attr, len(keys)), replace=False,
                                         p=p / p.sum())}
    c = dict.fromkeys(CONSTRAINT_KEYS)
    c.update(category=t.category, product_type=None if hyper else t.name, hypernym=hyper,
             accepted_types=list(V.HYPERNYMS[hyper]) if hyper else [t.name],
             related_types=[] if hyper else list(t.related))
    anchor = {"colour_family": V.COLOUR_FAMILY.get(prod["colour"]), "brand": prod["brand"],
              "material_family": V.material_family(prod["material"]), "size": prod["size"],
              "price_max": _price_cap(prod["price"], rng.random() < 0.3)}
    for k in CONSTRAINT_KEYS:
        if k in chosen:
            c[k] = anchor[k]
    off = bool(chosen) and rng.random() < 0.08  # intent not built from one listing
    if off:
        k = sorted(chosen)[rng.integers(len(chosen))]
        alts = {"colour_family": lambda: sorted(families),
                "brand": lambda: [b for b, _ in V.CATEGORIES[t.category].brands],
                "material_family": lambda: sorted({V.material_family(m) for m in t.materials}),
                "size": lambda: list(t.sizes),
                "price_max": lambda: [x for x in V.PRICE_CAPS if x < prod["price"]] or [anchor[k]]}[k]()
        c[k] = alts[rng.integers(len(alts))]
    return c, off


def _misspell(rng, word: str) -> str:
    i = int(rng.integers(1, len(word) - 1))
    op = rng.random()
    if op < 0.35 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap
    if op < 0.65:
        return word[:i] + word[i + 1:]  # drop
    if op < 0.8:
        return word[:i] + word[i] + word[i:]  # double
    near = "qwertyuiopasdfghjklzxcvbnm"
    k = near.find(word[i].lower())
    return word[:i] + near[(k + 1) % 26 if k >= 0 else 0] + word[i + 1:]  # neighbour key


def _size_phrase(rng, t: V.TypeSpec, size: str) -> str:
    r = rng.random()
    if t.sizes is V.SIZE_SCHEMES["shoe"]:
        return f"size {size}" if r < 0.6 else size if r < 0.8 else f"sz {size}"
    if size in V.APPAREL_SIZE_WORDS:
        return f"size {size}" if r < 0.5 else V.APPAREL_SIZE_WORDS[size] if r < 0.85 else size
    if "x" in size and size.replace("x", "").isdigit():
        w, l_ = size.split("x")
        return (size, f"{w} x {l_}", f"w{w} l{l_}", f"{w}w {l_}l")[int(r * 4)]
    return size.replace(" ", "") if r < 0.5 else size


def _realise(rng, c: dict, prod: Mapping) -> tuple[str, list[str]]:
    """Shopper text for an intent, with the perturbations applied listed in ``noise``."""
    t = V.TYPES[prod["product_type"]]
    noise: list[str] = []
    if c["hypernym"]:
        head = _pick(V.HYPERNYM_WORDS[c["hypernym"]], rng.random())
        noise.append("hypernym")
    else:
        r = rng.random()
        if r < 0.42 and t.synonyms:
            head = _pick(t.synonyms, rng.random())
            noise.append("synonym")
        elif r < 0.52 and len(t.query_names) > 1:
            head = t.query_names[1]
            noise.append("inflection")
        else:
            head = t.query_names[0]
    slot = dict.fromkeys(("brand", "colour", "material", "size", "price"), "")
    if c["colour_family"]:
        fam, own = c["colour_family"], prod["colour"]
        own = own if V.COLOUR_FAMILY[own] == fam else V.FAMILY_QUERY_WORDS[fam][0]
        r = rng.random()
        siblings = [w for w in V.COLOUR_FAMILIES[fam] if w != own]
        word = (_pick(V.FAMILY_QUERY_WORDS[fam], rng.random()) if r < 0.45 else
                _pick(siblings, rng.random()) if r < 0.65 and siblings else own)
        if word != own:
            noise.append("colour_family" if word in V.FAMILY_QUERY_WORDS[fam] else "colour_variant")
        slot["colour"] = word
    if c["material_family"]:
        fam = c["material_family"]
        own = prod["material"] if V.material_family(prod["material"]) == fam else fam
        word = fam if rng.random() < 0.5 else own
        if word != own:
            noise.append("material_family")
        slot["material"] = word
    if c["brand"]:
        slot["brand"] = c["brand"]
    if c["size"]:
        slot["size"] = _size_phrase(rng, t, c["size"])
    if c["price_max"] is not None:
        cap = int(c["price_max"])
        slot["price"] = _pick((f"under ${cap}", f"under {cap}", f"below ${cap}",
                               f"less than ${cap}", f"under {cap} dollars"), rng.random())
    head_words = head.split()
    if len(head_words) == 2 and len(head_words[1]) >= 3 and rng.random() < 0.07:
        head_words = head_words[1:]  # "rain jacket" -> "jacket"
        noise.append("dropped_word")
    head = " ".join(head_words)
    mods = [slot[k] for k in ("brand", "colour", "material") if slot[k]]
    tail = [slot[k] for k in ("size", "price") if slot[k]]
    words = mods + [head] + tail
    if rng.random() < 0.22 and (mods or tail):
        r = rng.random()
        if r < 0.35:
            order = [head] + mods + tail  # "sneakers navy acme"
        elif r < 0.6 and slot["colour"]:
            rest = [m for m in mods if m != slot["colour"]]
            order = rest + [head, "in", slot["colour"]] + tail
        elif r < 0.8 and tail:
            order = tail + mods + [head]
        else:
            order = [mods[k] for k in rng.permutation(len(mods))] + [head] + tail
            if tail and rng.random() < 0.5:
                order = [head] + order[:-1 - len(tail)] + tail
        if order != words:
            noise.append("word_order")
            words = order
    if rng.random() < 0.08:
        gendered = any(a in ("Men's", "Women's") for a in t.audience)
        pool = V.GENDER_WORDS + V.FILLER_WORDS if gendered else V.FILLER_WORDS
        filler = _pick(pool, rng.random())
        front = rng.random() < 0.5 and not filler.startswith("for ")
        words = [filler] + words if front else words + [filler]
        noise.append("filler")
    text = " ".join(words)
    if rng.random() < 0.12:
        tokens = text.split(" ")
        cand = [i for i, w in enumerate(tokens) if len(w) >= 4 and w.isalpha()]
        if cand:
            i = cand[rng.integers(len(cand))]
            tokens[i] = _misspell(rng, tokens[i])
            text = " ".join(tokens)
            noise.append("misspelling")
    r = rng.random()
    cased = text.lower() if r < 0.75 else text[:1].upper() + text[1:] if r < 0.9 else text
    if cased == text.lower() and cased != text:
        noise.append("lowercase")
    return cased, noise


# ------------------------------------------------------------------ pooling
def _choose(rng, idx: np.ndarray, k: int) -> np.ndarray:
    return idx if k >= len(idx) else rng.choice(idx, size=k, replace=False)


def _pool(rng, g: np.ndarray, overlap: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """TREC-style judging pool: exact (<= k/2), partial, lexical hard negatives, random."""
    exact = _choose(rng, np.flatnonzero(g == 2), k // 2)
    partial = _choose(rng, np.flatnonzero(g == 1), round((k - len(exact)) * 0.4))
    left = k - len(exact) - len(partial)
    hard_c = np.flatnonzero((g == 0) & (overlap > 0))
    n_hard = min(len(hard_c), round(left * 0.6))
    score = overlap[hard_c] + rng.random(len(hard_c))  # most shared words first, random ties
    hard = hard_c[np.argsort(-score, kind="stable")[:n_hard]]
    taken = np.zeros(len(g), dtype=bool)
    taken[hard] = True
    rand = _choose(rng, np.flatnonzero((g == 0) & ~taken), left - n_hard)
    return {"exact": exact, "partial": partial, "hard_negative": hard, "random_negative": rand}


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
    products, lines = _make_products(rng, n_products)
    rows = products.to_dict("records")
    index = _Index(rows)
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
        c, off = _sample_intent(rng, prod, spec, lines)
        text, noise = _realise(rng, c, prod)
        g = index.grades(c)
        if g.max() == 0:
            dropped += 1
            continue
        overlap = np.zeros(n_products, dtype=np.int64)
        for tok in content_tokens(text):
            if tok in post:
                overlap[post[tok]] += 1
        pool = _pool(rng, g, overlap, candidates_per_query)
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


# ------------------------------------------------------------------ lexical diagnostics
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
            key = tuple(_TOKEN_RE.findall(phrase.lower()))
            if key:
                table.setdefault(key, set()).update(toks)
    return table


def _expand(text: str, table, max_len: int) -> dict[str, float]:
    toks = _TOKEN_RE.findall(str(text).lower())
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
    docs = {pid: _TOKEN_RE.findall(f"{t} {d}".lower())
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
