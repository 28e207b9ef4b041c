"""The click model's evidence: decayed counts, ratio bounds, the position-and-score click curves.

Pure numbers, no I/O. `core.click_model` feeds them from the stream, `core.click_guard` judges them.

- `Decayed`: an exponentially decayed sum, decayed lazily (only when touched or read), so a million
  idle keys cost nothing per event. An event older than the last one touched decays as of that one.
- `ratio_bounds`: the Gamma posterior of a Poisson rate ratio (observed clicks ~ Poisson(ratio x
  expected)) with a Gamma(prior_strength x parent, prior_strength) prior: its mean shrinks toward
  the parent's ratio when the key has little evidence; the bounds are Wilson-Hilferty quantiles.
- `PositionModel`: P(click) = P(examined | position) x P(click | examined, served score), the
  position-based click model. Fitted from the log by alternating the two factors over a table of
  impressions and clicks per (position, score bin), started from and smoothed by the prior curves
  (eta and prior_click_rate); or fixed at the prior.
- `KeyEvidence`: everything one key keeps (observed and expected, since activation too, surge
  share, users and sessions that earned it a credit, each user's share of its observed and
  expected clicks, so that a quarantined account's evidence can be taken out again).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from statistics import NormalDist

from core.click_config import ClickModelConfig


class Decayed:
    """A sum whose terms halve every `half_life` seconds; stored as (value at `ts`, `ts`)."""

    __slots__ = ("value", "ts")

    def __init__(self, value: float = 0.0, ts: float = float("-inf")):
        self.value, self.ts = float(value), float(ts)

    def add(self, amount: float, ts: float, half_life: float) -> None:
        if ts >= self.ts:
            self.value = self.at(ts, half_life) + amount
            self.ts = ts
        else:  # out of order: it counts as of the latest time seen, decayed by how much older it is
            self.value += amount * 0.5 ** ((self.ts - ts) / half_life)

    def remove(self, amount: float, ts: float, half_life: float) -> None:
        """Takes out `amount` valued at `ts` (what `add` put in, decayed to `ts`); never below 0."""
        now = max(ts, self.ts)
        self.value = max(0.0, self.at(now, half_life) - amount * 0.5 ** ((now - ts) / half_life))
        self.ts = now

    def at(self, now: float, half_life: float) -> float:
        if self.value == 0.0 or now <= self.ts:
            return self.value
        return self.value * 0.5 ** ((now - self.ts) / half_life)

    def to_list(self) -> list[float]:
        return [self.value, self.ts]

    @classmethod
    def from_list(cls, data: list[float]) -> Decayed:
        return cls(data[0], data[1])


def _gamma_quantile(shape: float, rate: float, z: float) -> float:
    """Wilson-Hilferty approximation of the Gamma(shape, rate) quantile at standard-normal z."""
    if shape <= 0:
        return 0.0
    c = 1.0 / (9.0 * shape)
    return max(0.0, shape * (1.0 - c + z * math.sqrt(c)) ** 3 / rate)


def ratio_bounds(observed: float, expected: float, parent: float, prior_strength: float,
                 confidence: float) -> tuple[float, float, float]:
    """(lower, mean, upper) of the observed/expected ratio shrunk toward `parent`."""
    shape = prior_strength * parent + observed
    rate = prior_strength + expected
    z = NormalDist().inv_cdf(confidence)
    return _gamma_quantile(shape, rate, -z), shape / rate, _gamma_quantile(shape, rate, z)


class PositionModel:
    """The click curves: examination by position, click rate by served-score bin."""

    def __init__(self, cfg: ClickModelConfig):
        self.cfg = cfg
        n_pos, n_bins = cfg.max_position + 1, cfg.score_bins + 1  # last bin: no score served
        self.prior_exam = [(1.0 / (p + 1)) ** cfg.eta for p in range(n_pos)]
        self.exam = list(self.prior_exam)
        self.click = [cfg.prior_click_rate] * n_bins
        self.impressions = [[0.0] * n_bins for _ in range(n_pos)]
        self.clicks = [[0.0] * n_bins for _ in range(n_pos)]
        self.since_fit = 0

    def cell(self, position: int, score: float | None) -> tuple[int, int]:
        p = min(int(position), self.cfg.max_position)
        if score is None or not math.isfinite(score):
            return p, self.cfg.score_bins
        low, high = self.cfg.score_range
        share = (min(max(float(score), low), high) - low) / (high - low)
        return p, min(int(share * self.cfg.score_bins), self.cfg.score_bins - 1)

    def p_click(self, position: int, score: float | None) -> float:
        p, b = self.cell(position, score)
        return min(1.0, self.exam[p] * self.click[b])

    def record_impression(self, position: int, score: float | None) -> None:
        """Counts one impression; refits every `refit_every` impressions in estimate mode."""
        p, b = self.cell(position, score)
        self.impressions[p][b] += 1.0
        self.since_fit += 1
        if self.cfg.examination == "estimate" and self.since_fit >= self.cfg.refit_every:
            self.fit()

    def record_click(self, position: int, score: float | None) -> None:
        """Counts the first click on an impression counted before."""
        p, b = self.cell(position, score)
        self.clicks[p][b] += 1.0

    def fit(self, iterations: int = 20) -> None:
        """Alternating maximum likelihood of clicks[p][b] ~ Poisson(exam[p] x click[b] x impressions[p][b]),
        each cell carrying `prior_impressions` pseudo-impressions clicked at the prior rate; exam[0] = 1."""
        self.since_fit = 0
        cfg, n_pos, n_bins = self.cfg, len(self.exam), len(self.click)
        prior_n, prior_rate = cfg.prior_impressions, cfg.prior_click_rate
        imps = [[self.impressions[p][b] + prior_n for b in range(n_bins)] for p in range(n_pos)]
        clicks = [[self.clicks[p][b] + prior_n * self.prior_exam[p] * prior_rate for b in range(n_bins)]
                  for p in range(n_pos)]
        exam, click = list(self.prior_exam), [prior_rate] * n_bins
        for _ in range(iterations):
            click = [sum(clicks[p][b] for p in range(n_pos)) / sum(exam[p] * imps[p][b] for p in range(n_pos))
                     for b in range(n_bins)]
            exam = [sum(clicks[p]) / sum(click[b] * imps[p][b] for b in range(n_bins)) for p in range(n_pos)]
            top = exam[0]
            exam = [min(1.0, e / top) for e in exam]
            click = [min(1.0, c * top) for c in click]
        self.exam, self.click = exam, click

    def state(self) -> dict:
        return {"exam": self.exam, "click": self.click, "impressions": self.impressions, "clicks": self.clicks,
                "since_fit": self.since_fit}

    def restore(self, state: dict) -> None:
        self.exam, self.click = list(state["exam"]), list(state["click"])
        self.impressions = [list(row) for row in state["impressions"]]
        self.clicks = [list(row) for row in state["clicks"]]
        self.since_fit = int(state["since_fit"])


class KeyEvidence:
    """One key's decayed evidence and the accounts behind it."""

    __slots__ = ("observed", "expected", "surge", "since_observed", "since_expected", "users", "sessions",
                 "first_credit_ts", "credit_sum", "credit_squares", "clicks", "buys", "exposure", "retracted")

    def __init__(self):
        self.first_credit_ts: float | None = None
        # sum over users of their decayed credit, and of its square (which halves twice as fast)
        self.credit_sum, self.credit_squares = Decayed(), Decayed()
        self.observed, self.expected, self.surge = Decayed(), Decayed(), Decayed()
        self.since_observed, self.since_expected = Decayed(), Decayed()  # since activation (guard)
        self.clicks, self.buys = Decayed(), Decayed()  # credited clicks, and purchases or carts after them
        self.users: OrderedDict[str, list[float]] = OrderedDict()  # user -> [decayed credit, credit ts]
        self.sessions: OrderedDict[str, float] = OrderedDict()  # session -> last credit ts
        self.exposure: OrderedDict[str, list[float]] = OrderedDict()  # user -> [decayed expected clicks, ts]
        self.retracted = 0  # credited accounts taken out since (quarantined): they still count as the key's suspects

    def expose(self, user: str, amount: float, ts: float, cfg: ClickModelConfig) -> None:
        """Adds `amount` expected clicks from `user`'s impressions (the caller adds it to `expected`)."""
        entry = self.exposure.pop(user, None)
        exposure = Decayed.from_list(entry) if entry else Decayed()
        exposure.add(amount, ts, cfg.half_life_s)
        self.exposure[user] = exposure.to_list()
        while len(self.exposure) > cfg.max_users_per_key:
            self.exposure.popitem(last=False)

    def retract(self, user: str, cfg: ClickModelConfig) -> bool:
        """Takes `user`'s evidence out of the key: its credited clicks out of observed, clicks and the
        account statistics, its impressions' expected clicks out of expected. For an account that
        never bought (a suspect): its credits are clicks alone. True when the key held any of it.
        Not taken out: the surge share and the since-activation totals (the guard's watch of what
        was served), and what a user left before it fell out of the per-key memory."""
        h = cfg.half_life_s
        credit, exposure = self.users.pop(user, None), self.exposure.pop(user, None)
        if credit:
            self.retracted += 1
            value, ts = credit
            for total in (self.observed, self.clicks, self.credit_sum):
                total.remove(value, ts, h)
            self.credit_squares.remove(value * value, ts, h / 2)
        if exposure:
            self.expected.remove(exposure[0], exposure[1], h)
        return credit is not None or exposure is not None

    def credit_account(self, user: str, session: str, amount: float, ts: float, cfg: ClickModelConfig) -> None:
        self.first_credit_ts = ts if self.first_credit_ts is None else min(self.first_credit_ts, ts)
        credit = self.users.pop(user, None)
        credit = Decayed.from_list(credit) if credit else Decayed()
        before = credit.at(ts, cfg.half_life_s)
        credit.add(amount, ts, cfg.half_life_s)
        after = credit.at(ts, cfg.half_life_s)
        self.credit_sum.add(after - before, ts, cfg.half_life_s)
        self.credit_squares.add(after * after - before * before, ts, cfg.half_life_s / 2)
        self.users[user] = credit.to_list()
        self.sessions.pop(session, None)
        self.sessions[session] = max(ts, credit.ts)
        for remembered in (self.users, self.sessions):
            while len(remembered) > cfg.max_users_per_key:
                remembered.popitem(last=False)

    def accounts(self, now: float, cfg: ClickModelConfig) -> tuple[int, int]:
        """(distinct users, distinct sessions) credited within user_memory_s (a walk over them: for decisions)."""
        since = now - cfg.user_memory_s
        return sum(c[1] >= since for c in self.users.values()), sum(ts >= since for ts in self.sessions.values())

    def effective_users(self, now: float, cfg: ClickModelConfig) -> float:
        """(sum of per-user credits)^2 / sum of their squares: n for n equal accounts, 1 when one
        account earned it all (kept incrementally: every judgement asks)."""
        total = self.credit_sum.at(now, cfg.half_life_s)
        squares = self.credit_squares.at(now, cfg.half_life_s / 2)
        return total * total / squares if squares > 0 else 0.0

    def to_dict(self) -> dict:
        return {"observed": self.observed.to_list(), "expected": self.expected.to_list(),
                "surge": self.surge.to_list(), "since_observed": self.since_observed.to_list(),
                "since_expected": self.since_expected.to_list(),
                "users": [[u, c] for u, c in self.users.items()],
                "sessions": [[s, ts] for s, ts in self.sessions.items()], "first_credit_ts": self.first_credit_ts,
                "credit_sum": self.credit_sum.to_list(), "credit_squares": self.credit_squares.to_list(),
                "clicks": self.clicks.to_list(), "buys": self.buys.to_list(),
                "exposure": [[u, e] for u, e in self.exposure.items()], "retracted": self.retracted}

    @classmethod
    def from_dict(cls, data: dict) -> KeyEvidence:
        ev = cls()
        for name in ("observed", "expected", "surge", "since_observed", "since_expected", "credit_sum", "credit_squares"):
            setattr(ev, name, Decayed.from_list(data[name]))
        for name in ("clicks", "buys"):  # absent from checkpoints written before the conversion check
            if name in data:
                setattr(ev, name, Decayed.from_list(data[name]))
        ev.users = OrderedDict((u, list(c)) for u, c in data["users"])
        ev.sessions = OrderedDict((s, float(ts)) for s, ts in data["sessions"])
        ev.first_credit_ts = data["first_credit_ts"]
        ev.exposure = OrderedDict((u, list(e)) for u, e in data.get("exposure", []))  # absent before retraction
        ev.retracted = int(data.get("retracted", 0))
        return ev
