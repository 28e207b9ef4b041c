"""The generated catalog's products: brands and model lines per type, prices, and the titles and
descriptions sellers write (several listing styles, marketing words, acronyms kept upper-case).

The vocabulary they draw from is `_catalog_vocab`; `data_pipelines.catalog` assembles a catalog.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import _catalog_vocab as V

PRODUCT_COLUMNS = ("product_id", "title", "description", "category", "product_type", "brand",
                   "colour", "material", "size", "price", "attributes")
NO_COLOUR = "n/a"
_ACRONYMS = {"pvc", "tpe", "tpu", "eva", "pet", "bpa", "usb", "spf", "uv400"}


# ------------------------------------------------------------------ text helpers
def pick(seq: Sequence, u: float):
    return seq[min(int(u * len(seq)), len(seq) - 1)]


def _tc(s: str) -> str:
    """Title case for listings, keeping acronyms (PVC, USB-C) upper-case."""
    return " ".join("-".join(p.upper() if p.lower() in _ACRONYMS else p[:1].upper() + p[1:]
                             for p in w.split("-")) for w in s.split(" "))


TOKEN_RE = re.compile(r"[a-z0-9]+")


def content_tokens(text: str) -> set[str]:
    """Lower-cased alphanumeric tokens minus stop words and single letters (lexical proxy)."""
    return {t for t in TOKEN_RE.findall(str(text).lower())
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
    name = pick(t.titles, u[0]) if u[1] >= 0.08 or not t.synonyms else _tc(t.synonyms[0])
    col = _tc(colour) if t.coloured and u[2] >= 0.1 else ""
    dup = content_tokens(material) & content_tokens(name)  # no "Leather Leather Belt"
    mat = _tc(material) if u[3] < 0.65 and not dup else ""
    size_s = _size_title(t, size, u[4])
    mkt = pick(cat.marketing, u[5]) if u[6] < 0.5 else ""
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
    tdesc = pick(t.titles, u[0]).lower()
    if u[1] < 0.25 and t.synonyms:
        tdesc = pick(t.synonyms, u[2])  # some sellers use the shopper word
    adj = pick(cat.marketing, u[3]).lower()
    feats = list(cat.features)
    f = [feats.pop(min(int(u[4 + k] * len(feats)), len(feats) - 1)) for k in range(3)]
    use = pick(cat.uses, u[7])
    style = int(u[8] * 4)
    if style == 2 and not (t.coloured and model):
        style = 0
    first = (f"{adj.capitalize()} {tdesc} from {brand}, made from {material}.",
             f"Made from {material} and built for {use}: {adj} {tdesc} from {brand}.",
             f"The {brand} {model} {tdesc}, in {colour} {material}.",
             f"{adj.capitalize()} {material} {tdesc} for {use}.")[style]
    second = pick((f"Features {f[0]}, {f[1]} and {f[2]}.", f"Designed with {f[0]} and {f[1]}.",
                    f"Expect {f[0]} and {f[1]}."), u[9])
    sentences = [first, second, pick(cat.care, u[10])]
    return " ".join(sentences[: 1 if u[11] < 0.2 else 2 if u[11] < 0.65 else 3])


def make_products(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict]:
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
        brand, models = pick(lines[t.name], u[i, 0])
        # types whose colour is not a product property (skincare, knives) carry "n/a"
        colour = pick(V.PALETTES[t.palette], u[i, 1]) if t.coloured else NO_COLOUR
        material = pick(t.materials, u[i, 2])
        size = pick(t.sizes, u[i, 3])
        model = pick(models, u[i, 4]) if u[i, 5] < 0.75 else ""
        audience = pick(t.audience, u[i, 6]) if t.audience and u[i, 7] < 0.8 else ""
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
