"""Serving-time safeguards of the click model, as Ekko does them: activate a key's effect only on
enough evidence from enough accounts, watch it afterwards, and freeze it when it misbehaves.

A key is *pending* (no effect) until its ratio bound clears the segment's, its first credit is
min_evidence_span_s old and enough distinct users and sessions earned it a credit; then *active* (its effect is served) with a **promise**: the lower
bound of its ratio at activation. It is **frozen** (no effect, until an admin clears it) when
- `surge`: more than max_surge_share of its credited clicks arrived while the whole stream's click
  rate was surge_factor x its usual rate (a flood, as `core.update_policy.surge` judges windows);
- `few_accounts`: its credits are concentrated on fewer than min_effective_users effective accounts
  (the inverse Simpson number of its per-user credits: n for n equal accounts);
- `no_conversions` (boosts only): its credited clicks are not followed by purchases or carts at its
  segment's rate: with at least min_expected_purchases expected at the segment's purchases per
  click, the upper bound of its purchase ratio is under min_conversion_share (click farms click;
  they rarely buy);
- `underdelivered`: since activation, with at least promise_min_expected clicks expected at the
  positions it was shown at, the upper bound of its ratio is under promise_fraction x the promise:
  the positions it boosted stopped earning the clicks it promised;
- `suspect_accounts`: more than max_suspect_share of the accounts credited on it are quarantined
  (`core.click_model`: they were behind a key frozen as an attack): a farm's evidence reaches
  beyond the keys it meant to boost (the relevant products it skips earn penalties);
- `admin`: an operator froze it.
An active key whose bound no longer clears the segment's serves no effect but stays active; it goes
back to pending (`deactivated`) when its mean ratio crosses the segment's (hysteresis, so a bound
wavering around the line does not flood the audit log).
Every transition is one audit record (`core.audit` format: decision, reason, numbers), stamped
with the log offset of the event that caused it, so a replay can skip records already written.
Decisions depend on the event sequence only, so a replay from a checkpoint decides the same.
"""

from __future__ import annotations

import math

from core.click_config import ClickModelConfig
from core.click_evidence import Decayed, KeyEvidence, ratio_bounds

SOURCE = "click_model"
FREEZE_REASONS = ("surge", "few_accounts", "no_conversions", "underdelivered", "suspect_accounts", "admin")
ATTACK_REASONS = ("surge", "few_accounts", "no_conversions")
"""Freezes that say the evidence is not genuine (an update window holding them is not promoted)."""
ACCOUNT_REASONS = ("few_accounts", "no_conversions")
"""Attack freezes that say the accounts are not genuine (a surge says the moment is not)."""


class SurgeMeter:
    """Whether the stream's click rate is now surge_factor x its usual rate. The usual rate leaves
    surge clicks out (a long flood does not become usual); both rates are corrected for the short
    history at the start of the stream (a decayed sum over age t holds 1 - 2^(-t/h) of its level)."""

    def __init__(self, cfg: ClickModelConfig):
        self.cfg = cfg
        self.short, self.usual = Decayed(), Decayed()
        self.first_ts: float | None = None

    def click(self, ts: float) -> bool:
        """Counts one click; True when it arrived during a surge."""
        cfg = self.cfg
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.short.add(1.0, ts, cfg.surge_short_half_life_s)
        surging = self.surging(ts)
        if not surging:
            self.usual.add(1.0, ts, cfg.surge_usual_half_life_s)
        return surging

    def surging(self, ts: float) -> bool:
        """Whether the stream surges at event time `ts` (a later clock already seen counts as now)."""
        cfg = self.cfg
        if self.first_ts is None:
            return False
        now = max(ts, self.short.ts)
        age = now - self.first_ts
        if cfg.surge_factor <= 0 or age < cfg.surge_warmup_s:
            return False
        usual = self._rate(self.usual, now, age, cfg.surge_usual_half_life_s)
        return usual > 0 and self._rate(self.short, now, age, cfg.surge_short_half_life_s) > cfg.surge_factor * usual

    @staticmethod
    def _rate(total: Decayed, now: float, age: float, half_life: float) -> float:
        filled = 1.0 - 0.5 ** (age / half_life)
        return total.at(now, half_life) * math.log(2) / half_life / filled if filled > 0 else 0.0

    def state(self) -> dict:
        return {"short": self.short.to_list(), "usual": self.usual.to_list(), "first_ts": self.first_ts}

    def restore(self, state: dict) -> None:
        self.short, self.usual = Decayed.from_list(state["short"]), Decayed.from_list(state["usual"])
        self.first_ts = state["first_ts"]


