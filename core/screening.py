"""Anomaly screening of the click/purchase stream, so click fraud never trains the model.

The FeedbackLog calls `AnomalyScreen.screen(event)` once for each new event (normal form, see
`core.events`), in arrival order, and stores the returned reasons with the event: a flagged event stays
in the log but is left out of training and counted. The screen holds only recent state in memory and
its answers depend on nothing but the event sequence, so after a restart the log re-feeds recent events
to rebuild the same state.

Reasons (a flagged event gets every reason that applies, in this order):
    user_rate      the user's events within window_s exceed max_user_events_per_window: the event that
                   crosses the cap and every later one while the window stays above it
    session_rate   the same for one session, with max_session_events_per_window
    no_impression  a click, add_to_cart or purchase on a product the session was not shown within
                   impression_window_s before it. A positive that passes counts as seen again, so
                   impression -> click -> purchase an hour later is clean; a flagged one does not (a bot
                   cannot launder its clicks into clean add_to_carts)
    product_burst  the product received at least product_burst_min_positives positives within window_s,
                   and more than product_burst_share of all positives in that window; the positive that
                   crosses both bars and every later one while it stays above them

Time is the event's `ts`, which the client supplies. Events may arrive slightly out of order: each window's
"now" is the largest ts it has seen (the user's, the session's, the whole stream's for bursts), and an
older event counts as happening now; it never moves a window back and never fails. So a bot cannot hide by
back-dating, and a lie about ts changes only its own user and session windows. A bot that stamps its
events ever later spreads its own rate (events a second apart never reach a cap of 120 a minute); ingest
refuses ts more than a day ahead, which bounds how far. The no-impression and product-burst rules do not
depend on its rate and still apply. The burst window runs on the stream's clock, so one positive stamped
far ahead moves it for everyone: until real time catches up, every positive counts into one window.

Memory is bounded: users, sessions and (session, product) pairs are each kept for at most
max_tracked_keys keys, least recently seen evicted first (an evicted key starts afresh). A rate window keeps
the stamps of the last cap + 1 events only, which is all "over the cap?" needs. The burst window keeps at
most max_tracked_keys positives: above max_tracked_keys / window_s positives a second it covers less time.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from core.config import doc
from core.events import POSITIVE_TYPES

REASONS = ("user_rate", "session_rate", "no_impression", "product_burst")


@dataclass
class ScreenConfig:
    window_s: float = doc(60.0, "sliding window (seconds of event time) of the rate and burst rules")
    max_user_events_per_window: int = doc(120, "events one user may send within window_s; more are user_rate")
    max_session_events_per_window: int = doc(90, "events one session may send within window_s; more are session_rate")
    require_impression: bool = doc(True, "flag positives on products the session was not shown (no_impression)")
    impression_window_s: float = doc(1800.0, "seconds an impression (or a clean positive) keeps its product seen")
    product_burst_min_positives: int = doc(30, "positives within window_s before a product can be bursting")
    product_burst_share: float = doc(0.3, "bursting also needs more than this share of all positives in the window")
    max_tracked_keys: int = doc(200_000, "users, sessions and (session, product) pairs each kept at most (LRU)")

    def __post_init__(self):
        if not self.window_s > 0 or not self.impression_window_s > 0:
            raise ValueError("screen.window_s and screen.impression_window_s must be > 0")
        if self.max_user_events_per_window < 1 or self.max_session_events_per_window < 1:
            raise ValueError("screen.max_user_events_per_window and max_session_events_per_window must be >= 1")
        if self.product_burst_min_positives < 1:
            raise ValueError("screen.product_burst_min_positives must be >= 1")
        if not 0 < self.product_burst_share < 1:
            raise ValueError("screen.product_burst_share must be within (0, 1)")
        if self.max_tracked_keys < 1:
            raise ValueError("screen.max_tracked_keys must be >= 1")


class AnomalyScreen:
    """Flags rate abuse, clicks without impressions and product bursts, one event at a time."""

    def __init__(self, cfg: ScreenConfig | None = None):
        self.cfg = cfg or ScreenConfig()
        self._users: OrderedDict[str, deque[float]] = OrderedDict()
        self._sessions: OrderedDict[str, deque[float]] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._positives: deque[tuple[float, str]] = deque()  # (stream time, product), oldest first
        self._product_positives: dict[str, int] = {}  # product -> positives in self._positives
        self._now = float("-inf")
        self._counts = dict.fromkeys(REASONS, 0)
        self._screened = 0
        self._flagged = 0

    def screen(self, event: dict) -> list[str]:
        """The reasons to keep this event out of training (empty: clean); updates the state."""
        cfg = self.cfg
        ts = float(event["ts"])
        flags = []
        if self._over_rate(self._users, event["user"], ts, cfg.max_user_events_per_window):
            flags.append("user_rate")
        if self._over_rate(self._sessions, event["session"], ts, cfg.max_session_events_per_window):
            flags.append("session_rate")
        kind = event["type"]
        seen_key = (event["session"], event["product_id"])
        if kind == "impression":
            if cfg.require_impression:
                self._mark_seen(seen_key, ts)
        elif kind in POSITIVE_TYPES:
            if cfg.require_impression:
                if self._was_shown(seen_key, ts):
                    self._mark_seen(seen_key, ts)
                else:
                    flags.append("no_impression")
            if self._bursting(event["product_id"], ts):
                flags.append("product_burst")
        self._count(flags)
        return flags

    def counts(self) -> dict[str, int]:
        """Events screened, events flagged, and flags raised so far by reason."""
        return {"screened": self._screened, "flagged": self._flagged, **self._counts}

    def tracked_keys(self) -> dict[str, int]:
        """Entries held per kind of state (each at most cfg.max_tracked_keys)."""
        return {
            "users": len(self._users),
            "sessions": len(self._sessions),
            "seen_products": len(self._seen),
            "window_positives": len(self._positives),
        }

    def _over_rate(self, windows: OrderedDict[str, deque[float]], key: str, ts: float, cap: int) -> bool:
        stamps = windows.get(key)
        if stamps is None:
            stamps = windows[key] = deque(maxlen=cap + 1)
            self._evict(windows)
        else:
            windows.move_to_end(key)
        now = max(ts, stamps[-1]) if stamps else ts
        stamps.append(now)
        # the deque holds the last cap + 1 stamps: over the cap iff the oldest of them is still in the window
        return len(stamps) > cap and stamps[0] > now - self.cfg.window_s

    def _was_shown(self, key: tuple[str, str], ts: float) -> bool:
        shown = self._seen.get(key)
        return shown is not None and ts - shown <= self.cfg.impression_window_s

    def _mark_seen(self, key: tuple[str, str], ts: float) -> None:
        shown = self._seen.get(key)
        if shown is None:
            self._seen[key] = ts
            self._evict(self._seen)
        else:
            self._seen[key] = max(shown, ts)
            self._seen.move_to_end(key)

    def _bursting(self, product: str, ts: float) -> bool:
        cfg = self.cfg
        self._now = max(self._now, ts)
        window, per_product = self._positives, self._product_positives
        cutoff = self._now - cfg.window_s
        while window and (window[0][0] <= cutoff or len(window) >= cfg.max_tracked_keys):
            _, old = window.popleft()
            left = per_product[old] - 1
            if left:
                per_product[old] = left
            else:
                del per_product[old]
        window.append((self._now, product))
        n = per_product[product] = per_product.get(product, 0) + 1
        return n >= cfg.product_burst_min_positives and n > cfg.product_burst_share * len(window)

    def _evict(self, keys: OrderedDict[Any, Any]) -> None:
        while len(keys) > self.cfg.max_tracked_keys:
            keys.popitem(last=False)

    def _count(self, flags: list[str]) -> None:
        self._screened += 1
        if flags:
            self._flagged += 1
            for reason in flags:
                self._counts[reason] += 1
