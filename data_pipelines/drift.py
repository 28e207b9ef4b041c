"""Drift scenarios: how the shoppers' hidden truth moves away from the judgements, from a YAML spec,
and the held-out evaluation queries that measure whether a ranker learnt it.

Every kind applies in one category, to the queries that do not state the attribute it is about
(a shopper who asked for a brand or a colour keeps asking for it):

    brand_trend      shoppers want `brand`: its products that are at least partially relevant
                     become exact (2), every other exact match drops to partial (1)
    attribute_trend  the same for products whose `attribute` (colour or material) has `value`,
                     a family ('blue' takes navy and cobalt, as grading does) or an exact word
    fading_line      a product line falls out of favour: `brand`'s products drop `strength` grades

`strength` is the grades a product moves: at 1 (the default) a trend lifts partial matches of the
favoured products to exact and drops the other exact matches to partial; at 2 the others drop to
irrelevant. `start_s` is when the drift starts, in seconds after the stream starts: the caller
switches it on (`ShopperSimulator.set_drift`) once `Drift.started(elapsed)` says so. The
judgements, and any model trained on them, know none of this; only the feedback does.

A spec file (configs/drift/*.yaml, typed by `DriftSpec`, unknown keys refused) may leave the
category and the brand or value out: `resolve` picks them from the catalog, as `pick_trend` always
did for the brand trend (the seed picks one of the best few).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.config import doc, load_config
from core.tasks import query_split_groups

from . import _catalog_vocab as V
from .catalog import Catalog, grade

DRIFT_KINDS = ("brand_trend", "attribute_trend", "fading_line")
# product attribute -> the intent constraint that states it
STATED_BY = {"brand": "brand", "colour": "colour_family", "material": "material_family"}
MIN_TREND_IN_POOL = 3  # "several" drifted products in an affected query's judged pool
TREND_CANDIDATES = 3  # the seed picks among this many best (category, value) pairs


# ------------------------------------------------------------------ the drift
@dataclass(frozen=True, kw_only=True)
class Drift:
    """One drift of the hidden truth (see module docstring)."""

    kind: str = "brand_trend"
    category: str
    brand: str | None = None  # brand_trend, fading_line
    attribute: str | None = None  # attribute_trend: colour or material
    value: str | None = None  # attribute_trend: a family or an exact colour / material word
    strength: int = 1
    start_s: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift kind {self.kind!r}; one of {', '.join(DRIFT_KINDS)}")
        if self.kind == "attribute_trend":
            if self.attribute not in ("colour", "material") or not self.value:
                raise ValueError("attribute_trend needs attribute (colour or material) and value")
        elif not self.brand:
            raise ValueError(f"{self.kind} needs a brand")
        if self.strength not in (1, 2) or self.start_s < 0:
            raise ValueError(f"strength must be 1 or 2 and start_s >= 0, got {self.strength}, {self.start_s}")
        if not self.name:
            object.__setattr__(self, "name", {
                "brand_trend": f"{self.brand} trend in {self.category}",
                "attribute_trend": f"{self.value} {self.attribute} trend in {self.category}",
                "fading_line": f"{self.brand} fading in {self.category}"}[self.kind])

    @property
    def field(self) -> str:
        """The product attribute the drift is about."""
        return "brand" if self.kind != "attribute_trend" else str(self.attribute)

    @property
    def target(self) -> str:
        return str(self.brand if self.kind != "attribute_trend" else self.value)

    def applies(self, constraints: Mapping) -> bool:
        return constraints.get(STATED_BY[self.field]) is None and intent_category(constraints) == self.category

    def matches(self, product: Mapping) -> bool:
        own = str(product[self.field])
        return self.target.casefold() in (own.casefold(), str(attribute_value(self.field, own)).casefold())

    def moved(self, base: int, product: Mapping) -> int:
        """The true grade of a product of base grade `base` for a query the drift applies to."""
        if self.kind == "fading_line":
            return max(0, base - self.strength) if self.matches(product) else base
        if self.matches(product):
            return min(2, base + self.strength) if base >= 1 else 0
        return min(base, 2 - self.strength)

    def started(self, elapsed_s: float) -> bool:
        return elapsed_s >= self.start_s


def attribute_value(field: str, raw: str) -> str | None:
    """What a drift on `field` compares: the colour or material family, the brand itself."""
    if field == "colour":
        return V.COLOUR_FAMILY.get(str(raw).lower())
    if field == "material":
        return V.material_family(raw)
    return raw


def intent_category(constraints: Mapping) -> str | None:
    """The category a query intent is about (stated, or implied by its type / hypernym)."""
    if constraints.get("category"):
        return str(constraints["category"])
    members = V.HYPERNYMS.get(constraints.get("hypernym"), ())
    spec = V.TYPES.get(members[0] if members else constraints.get("product_type"))
    return spec.category if spec else None


def drift_applies(constraints: Mapping, drift: Drift | None) -> bool:
    return drift is not None and drift.applies(constraints)


def true_grade(constraints: Mapping, product: Mapping, drift: Drift | None = None) -> int:
    """``catalog.grade`` changed by ``drift`` where it applies (0 irrelevant .. 2 exact)."""
    base = grade(constraints, product)
    return drift.moved(base, product) if drift_applies(constraints, drift) else base


def query_constraints(catalog: Catalog) -> dict[str, dict]:
    return {qid: json.loads(c) for qid, c in zip(catalog.queries["query_id"], catalog.queries["constraints"])}


# ------------------------------------------------------------------ picking where it applies
def pick_target(catalog: Catalog, field: str, seed: int = 0, category: str | None = None) -> tuple[str, str]:
    """(category, value) of `field` that matters most: pairs are ranked by how many queries that do
    not state `field` hold >= MIN_TREND_IN_POOL products of the value with grade >= 1 in their judged
    pool (then by the total of such products); the seed picks one of the best few."""
    constraints = query_constraints(catalog)
    values = {p: attribute_value(field, v) for p, v in zip(catalog.products["product_id"], catalog.products[field])}
    relevant = catalog.judgements[catalog.judgements["grade"] >= 1]
    queries_with_several: Counter = Counter()
    candidates: Counter = Counter()
    for qid, pids in relevant.groupby("query_id", sort=True)["product_id"]:
        c = constraints[qid]
        if c.get(STATED_BY[field]) is not None or (category and intent_category(c) != category):
            continue
        for value, n in Counter(values[p] for p in pids if values[p]).items():
            key = (intent_category(c), value)
            candidates[key] += n
            queries_with_several[key] += n >= MIN_TREND_IN_POOL
    if not candidates:
        raise ValueError(f"no query leaving {field} open has a relevant product: cannot pick a drift")
    best = sorted(candidates, key=lambda k: (-queries_with_several[k], -candidates[k], k))
    top = best[:TREND_CANDIDATES]
    return top[int(np.random.default_rng(seed).integers(len(top)))]


def pick_trend(catalog: Catalog, seed: int = 0) -> Drift:
    """The seed's brand trend (the freshness benchmark's and the demo's default drift)."""
    category, brand = pick_target(catalog, "brand", seed)
    return Drift(category=category, brand=brand)


