"""The recommend task's side of the stream: next-item examples from clicks and purchases, the
pending window they wait in, and the gate's decision. Pure (no Ray, no torch): the RecUpdater
actor (actors/rec_updater.py) is a thin shell over it and `train.rec_update` trains and scores.

A shopper's trail is their interacted items in log order (click, add_to_cart, purchase; flagged
events never count), keyed by the log's user pseudonym (FeedbackLog records: core/feedback_store.py). Every interaction after the first is an example: (the items before it, the
item). An item repeated right after itself (a click, then its add-to-cart and purchase) extends
nothing: the next different item is the target. Trails are kept across windows (bounded), so a
shopper's history does not reset when an update fires.

Shoppers are split once, by a salted hash of their id: those in the holdout share never train;
their examples are the fresh set on which the gate compares the candidate with CURRENT, by AUC
(the share of the catalog ranked below each next item: a shopper's next click is one product of
thousands, and top-10 metrics on a few dozen of them are mostly zero). Both kinds
are kept in rolling buffers across decisions (`RecWindow`). The gate promotes a candidate that is
not worse than CURRENT on the fresh set by more than `tolerance`, and not worse on the offline
validation users (the shop's history) than CURRENT or the offline-trained version the stream
started from by more than `tolerance`; it needs `min_holdout` fresh examples to judge at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

INTERACTIONS = frozenset({"click", "add_to_cart", "purchase"})


@dataclass(frozen=True)
class NextItem:
    user: str
    history: tuple[str, ...]   # oldest first
    target: str
    offset: int                # the log offset of the target's event
    listed: bool = False       # the target was taken from a ranked list with no query: a recommendation


def is_listed(record: dict) -> bool:
    """A click on a ranked list that no search asked for (a position, no query): what a recommender showed."""
    return record.get("position") is not None and not record.get("query")


def in_holdout(user: str, salt: str, share: float) -> bool:
    """A stable per-user draw: the same shopper is always on the same side."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


class Trails:
    """Recent items per shopper (at most `length` each, at most `max_users` shoppers, least recently
    active dropped first); `add` turns new log records into next-item examples."""

    def __init__(self, length: int, max_users: int = 100_000):
        self.length, self.max_users = length, max_users
        self._trails: OrderedDict[str, list[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._trails)

    def add(self, records: Iterable[dict], known: set[str] | None = None) -> tuple[list[NextItem], dict[str, int]]:
        """Examples from `records` (log order); and counts of what was passed over, by reason.
        `known`: item ids that can be trained and ranked (others are counted as unknown_item)."""
        examples: list[NextItem] = []
        skipped = {"flagged": 0, "not_an_interaction": 0, "unknown_item": 0, "no_user": 0, "repeat": 0}
        for r in records:
            if r.get("flags"):
                skipped["flagged"] += 1
                continue
            if r.get("type") not in INTERACTIONS:
                skipped["not_an_interaction"] += 1
                continue
            user, item = r.get("user"), r.get("product_id")
            if not user:
                skipped["no_user"] += 1
                continue
            if not item or (known is not None and item not in known):
                skipped["unknown_item"] += 1
                continue
            trail = self._trails.pop(user, [])
            self._trails[user] = trail   # most recently active last
            if trail and trail[-1] == item:
                skipped["repeat"] += 1
                continue
            if trail:
                examples.append(NextItem(user, tuple(trail), item, int(r.get("offset", -1)), is_listed(r)))
            trail.append(item)
            del trail[:-self.length]
            while len(self._trails) > self.max_users:
                self._trails.popitem(last=False)
        return examples, skipped

    def recent(self, user: str) -> list[str]:
        """The shopper's items, oldest first ([] for one never seen)."""
        return list(self._trails.get(user, ()))

    def state(self) -> dict[str, list[str]]:
        return {u: list(t) for u, t in self._trails.items()}

    @classmethod
    def from_state(cls, state: dict[str, list[str]], length: int, max_users: int = 100_000) -> "Trails":
        trails = cls(length, max_users)
        for user, items in state.items():
            trails._trails[user] = list(items)[-length:]
        return trails


@dataclass
class RecWindow:
    """The examples updates learn from and are judged on: rolling buffers of the newest `keep_train`
    training examples and `keep_fresh` held-out ones, kept across decisions (a rejected update's
    evidence is not thrown away; the gate judges on more than one window's held-out shoppers, who
    never train), and what arrived since the last decision (`new_train`: what makes one due)."""
    salt: str
    holdout_share: float
    keep_train: int = 512
    keep_fresh: int = 256
    train: list[NextItem] = field(default_factory=list)
    fresh: list[NextItem] = field(default_factory=list)
    new_train: int = 0
    new_fresh: int = 0
    end_offset: int | None = None
    opened_at: float | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, examples: list[NextItem], skipped: dict[str, int], end_offset: int, now: float) -> None:
        for ex in examples:
            if in_holdout(ex.user, self.salt, self.holdout_share):
                self.fresh.append(ex)
                self.new_fresh += 1
            else:
                self.train.append(ex)
                self.new_train += 1
        del self.train[:-self.keep_train]
        del self.fresh[:-self.keep_fresh]
        if examples and self.opened_at is None:
            self.opened_at = now
        self.end_offset = end_offset
        for k, v in skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v

    def due(self, now: float, min_examples: int, max_wait_s: float, min_on_timeout: int,
            last_end: float | None, cooldown_s: float) -> str | None:
        """Why an update should start now, or None (counts what arrived since the last decision)."""
        if last_end is not None and now - last_end < cooldown_s:
            return None
        if self.new_train >= min_examples:
            return f"{self.new_train} new next-item examples"
        if self.opened_at is not None and now - self.opened_at >= max_wait_s and self.new_train >= min_on_timeout:
            return f"{self.new_train} new next-item examples after {now - self.opened_at:.0f} s"
        return None

    def decided(self) -> None:
        """An update was decided on the buffers as they are: what arrives next counts as new."""
        self.new_train = self.new_fresh = 0
        self.opened_at = None
        self.skipped = {}

    def span(self) -> dict:
        return {"train_examples": len(self.train), "new_train_examples": self.new_train,
                "fresh_examples": len(self.fresh), "new_fresh_examples": self.new_fresh,
                "fresh_unlisted": sum(not e.listed for e in self.fresh),
                "users": len({e.user for e in self.train}), "fresh_users": len({e.user for e in self.fresh}),
                "end_offset": self.end_offset, "skipped": dict(self.skipped)}

    def state(self) -> dict:
        return {"train": [_ex(e) for e in self.train], "fresh": [_ex(e) for e in self.fresh]}

    def restore(self, state: dict) -> None:
        self.train = [NextItem(u, tuple(h), t, o, bool(x)) for u, h, t, o, x in state.get("train", [])][-self.keep_train:]
        self.fresh = [NextItem(u, tuple(h), t, o, bool(x)) for u, h, t, o, x in state.get("fresh", [])][-self.keep_fresh:]

    def judged(self, unlisted_only: bool) -> list[NextItem]:
        """The fresh examples the gate scores: with `unlisted_only`, those whose target the shopper
        did not take from a recommendation list. A click on what CURRENT showed favours CURRENT (it
        put that item in its top 10, by construction); an item reached by search or by browsing does not."""
        return [e for e in self.fresh if not (unlisted_only and e.listed)]


