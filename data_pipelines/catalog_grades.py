"""The generated catalog's truth: how relevant a product is to a query's hidden intent.

``grade(constraints, product)`` is the one definition of relevance (0 irrelevant, 1 partial, 2 exact)
that the judgements, the shopper simulator and its drifts all use; `GradeIndex` grades every product
at once for one intent, the same rules over integer-coded attributes (the generator's hot path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _catalog_vocab as V


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


class GradeIndex:
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