def key_effect(lower: float, upper: float, baseline: float, cfg: ClickModelConfig) -> float:
    """Score units: gain x log of the conservative bound over the segment's ratio, 0 when the bounds
    hold the baseline, clipped to [-max_penalty, max_boost]."""
    if baseline <= 0:
        return 0.0
    if lower > baseline:
        return min(cfg.max_boost, cfg.gain * math.log(lower / baseline))
    if 0 < upper < baseline:
        return max(-cfg.max_penalty, cfg.gain * math.log(upper / baseline))
    return 0.0


class KeyGuard:
    """The status of every key that ever left pending: active (with its promise) or frozen."""

    def __init__(self, cfg: ClickModelConfig):
        self.cfg = cfg
        self.status: dict[str, dict] = {}  # key name -> {"state", "promise", "boost", "offset", "since", "reason"}

    def is_active(self, name: str) -> bool:
        return self.status.get(name, {}).get("state") == "active"

    def active_for(self, name: str, now: float) -> float:
        """Event-time seconds since `name` became active (0 when it is not; a key activated before
        activation times were kept counts as long active)."""
        status = self.status.get(name, {})
        if status.get("state") != "active":
            return 0.0
        return now - status.get("since", float("-inf"))

    def is_frozen(self, name: str) -> bool:
        return self.status.get(name, {}).get("state") == "frozen"

    def judge(self, name: str, ev: KeyEvidence, bounds: tuple[float, float, float], baseline: float,
              now: float, offset: int, purchases_per_click: float = 0.0) -> dict | None:
        """Moves `name` between pending, active and frozen on its current evidence; the audit record
        of the move, or None. Cheap unless something moves: it runs on every event that touches a key."""
        cfg = self.cfg
        status = self.status.get(name)
        if status is not None and status["state"] == "frozen":
            return None
        lower, mean, upper = bounds
        effect = key_effect(lower, upper, baseline, cfg)
        numbers = lambda: _numbers(ev, bounds, baseline, effect, now, cfg)  # noqa: E731 (only for a record)
        if status is None:
            if effect == 0.0 or ev.first_credit_ts is None or now - ev.first_credit_ts < cfg.min_evidence_span_s:
                return None
            users, sessions = ev.accounts(now, cfg)
            if users < cfg.min_users or sessions < cfg.min_sessions:
                return None
            reason = self._account_or_surge_reason(ev, now) or self._conversion_reason(ev, now, effect, purchases_per_click)
            if reason:
                return self.freeze(name, reason, offset, numbers())
            self.status[name] = {"state": "active", "promise": lower, "boost": effect > 0, "offset": offset, "since": now}
            ev.since_observed, ev.since_expected = Decayed(), Decayed()
            return _record("activated", name, f"ratio bounds {lower:.2f}..{upper:.2f} vs segment {baseline:.2f}, "
                           f"{users} users, {sessions} sessions", offset, numbers())
        reason = (self._account_or_surge_reason(ev, now) or self._broken_promise(ev, status, now)
                  or self._conversion_reason(ev, now, effect if status.get("boost") else 0.0, purchases_per_click))
        if reason:
            return self.freeze(name, reason, offset, numbers())
        if (mean - baseline) * (1 if status.get("boost") else -1) <= 0:  # hysteresis: the bound may waver
            del self.status[name]
            return _record("deactivated", name, f"ratio {mean:.2f} no longer {'above' if status.get('boost') else 'below'} "
                           f"the segment's {baseline:.2f}", offset, numbers())
        return None

    def freeze(self, name: str, reason: str, offset: int, numbers: dict | None = None) -> dict:
        kind = reason.split(":", 1)[0]
        if kind not in FREEZE_REASONS:
            raise ValueError(f"unknown freeze reason {kind!r}; one of {', '.join(FREEZE_REASONS)}")
        self.status[name] = {"state": "frozen", "reason": reason, "offset": offset}
        return _record("frozen", name, reason, offset, numbers or {})

    def clear(self, name: str, offset: int) -> dict:
        self.status.pop(name, None)
        return _record("cleared", name, "admin: evidence and status dropped", offset, {})

    def _account_or_surge_reason(self, ev: KeyEvidence, now: float) -> str | None:
        cfg = self.cfg
        effective = ev.effective_users(now, cfg)
        observed = ev.observed.at(now, cfg.half_life_s)
        share = ev.surge.at(now, cfg.half_life_s) / observed if observed > 0 else 0.0
        if share > cfg.max_surge_share:
            return f"surge: {share:.0%} of its credited clicks arrived during a click surge"
        if effective < cfg.min_effective_users:
            return f"few_accounts: its credits come from {effective:.1f} effective accounts < {cfg.min_effective_users:g}"
        return None

    def _conversion_reason(self, ev: KeyEvidence, now: float, effect: float, purchases_per_click: float) -> str | None:
        cfg = self.cfg
        if effect <= 0 or cfg.min_conversion_share <= 0:
            return None
        clicks = ev.clicks.at(now, cfg.half_life_s)
        expected = clicks * purchases_per_click
        if expected < cfg.min_expected_purchases:
            return None
        buys = ev.buys.at(now, cfg.half_life_s)
        upper = ratio_bounds(buys, expected, 1.0, 0.5, cfg.confidence)[2]
        if upper < cfg.min_conversion_share:
            return (f"no_conversions: {clicks:.0f} credited clicks, {buys:.0f} purchases where the segment's "
                    f"{purchases_per_click:.2f} per click predicts {expected:.1f} (ratio <= {upper:.2f})")
        return None

    def _broken_promise(self, ev: KeyEvidence, status: dict, now: float) -> str | None:
        cfg = self.cfg
        expected = ev.since_expected.at(now, cfg.half_life_s)
        if not status.get("boost") or expected < cfg.promise_min_expected:
            return None
        observed = ev.since_observed.at(now, cfg.half_life_s)
        upper = ratio_bounds(observed, expected, 1.0, 0.5, cfg.confidence)[2]  # Jeffreys-like: defined at 0 clicks
        if upper < cfg.promise_fraction * status["promise"]:
            return (f"underdelivered: since activation {observed:.1f} clicks against {expected:.1f} expected, "
                    f"ratio <= {upper:.2f} under the promised {status['promise']:.2f}")
        return None

    def state(self) -> dict:
        return {name: dict(s) for name, s in self.status.items()}

    def restore(self, state: dict) -> None:
        self.status = {name: dict(s) for name, s in state.items()}