def _ex(e: NextItem) -> list:
    return [e.user, list(e.history), e.target, e.offset, e.listed]


@dataclass(frozen=True)
class RecGateResult:
    promote: bool
    reason: str
    fresh_current: float | None
    fresh_candidate: float | None
    offline_current: float
    offline_candidate: float


def decide(fresh_current: float | None, fresh_candidate: float | None, fresh_n: int, offline_current: float,
           offline_candidate: float, tolerance: float, min_holdout: int,
           offline_anchor: float | None = None) -> RecGateResult:
    """The gate: CURRENT and the candidate on the fresh held-out examples (AUC: the share of the
    catalog each next item is ranked above, averaged) and on the offline validation users (NDCG@10). A candidate is promoted when neither set shows it worse than CURRENT
    by more than `tolerance`, nor the offline set worse than `offline_anchor` (the offline-trained
    version the stream started from) by more than `tolerance` (so small steps cannot add up to
    forgetting the shop's history), and the fresh set has at least `min_holdout` examples (else
    nothing is promoted: with no fresh evidence nothing is known to have been learnt)."""
    def result(promote: bool, reason: str) -> RecGateResult:
        return RecGateResult(promote, reason, fresh_current, fresh_candidate, offline_current, offline_candidate)

    if fresh_n < min_holdout or fresh_current is None or fresh_candidate is None:
        return result(False, f"{fresh_n} fresh held-out examples (the gate needs {min_holdout})")
    if offline_anchor is not None and offline_candidate < offline_anchor - tolerance:
        return result(False, f"offline NDCG@10 {offline_candidate:.4f} < the offline version's {offline_anchor:.4f} "
                             f"- {tolerance}")
    if offline_candidate < offline_current - tolerance:
        return result(False, f"offline NDCG@10 {offline_candidate:.4f} < CURRENT {offline_current:.4f} - {tolerance}")
    if fresh_candidate < fresh_current - tolerance:
        return result(False, f"fresh AUC {fresh_candidate:.4f} < CURRENT {fresh_current:.4f} - {tolerance}")
    return result(True, f"fresh AUC {fresh_current:.4f} -> {fresh_candidate:.4f}, "
                        f"offline {offline_current:.4f} -> {offline_candidate:.4f}")
