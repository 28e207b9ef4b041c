"""Metrics for Aisle's text generation tasks: product descriptions, review-title summaries and
customer-support replies.

Overlap with a reference: ``rouge_l`` (word LCS F1) and ``chrf`` (sacrebleu's sentence chrF,
scaled 0..1); ``corpus_mean`` averages either over a corpus. Support replies carry placeholder
slots such as ``{{Order Number}}``: ``slots``, ``slot_accuracy`` and ``slot_f1`` check that a reply
keeps exactly the reference's slots. Product descriptions are checked against the catalog:
``contradictions`` / ``hallucinated`` find attribute values the text states that the product does
not have, ``attribute_coverage`` how many of its own values the text mentions. Pure Python (no
Ray, no torch), so offline benchmarks and serving shadow traffic score alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "tokens", "rouge_l", "chrf", "corpus_mean", "slots", "slot_accuracy", "slot_f1",
    "AttributeVocabulary", "contradictions", "hallucinated", "attribute_coverage",
]

_SLOT = re.compile(r"\{\{[^{}]*\}\}")
_TOKEN = re.compile(r"\{\{[^{}]*\}\}|[a-z0-9]+(?:'[a-z]+)?")
_MISSING = {"", "n/a"}


def _norm_slot(slot: str) -> str:
    """``"{{ Order  Number }}"`` -> ``"{{order number}}"``: trim, collapse spaces, lowercase."""
    return "{{" + " ".join(slot[2:-2].split()).lower() + "}}"


def tokens(text: str) -> list[str]:
    """Lowercase word tokens; each ``{{...}}`` placeholder is one (normalised) token."""
    return [_norm_slot(t) if t.startswith("{{") else t for t in _TOKEN.findall(text.lower())]


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length by DP over one rolling row: O(len(a)*len(b)) time."""
    if len(b) > len(a):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # row[j-1] of the previous row
        for j, y in enumerate(b, start=1):
            up = row[j]
            row[j] = diag + 1 if x == y else max(up, row[j - 1])
            diag = up
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta=1) over `tokens`; 0.0 when either side has no tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(prediction: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF as sacrebleu computes it (case-sensitive, whitespace removed), in 0..1.

    Per order k = 1..n: P_k = matches / hypothesis k-grams, R_k = matches / reference k-grams.
    P and R are averaged over the effective orders (both sides have k-grams), then
    F = (1 + beta^2) P R / (beta^2 P + R). Empty prediction or reference -> 0.0.
    """
    hyp, ref = "".join(prediction.split()), "".join(reference.split())
    if not hyp or not ref:
        return 0.0
    sum_p = sum_r = 0.0
    effective = 0
    for k in range(1, n + 1):
        h, r = _char_ngrams(hyp, k), _char_ngrams(ref, k)
        if not h or not r:
            continue
        matches = sum((h & r).values())
        sum_p += matches / sum(h.values())
        sum_r += matches / sum(r.values())
        effective += 1
    if effective == 0:
        return 0.0
    p, r = sum_p / effective, sum_r / effective
    factor = beta**2
    return (1 + factor) * p * r / (factor * p + r) if p + r > 0 else 0.0


def corpus_mean(
    metric: Callable[[str, str], float], predictions: Sequence[str], references: Sequence[str]
) -> float:
    """Mean of a sentence metric over aligned pairs; 0.0 for an empty corpus."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    return sum(metric(p, r) for p, r in zip(predictions, references)) / len(predictions)


def slots(text: str) -> set[str]:
    """The ``{{...}}`` placeholders in ``text``, normalised (``"{{order number}}"``)."""
    return {_norm_slot(s) for s in _SLOT.findall(text)}


def slot_accuracy(prediction: str, reference: str) -> float:
    """1.0 when the prediction has exactly the reference's slot set (both empty counts), else 0.0."""
    return 1.0 if slots(prediction) == slots(reference) else 0.0


def slot_f1(prediction: str, reference: str) -> float:
    """Set F1 of predicted vs reference slots; 1.0 when both have none."""
    pred, ref = slots(prediction), slots(reference)
    if not pred and not ref:
        return 1.0
    return 2 * len(pred & ref) / (len(pred) + len(ref))


def _value(raw: Any) -> str | None:
    """A usable attribute value (stripped), or None for missing / empty / "n/a" / NaN."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return None
    value = str(raw).strip()
    return None if value.lower() in _MISSING else value


def _pattern(value: str) -> re.Pattern[str]:
    """Case-insensitive whole-word(s) matcher for ``value``; any whitespace run between words."""
    body = r"\s+".join(re.escape(w) for w in value.lower().split())
    return re.compile(rf"(?<![a-z0-9]){body}(?![a-z0-9])")


def _mentions(text: str, value: str) -> bool:
    return _pattern(value).search(text.lower()) is not None


@dataclass(frozen=True)
class AttributeVocabulary:
    """Every value each attribute (``"brand"``, ``"colour"``, ...) takes in the catalog."""

    values: dict[str, tuple[str, ...]]

    @classmethod
    def from_products(cls, products: pd.DataFrame, attributes: Sequence[str]) -> AttributeVocabulary:
        """Distinct non-empty, non-"n/a" values of ``attributes`` in a product table (sorted)."""
        values = {}
        for attribute in attributes:
            found = {_value(v) for v in products[attribute].dropna().astype(str).unique()}
            values[attribute] = tuple(sorted(v for v in found if v is not None))
        return cls(values)


def claim_vocabulary(products: pd.DataFrame, attributes: Sequence[str], text_column: str,
                     max_other_share: float = 0.5, min_mentions: int = 5) -> tuple[AttributeVocabulary, dict]:
    """(the vocabulary of values that state an attribute, {attribute: values left out}).

    A value is left out when the catalog's own texts (``text_column``) mention it at least
    ``min_mentions`` times and more than ``max_other_share`` of those mentions are of products that
    do not have it: then it is a word of the catalog's language ("breathable fabric", "rubber
    outsole", "knit sweater", "indigo denim"), not a statement of the attribute. Learnt from the
    table given (the training split), so it holds for any catalog, not a list written for one."""
    full = AttributeVocabulary.from_products(products, attributes)
    texts = products[text_column].fillna("").astype(str).tolist()
    kept, left_out = {}, {}
    for attribute, values in full.values.items():
        own = products[attribute].fillna("").astype(str).tolist()
        keep = []
        for value in values:
            said = [_mentions(t, value) for t in texts]
            others = sum(s and not _mentions(o, value) for s, o in zip(said, own))
            if sum(said) >= min_mentions and others > max_other_share * sum(said):
                left_out.setdefault(attribute, []).append(value)
            else:
                keep.append(value)
        kept[attribute] = tuple(keep)
    return AttributeVocabulary(kept), {a: tuple(v) for a, v in left_out.items()}


def contradictions(
    text: str, product: Mapping[str, str], vocab: AttributeVocabulary, source: str | None = None
) -> list[tuple[str, str]]:
    """(attribute, value) pairs the text states that differ from the product's own value.

    The product's own values (of every attribute) are blanked out of the text first, so a
    vocabulary value inside one ("cotton" in "organic cotton", material "oak" in brand "Oak & Co")
    is not reported; values contained in the attribute's own value are skipped outright. Longer
    values match first and each match is blanked ("navy blue" is not also "blue"). Attributes the
    product has no value for are not checked, but their values still shadow shorter ones (brand
    "Oak & Co" is not material "oak"). Pairs come in order of first mention in the text.

    ``source``: the product's own catalog text. A value it states is not a contradiction: "a
    grippy rubber outsole" of a leather boot, "breathable fabric", are the catalog's words (a
    brand, colour or material vocabulary also names components and generic words).
    """
    own = {a: v for a, v in ((a, _value(r)) for a, r in product.items()) if v is not None}
    work = text.lower()
    for value in sorted(set(own.values()), key=len, reverse=True):
        work = _pattern(value).sub(lambda m: " " * len(m.group()), work)
    candidates: dict[str, list[tuple[str, str]]] = {}  # lowercased value -> (attribute, value)
    for attribute, values in vocab.values.items():
        mine = own.get(attribute)
        for value in values:
            reported = candidates.setdefault(value.lower(), [])  # unchecked values still shadow
            if mine is not None and value.lower() != mine.lower() and not _mentions(mine, value):
                reported.append((attribute, value))
    found: list[tuple[int, str, str]] = []
    for key in sorted(candidates, key=len, reverse=True):
        pattern = _pattern(key)
        first = pattern.search(work)
        if first is None:
            continue
        found += [(first.start(), attribute, value) for attribute, value in candidates[key]]
        work = pattern.sub(lambda m: " " * len(m.group()), work)
    return [(attribute, value) for _, attribute, value in sorted(found, key=lambda f: f[0])
            if source is None or not _mentions(source, value)]


def hallucinated(text: str, product: Mapping[str, str], vocab: AttributeVocabulary, source: str | None = None) -> bool:
    """True when the text contradicts any of the product's attribute values (and, with ``source``,
    says what the product's own catalog text does not)."""
    return bool(contradictions(text, product, vocab, source))


def attribute_coverage(text: str, product: Mapping[str, str], attributes: Sequence[str]) -> float:
    """Fraction of the product's usable values among ``attributes`` the text mentions (1.0 if none)."""
    values = [v for v in (_value(product.get(a)) for a in attributes) if v is not None]
    if not values:
        return 1.0
    return sum(_mentions(text, v) for v in values) / len(values)