@dataclass
class DriftSpec:
    kind: Literal["brand_trend", "attribute_trend", "fading_line"] = doc("brand_trend", "what moves (module doc)")
    category: str | None = doc(None, "the category it applies in (None: picked from the catalog)")
    brand: str | None = doc(None, "brand_trend and fading_line: the brand (None: picked)")
    attribute: str | None = doc(None, "attribute_trend: colour or material")
    value: str | None = doc(None, "attribute_trend: a colour or material family or word (None: picked)")
    strength: int = doc(1, "grades a product moves: 1 or 2")
    start_s: float = doc(0.0, "seconds after the stream starts when the drift starts")
    name: str = doc("", "a readable name (default: from the kind and its target)")


def resolve(spec: DriftSpec, catalog: Catalog, seed: int = 0) -> Drift:
    """The drift a spec names, its missing category and brand or value picked from the catalog."""
    field = "brand" if spec.kind != "attribute_trend" else (spec.attribute or "")
    if field not in STATED_BY:
        raise ValueError(f"attribute_trend needs attribute colour or material, got {spec.attribute!r}")
    category, target = spec.category, spec.brand if field == "brand" else spec.value
    if category is None or target is None:
        category, picked = pick_target(catalog, field, seed, category)
        target = target if target is not None else picked
    fields = {"brand": target} if field == "brand" else {"attribute": field, "value": target}
    return Drift(kind=spec.kind, category=category, strength=spec.strength, start_s=spec.start_s, name=spec.name,
                 **fields)


def load_drift(path: str | Path, catalog: Catalog, seed: int = 0, overrides: list[str] | None = None) -> Drift:
    """A drift from a spec file (configs/drift/*.yaml) and dotted overrides, resolved on the catalog."""
    return resolve(load_config(DriftSpec, path, overrides), catalog, seed)


# ------------------------------------------------------------------ held-out evaluation queries
@dataclass(frozen=True)
class HoldOut:
    evaluation: list[str]  # drift-affected queries kept for evaluation
    excluded: list[str]  # every query the shoppers must never search: those sharing a text or intent with them


def hold_out_queries(catalog: Catalog, candidates: Sequence[str], every: int = 3) -> HoldOut:
    """Every `every`-th group of the candidate queries, grouped as the relevance split groups them
    (`core.tasks.query_split_groups`: same normalised text or same hidden constraints, transitively),
    so no held-out query is searched by the shoppers in any form: pass `excluded` to
    `ShopperSimulator.hold_out`."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    group_of = dict(zip(catalog.queries["query_id"], query_split_groups(catalog.queries)))
    unknown = [q for q in candidates if q not in group_of]
    if unknown:
        raise ValueError(f"unknown query ids {unknown[:3]}")
    chosen = set(sorted({group_of[q] for q in candidates})[::every])
    return HoldOut(evaluation=sorted(q for q in set(candidates) if group_of[q] in chosen),
                   excluded=sorted(q for q, g in group_of.items() if g in chosen))
