"""When the UpdateCoordinator fires: the pending window of log records and the policy over it.

An update fires when the window holds `min_examples` labelled examples, or when its oldest event
has waited `max_wait_s` and at least `min_examples_on_timeout` examples are there, and never sooner
than `cooldown_s` after the previous update ended. Pure: the coordinator passes the clock in.
"""

from __future__ import annotations

import statistics

from core.feedback import examples_from_events, result_list_key
from core.stream_config import UpdatePolicy

SURGE_REASON = "traffic surge"
ATTACK_REASON = "flagged traffic"
HELD = "not trained or promoted automatically (review it, then release it by hand)"
"""How every held window's reason ends (POST /v1/updates/{update_id}/release)."""


class PendingWindow:
    """Log records read since the last decision (the next update's batch) and their example count."""

    def __init__(self, policy: UpdatePolicy, product_texts: dict[str, str], eta: float, max_weight: float):
        self.policy, self.texts, self.eta, self.max_weight = policy, product_texts, eta, max_weight
        self.records: list[dict] = []
        self.examples = 0
        self._lists: dict[tuple[str, str], list[dict]] = {}  # result list -> its records
        self._counts: dict[tuple[str, str], int] = {}  # result list -> its labelled examples

    def add(self, records: list[dict]) -> None:
        """Appends newly read records; only the result lists they touch are labelled again (a list's
        examples depend on that list alone), so a poll costs what it read, not the whole window."""
        if not records:
            return
        self.records.extend(records)
        touched = set()
        for r in records:
            key = result_list_key(r)
            if key is not None:
                self._lists.setdefault(key, []).append(r)
                touched.add(key)
        for key in touched:
            self._counts[key] = len(examples_from_events(self._lists[key], self.texts, self.eta, self.max_weight)[0])
        self.examples = sum(self._counts.values())

    @property
    def first_offset(self) -> int | None:
        return self.records[0]["offset"] if self.records else None

    def span(self) -> dict:
        if not self.records:
            return {"events": 0}
        stamps = [r["ingested_at"] for r in self.records]
        return {"events": len(self.records), "first_offset": self.records[0]["offset"],
                "end_offset": self.records[-1]["offset"] + 1,
                "first_ingested_at": stamps[0], "last_ingested_at": stamps[-1],
                "peak_events_per_s": peak_rate(stamps, self.policy.surge_peak_s),
                "burst_events_per_s": peak_rate(stamps, self.policy.surge_burst_s, self.policy.surge_burst_min_events)}

    def due(self, now: float, last_update_end: float | None, force: bool = False) -> str | None:
        """Why an update should start now, or None."""
        if not self.records:
            return None
        if last_update_end is not None and now - last_update_end < self.policy.cooldown_s and not force:
            return None
        if force:
            return "forced"
        if self.examples >= self.policy.min_examples:
            return f"{self.examples} labelled examples >= {self.policy.min_examples}"
        waited = now - self.records[0]["ingested_at"]
        if waited >= self.policy.max_wait_s and self.examples >= self.policy.min_examples_on_timeout:
            return f"oldest event waited {waited:.0f} s >= {self.policy.max_wait_s:.0f} s"
        return None

    def clear(self) -> None:
        self.records, self.examples = [], 0
        self._lists, self._counts = {}, {}


def aged(records: list[dict], now: float, watch_s: float) -> int:
    """How many of `records` (in log order) are at least `watch_s` old by ingest time: the prefix
    that may join a window now (an older record behind a younger one waits with it); all of them
    when `watch_s` is 0 (off), whatever the clocks say."""
    if watch_s <= 0:
        return len(records)
    n = 0
    for r in records:
        if now - r["ingested_at"] < watch_s:
            break
        n += 1
    return n


def window_rate(span: dict) -> float | None:
    """Events per second of ingest over a window (None when it spans no measurable time)."""
    seconds = span.get("last_ingested_at", 0) - span.get("first_ingested_at", 0)
    return span["events"] / seconds if span.get("events") and seconds >= 1.0 else None


def peak_rate(stamps: list[float], seconds: float, min_events: int = 1) -> float | None:
    """Events per second in the busiest `seconds` of ingest time (any stretch, not fixed buckets);
    None when the window is shorter than that (its average rate says it all) or when that stretch
    holds fewer than `min_events` (a handful of events close together is no rate)."""
    if seconds <= 0 or not stamps or max(stamps) - min(stamps) < seconds:
        return None
    ordered, busiest, start = sorted(stamps), 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > seconds:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest / seconds if busiest >= min_events else None


def surge(span: dict, decisions: list[dict], factor: float) -> str | None:
    """Why a window must not be promoted automatically: its event rate, or the rate of its busiest
    stretch (`peak_events_per_s`, 20 s: a flood that began in the window's last seconds;
    `burst_events_per_s`, 2 s: a flood of a few seconds, which 20 s dilute), is `factor` times the
    median average rate of the earlier windows (surges and flagged floods excluded), as a click
    farm's flood is (a window released by hand is that window again: not counted). A flash sale
    trips it too: then an admin releases the window after a look (POST /v1/updates/{update_id}/release),
    and it is trained and gated like any other."""
    rate, where = window_rate(span), ""
    for key, label in (("peak_events_per_s", " at its peak"), ("burst_events_per_s", " in its busiest seconds")):
        value = span.get(key)
        if rate is not None and value is not None and value > rate:
            rate, where = value, label
    earlier = [window_rate((d.get("examples") or {}).get("span") or {}) for d in decisions
               if not str(d.get("reason", "")).startswith((SURGE_REASON, ATTACK_REASON)) and not d.get("released")]
    earlier = [r for r in earlier if r]
    if factor <= 0 or rate is None or not earlier:
        return None
    usual = statistics.median(earlier)
    if rate > factor * usual:
        return (f"{SURGE_REASON}: {rate:.1f} events/s{where} is {rate / usual:.1f}x the usual {usual:.1f}/s; "
                f"{HELD}")
    return None


def flagged(records: list[dict], max_share: float, min_flagged: int) -> str | None:
    """Why a window must not be promoted automatically: the anomaly screen flagged more than
    `max_share` of its events (at least `min_flagged` of them). Flagged events never train, but an
    attack is rarely all caught: the rest of a window it dominates is suspect too."""
    if max_share >= 1 or not records:
        return None
    n = sum(1 for r in records if r.get("flags"))
    share = n / len(records)
    if n < min_flagged or share <= max_share:
        return None
    return (f"{ATTACK_REASON}: the anomaly screen flagged {n} of {len(records)} events ({share:.0%} > {max_share:.0%}); "
            f"{HELD}")