def _numbers(ev: KeyEvidence, bounds: tuple[float, float, float], baseline: float, effect: float, now: float,
             cfg: ClickModelConfig) -> dict:
    users, sessions = ev.accounts(now, cfg)
    return {"observed": round(ev.observed.at(now, cfg.half_life_s), 3),
            "expected": round(ev.expected.at(now, cfg.half_life_s), 3),
            "ratio": [round(b, 3) for b in bounds], "segment_ratio": round(baseline, 3), "effect": round(effect, 4),
            "users": users, "sessions": sessions, "effective_users": round(ev.effective_users(now, cfg), 2)}


def _record(decision: str, key: str, reason: str, offset: int, numbers: dict) -> dict:
    return {"source": SOURCE, "decision": decision, "key": key, "reason": reason, "offset": int(offset),
            "metrics": numbers}


def format_record(d: dict) -> str:
    """One readable line per click-model decision."""
    m = d.get("metrics") or {}
    ratio = m.get("ratio")
    numbers = f"ratio {ratio[0]:.2f}/{ratio[1]:.2f}/{ratio[2]:.2f} effect {m.get('effect', 0):+.3f}" if ratio else ""
    return " | ".join([SOURCE, f"{d.get('decision', '?'):<11}", d.get("key", "?"), f"offset {d.get('offset', '?')}",
                       numbers, d.get("reason", "")])
