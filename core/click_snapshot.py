"""What the ingress applies on every search: an immutable snapshot of the click model's active keys,
and the catalog lookups both sides share (a product's segment and attributes, a query's segment).

Keys are named `<segment>` (the segment itself, never applied), `<segment>|<field>=<value>` (a
product attribute within a query segment, e.g. `footwear|brand=Acme`) and
`<segment>|product=<product id>` (the product within its segment). A query's segment comes from
its text when a catalog phrase names one (the longest phrase found, e.g. a product type), else
from the products it was shown: the most common segment among its first `segment_top_n`.

`Snapshot.adjust` is pure and cheap (dictionary look-ups, no model): a product gets its product
key's effect when that key is active (its evidence already holds the attributes', as its prior),
else the sum of its active attribute keys' effects, clipped to [-max_penalty, max_boost]; a boost
goes only to products the reranker scored at least `boost_min_score` (the layer reorders what the
model finds relevant, it never lifts what the model finds irrelevant into view). A query
whose segment has no active key, or a layer turned off, gets its hits back exactly as given.

A query that states an attribute (its text holds one of the catalog's values of that field, e.g. a
brand name, or for a family field the family word of one, e.g. 'green' of 'forest green') asked for
it: what shoppers of the segment prefer on that field says nothing about it. Such a query neither
feeds nor gets that field's keys, nor product keys; and what it teaches on the other fields is kept
apart, in the segment signed by the fields it states (`outerwear[colour]|material=wool`): among
shoppers who state no colour, a colour trend makes the materials of the unwanted colours look
unwanted, which says nothing to a shopper who asked for green. `ProductCatalog.keys` with `stated`,
on both sides: the click model's evidence and the snapshot's effects.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.text import dedupe_key

PRODUCT_FIELD = "product"
SNAPSHOT_FORMAT = 1
MIN_VALUE_CHARS = 3  # attribute values shorter than this are not looked for in query texts
MAX_STATED_CACHE = 50_000

Hit = tuple[str, float]


def key_name(segment: str, field_name: str | None = None, value: object = None) -> str:
    return segment if field_name is None else f"{segment}|{field_name}={value}"


def signed_segment(segment: str, stated: frozenset[str]) -> str:
    """'outerwear' for a query that states no field, 'outerwear[brand+colour]' for one that states
    brand and colour: its own segment, learnt from and applied to such queries only."""
    return f"{segment}[{'+'.join(sorted(stated))}]" if stated else segment


def parse_key(name: str) -> tuple[str, str | None, str | None]:
    """'footwear|brand=Acme' -> ('footwear', 'brand', 'Acme'); 'footwear' -> ('footwear', None, None)."""
    segment, sep, rest = name.partition("|")
    if not sep:
        return segment, None, None
    field_name, eq, value = rest.partition("=")
    if not eq or not field_name:
        raise ValueError(f"not a click-model key: {name!r} (expected segment|field=value)")
    return segment, field_name, value


class ProductCatalog:
    """Product id -> (segment, attribute values); query text -> segment through catalog phrases.

    `products`: rows holding product_id, the segment field and the attribute fields (the catalog's
    products table). Phrases: every value of `phrase_fields` whose products all share one segment
    (e.g. a product type, 'running shoes' -> footwear), the segment names themselves, and
    `segment_words` (more phrase -> segment pairs: synonyms, hypernyms from a vocabulary).
    """

    def __init__(self, products: Iterable[Mapping], segment_field: str = "category",
                 attribute_fields: Sequence[str] = ("brand", "colour", "material"),
                 phrase_fields: Sequence[str] = ("product_type",), segment_words: Mapping[str, str] | None = None,
                 family_fields: Sequence[str] = ()):
        self.segment_field, self.attribute_fields = segment_field, tuple(attribute_fields)
        self._products: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
        phrase_segments: dict[str, set[str]] = {}
        for row in products:
            segment = str(row[segment_field])
            attrs = tuple((f, str(row[f])) for f in self.attribute_fields if row.get(f) not in (None, ""))
            self._products[str(row["product_id"])] = (segment, attrs)
            for phrase in [segment, *(str(row[f]) for f in phrase_fields if row.get(f))]:
                phrase_segments.setdefault(dedupe_key(phrase), set()).add(segment)
        for phrase, segment in (segment_words or {}).items():
            phrase_segments.setdefault(dedupe_key(phrase), set()).add(str(segment))
        self._phrases = sorted(((p, next(iter(s))) for p, s in phrase_segments.items() if p and len(s) == 1),
                               key=lambda ps: (-len(ps[0]), ps[0]))
        values = {(dedupe_key(v), f) for _, attrs in self._products.values() for f, v in attrs}
        values |= {(v.rsplit(" ", 1)[1], f) for v, f in values if f in family_fields and " " in v}  # 'forest green': green
        self._values = sorted(((v, f) for v, f in values if len(v) >= MIN_VALUE_CHARS), key=lambda vf: (-len(vf[0]), vf))
        self._stated: dict[str, frozenset[str]] = {}

    def __contains__(self, product_id: str) -> bool:
        return product_id in self._products

    def segment(self, product_id: str) -> str | None:
        entry = self._products.get(product_id)
        return entry[0] if entry else None

    def keys(self, segment: str, product_id: str, stated: frozenset[str] = frozenset()) -> list[str]:
        """The segment's key, the product's attribute keys within it, and its product key; a query
        that states fields (`stated_fields`) gets no key of those fields and no product key, and its
        keys are in its signed segment (`signed_segment`)."""
        _, attrs = self._products[product_id]
        signed = signed_segment(segment, stated)
        names = [key_name(signed), *(key_name(signed, f, v) for f, v in attrs if f not in stated)]
        return names if stated else [*names, key_name(segment, PRODUCT_FIELD, product_id)]

    def stated_fields(self, query: str) -> frozenset[str]:
        """The attribute fields whose catalog values the query's text holds (whole words); for
        `family_fields`, the last word of a multi-word value too (a query for 'green' states a colour
        when the catalog's greens are 'forest green' and 'sage green')."""
        found = self._stated.get(query)
        if found is None:
            padded = f" {dedupe_key(query)} "
            found = frozenset(f for v, f in self._values if f" {v} " in padded)
            if len(self._stated) >= MAX_STATED_CACHE:
                self._stated.clear()
            self._stated[query] = found
        return found

    def text_segment(self, query: str) -> str | None:
        """The segment of the longest catalog phrase in the query (whole words), or None."""
        padded = f" {dedupe_key(query)} "
        found = [(p, s) for p, s in self._phrases if f" {p} " in padded]
        if not found:
            return None
        longest = [s for p, s in found if len(p) == len(found[0][0])]
        return longest[0] if len(set(longest)) == 1 else None

    def query_segment(self, query: str, hits: Sequence[Hit], top_n: int) -> str | None:
        """The query's segment from its text, else the most common among its top `top_n` hits by score."""
        segment = self.text_segment(query)
        if segment is not None:
            return segment
        ranked = sorted(range(len(hits)), key=lambda i: -hits[i][1])[:top_n]
        return majority(self.segment(hits[i][0]) for i in ranked)


def majority(segments: Iterable[str | None]) -> str | None:
    """The most common segment (ties: the first alphabetically), None when there is none."""
    counts = Counter(s for s in segments if s is not None)
    return min(counts, key=lambda s: (-counts[s], s)) if counts else None


@dataclass(frozen=True)
class Adjusted:
    hits: list[Hit]  # the given hits in the given order, scores adjusted
    applied: dict[str, list[str]]  # product id -> names of the keys whose effect it got
    snapshot: str  # version of the snapshot that adjusted them


@dataclass(frozen=True)
class Snapshot:
    """The active keys' effects (score units) as of log offset `offset` (exclusive) and event time `ts`."""

    offset: int
    epoch: int  # admin operations since the start: a snapshot is named by (offset, epoch)
    ts: float
    enabled: bool
    effects: tuple[tuple[str, float], ...]  # (key name, effect), sorted by name
    max_boost: float
    max_penalty: float
    segment_top_n: int
    boost_min_score: float = float("-inf")
    _lookup: dict = field(init=False, repr=False, compare=False)
    _segments: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_lookup", dict(self.effects))
        object.__setattr__(self, "_segments", frozenset(parse_key(k)[0] for k, _ in self.effects))

    @property
    def version(self) -> str:
        return f"{self.offset}.{self.epoch}"

    def effect(self, name: str) -> float:
        return self._lookup.get(name, 0.0)

    def adjust(self, query: str, hits: Sequence[Hit], catalog: ProductCatalog) -> Adjusted:
        """The hits' scores plus each product's effect in the query's segment (see module doc)."""
        hits = [(str(p), s) for p, s in hits]
        if not self.enabled or not self._segments:
            return Adjusted(hits, {}, self.version)
        segment = catalog.query_segment(query, hits, self.segment_top_n)
        stated = catalog.stated_fields(query)
        if segment is None or signed_segment(segment, stated) not in self._segments:
            return Adjusted(hits, {}, self.version)
        out, applied = [], {}
        for product_id, score in hits:
            keys = self._keys_for(segment, product_id, catalog, stated)
            if keys:
                delta = max(-self.max_penalty, min(self.max_boost, sum(self._lookup[k] for k in keys)))
                if delta < 0 or score >= self.boost_min_score:
                    score = score + delta
                    applied[product_id] = keys
            out.append((product_id, score))
        return Adjusted(out, applied, self.version)

    def _keys_for(self, segment: str, product_id: str, catalog: ProductCatalog, stated: frozenset[str]) -> list[str]:
        if product_id not in catalog:
            return []
        names = catalog.keys(segment, product_id, stated)
        if not stated and names[-1] in self._lookup:
            return [names[-1]]
        return [k for k in names[1:len(names) - (0 if stated else 1)] if k in self._lookup]

    def to_dict(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "offset": self.offset, "epoch": self.epoch, "ts": self.ts,
                "enabled": self.enabled, "effects": [list(e) for e in self.effects], "max_boost": self.max_boost,
                "max_penalty": self.max_penalty, "segment_top_n": self.segment_top_n,
                "boost_min_score": self.boost_min_score}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping) -> Snapshot:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r}, expected {SNAPSHOT_FORMAT}")
        return cls(offset=int(data["offset"]), epoch=int(data["epoch"]), ts=float(data["ts"]),
                   enabled=bool(data["enabled"]), effects=tuple((str(k), float(v)) for k, v in data["effects"]),
                   max_boost=float(data["max_boost"]), max_penalty=float(data["max_penalty"]),
                   segment_top_n=int(data["segment_top_n"]), boost_min_score=float(data["boost_min_score"]))

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        return cls.from_dict(json.loads(data.decode("utf-8")))


def empty_snapshot(max_boost: float = 0.0, max_penalty: float = 0.0, segment_top_n: int = 10) -> Snapshot:
    """What serving uses before the first snapshot arrives: changes nothing."""
    return Snapshot(offset=0, epoch=0, ts=0.0, enabled=False, effects=(), max_boost=max_boost,
                    max_penalty=max_penalty, segment_top_n=segment_top_n)
