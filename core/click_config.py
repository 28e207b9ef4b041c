"""The typed config of the online click model (the stream's fast path): evidence, effects, safeguards.

One dataclass, read by `core.click_model` (evidence), `core.click_guard` (activation and freezes)
and `core.click_snapshot` (what the ingress applies). Defaults are sane for a shop's click stream
scored by the relevance task (scores are expected grades, 0..2); the stream config will hold it as
a `click_model:` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import doc


@dataclass
class ClickModelConfig:
    half_life_s: float = doc(1800.0, "evidence halves every this many seconds of event time")
    credit_interval_s: float = doc(600.0, "one credit per user per key per interval: a user's impressions and "
                                          "clicks on a key within this long after the first are one unit")
    attribute_fields: list[str] = doc(["brand", "colour", "material"],
                                      "product columns crossed with the query segment as keys")
    family_fields: list[str] = doc(["colour"], "attribute fields whose multi-word values end in a family word "
                                   "('forest green', 'royal blue'): a query naming the family ('green') states the field (those "
                                   "not among attribute_fields: none)")
    segment_field: str = doc("category", "product column that names a query's segment")
    segment_top_n: int = doc(10, "a query's segment, when its text names none: the most common segment "
                                 "among the products shown in its first this-many positions")
    examination: Literal["estimate", "fixed"] = doc("estimate", "the examination curve and score "
                                                    "calibration: fitted from the log (position-based model), or fixed")
    eta: float = doc(1.0, "prior examination curve P(examined at position p) = (1 / (p + 1)) ** eta")
    max_position: int = doc(20, "positions at or past this share one examination estimate")
    score_range: tuple[float, float] = doc((0.0, 2.0), "served scores are clipped to this range and binned")
    score_bins: int = doc(8, "bins of the score-to-click calibration")
    prior_click_rate: float = doc(0.3, "prior P(click | examined) of every score bin (fixed mode: the calibration)")
    prior_impressions: float = doc(10.0, "pseudo-impressions per (position, bin) cell behind the prior curves")
    refit_every: int = doc(500, "impressions between refits of the curves (a deterministic count, so a "
                                "replay refits at the same events)")
    purchase_credit: float = doc(1.0, "extra credit of an add-to-cart or purchase on a clicked unit")
    prior_strength: float = doc(3.0, "pseudo-expected clicks pulling a key's ratio toward its parent's")
    confidence: float = doc(0.975, "one-sided level of the lower and upper bounds on a key's ratio (keys are judged "
                                      "after every credit: a low level activates noise)")
    boost_confidence: float | None = doc(0.9, "one-sided level of the lower bound an active boost is sized by; "
                                              "penalties and every judgement (activation, freezes) stay on "
                                              "`confidence`. Lower: a boost nears its estimate sooner. Penalties stay "
                                              "conservative: a farm's unclicked impressions of what it skips make "
                                              "relevant products look unwanted (null: `confidence`)")
    gain: float = doc(0.8, "score units per unit of log(ratio bound / segment ratio)")
    max_boost: float = doc(0.8, "largest score increase a product can get (all keys together)")
    max_penalty: float = doc(0.5, "largest score decrease a product can get (all keys together)")
    boost_min_score: float = doc(0.5, "a boost goes only to products the reranker scored at least this: the layer "
                                      "reorders what the model finds relevant, never lifts what it finds irrelevant")
    min_evidence_span_s: float = doc(30.0, "a key activates only once its first credit is this old, so a flood "
                                           "is recognised as a surge before the keys it feeds go live")
    min_users: int = doc(5, "distinct users with a credited click before a key can be active")
    min_sessions: int = doc(5, "distinct sessions with a credited click before a key can be active")
    min_effective_users: float = doc(3.0, "a key whose credits come from fewer effective accounts (inverse Simpson "
                                           "number of its per-user credits) is frozen")
    user_memory_s: float = doc(7200.0, "a user or session counts as distinct this long after its last credit")
    max_users_per_key: int = doc(2000, "users and sessions remembered per key (least recent dropped)")
    promise_min_expected: float = doc(4.0, "expected clicks after activation before a boost's promise is judged")
    promise_fraction: float = doc(1.0, "a boost is frozen when the upper bound of its ratio since activation "
                                       "falls under this fraction of its lower bound at activation")
    min_expected_purchases: float = doc(4.0, "purchases a boost's credited clicks must predict (at its segment's purchases "
                                             "per click) before its conversions are judged")
    min_conversion_share: float = doc(0.5, "a boost is frozen when the upper bound of its purchases / predicted purchases "
                                           "is under this (clicks that never buy: a click farm; 0: off)")
    surge_factor: float = doc(4.0, "the stream surges while its click rate is this many times the usual (0: off)")
    surge_short_half_life_s: float = doc(5.0, "half-life of the current click rate")
    surge_usual_half_life_s: float = doc(600.0, "half-life of the usual click rate (surge clicks left out)")
    surge_warmup_s: float = doc(120.0, "stream time before surges are judged")
    max_surge_share: float = doc(0.5, "a key whose credited clicks came from surges more than this share is frozen")
    max_suspect_share: float = doc(0.5, "a key whose credited accounts are more than this share quarantined (behind a "
                                        "key frozen as an attack, never buying) is frozen too (suspect_accounts; 1: off)")
    max_query_sessions: int = doc(2, "an account that never bought, clicking one query's results in more than this "
                                     "many sessions within the half-life (a decayed count), is quarantined: a farm "
                                     "reuses its accounts, search after search (repeated_search; 0: off)")
    consolidate_after_s: float = doc(90.0, "a key's effect becomes a training target of the slow path (LoRA "
                                           "consolidation) only once it has been active this long in event time, "
                                           "unfrozen: the watch in which the safeguards catch an attack that passed "
                                           "activation, so what they freeze never reaches an adapter version")
    enabled: bool = doc(True, "apply the layer at serving time (an admin can turn it off)")

    def __post_init__(self):
        positive = {"half_life_s": self.half_life_s, "credit_interval_s": self.credit_interval_s,
                    "prior_impressions": self.prior_impressions, "prior_strength": self.prior_strength,
                    "user_memory_s": self.user_memory_s, "surge_short_half_life_s": self.surge_short_half_life_s,
                    "surge_usual_half_life_s": self.surge_usual_half_life_s}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"click_model.{name} must be > 0, got {value}")
        if not self.attribute_fields or len(set(self.attribute_fields)) != len(self.attribute_fields):
            raise ValueError("click_model.attribute_fields must name distinct product columns")
        if "product" in self.attribute_fields or self.segment_field in self.attribute_fields:
            raise ValueError("click_model.attribute_fields must not hold 'product' or the segment field")
        if self.segment_top_n < 1 or self.max_position < 1 or self.score_bins < 1 or self.refit_every < 1:
            raise ValueError("click_model.segment_top_n, max_position, score_bins and refit_every must be >= 1")
        low, high = self.score_range
        if not high > low:
            raise ValueError(f"click_model.score_range must be (low, high) with high > low, got {self.score_range}")
        if not 0 < self.prior_click_rate < 1 or not 0.5 < self.confidence < 1:
            raise ValueError("click_model.prior_click_rate must be in (0, 1) and confidence in (0.5, 1)")
        if self.boost_confidence is not None and not 0.5 <= self.boost_confidence <= self.confidence:
            raise ValueError("click_model.boost_confidence must be within 0.5..confidence (null: confidence), "
                             f"got {self.boost_confidence}")
        if self.eta < 0 or self.purchase_credit < 0 or self.gain <= 0:
            raise ValueError("click_model.eta and purchase_credit must be >= 0, gain > 0")
        if self.max_boost < 0 or self.max_penalty < 0:
            raise ValueError("click_model.max_boost and max_penalty must be >= 0")
        if self.min_users < 1 or self.min_sessions < 1 or self.max_users_per_key < self.min_users:
            raise ValueError("click_model.min_users and min_sessions must be >= 1, max_users_per_key >= min_users")
        if not 1 <= self.min_effective_users <= self.min_users:
            raise ValueError("click_model.min_effective_users must be within 1..min_users")
        if self.promise_min_expected <= 0 or not 0 < self.promise_fraction <= 1:
            raise ValueError("click_model.promise_min_expected must be > 0, promise_fraction in (0, 1]")
        if self.min_evidence_span_s < 0 or self.consolidate_after_s < 0:
            raise ValueError("click_model.min_evidence_span_s and consolidate_after_s must be >= 0")
        if self.min_expected_purchases <= 0 or not 0 <= self.min_conversion_share < 1:
            raise ValueError("click_model.min_expected_purchases must be > 0 and min_conversion_share in [0, 1)")
        if self.max_query_sessions < 0:
            raise ValueError("click_model.max_query_sessions must be >= 0 (0: off)")
        if not 0 < self.max_suspect_share <= 1:
            raise ValueError("click_model.max_suspect_share must be in (0, 1]")
        if self.surge_factor < 0 or self.surge_warmup_s < 0 or not 0 < self.max_surge_share <= 1:
            raise ValueError("click_model.surge_factor and surge_warmup_s must be >= 0, max_surge_share in (0, 1]")
