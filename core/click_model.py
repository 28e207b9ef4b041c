"""The online click model: debiased click and purchase evidence per key, learnt from every event.

The stream's fast path (docs: ARCHITECTURE.md, "Real-time stream path"). A thin actor tails the
FeedbackLog by offset, calls `observe(records)`, publishes `snapshot()` to the ingress (which calls
`Snapshot.adjust` on every search), checkpoints `state()` and, restarted, rebuilds with
`ClickModel.from_state` and replays the log from `state()["offset"]`: records below the model's
offset are skipped, so replaying an overlap changes nothing.

Evidence. For a key k (see `core.click_snapshot`: a segment, an attribute within a segment, a
product within its segment) and one credit unit (a user's impressions and clicks on k within
credit_interval_s of the first):
    expected_unit = (1 - prod_i (1 - P(examine | pos_i) x P(click | examined, score_i))) x (1 + w x b)
    observed_unit = [clicked] + w x [carted or bought after a click]
over the unit's distinct impressions i (position shown at, score served with; the record's `score`,
absent: a bin of its own), w = purchase_credit and b the stream's purchases per click; the curves
come from `core.click_evidence.PositionModel`. So a user clicking a key 20 times counts once, and a
product clicked at the rate its position and score predict earns ratio 1, however high it ranks.
Each key sums its units with exponential decay (half_life_s). Its ratio observed / expected has a
Gamma posterior shrunk toward its parent: a product's parent is its segment's ratio times its
attribute keys' ratios relative to the segment, an attribute's is its segment's, a segment's is 1.
A key's effect is gain x log(bound / segment ratio) for the bound that excludes the segment's ratio
(`core.click_guard.key_effect`); `core.click_guard.KeyGuard` decides which keys are served.

What is left out (counted in `observe`'s answer by reason): records already seen (`replayed`),
flagged by the anomaly screen (`flagged`), without a query and position (`not_search`), on products
the catalog lacks (`unknown_product`), repeated impressions of one result list (`repeat_impression`),
clicks and purchases without an impression in the credit interval (`no_impression`), credits a
unit already gave (`repeat_credit`), positives whose units closed before them (`expired_unit`), and
events of suspect accounts (`suspect_account`).

Suspect accounts (`core.click_quarantine`): accounts behind a key frozen as an attack that never
bought; what they taught before is taken out of every key, and their later events teach none.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable

from core.click_config import ClickModelConfig
from core.click_evidence import Decayed, KeyEvidence, PositionModel, ratio_bounds
from core.click_guard import ATTACK_REASONS, KeyGuard, SurgeMeter, key_effect
from core.click_quarantine import SURGE_FLAG, Quarantine
from core.click_snapshot import PRODUCT_FIELD, ProductCatalog, Snapshot, key_name, majority, parse_key
from core.events import POSITIVE_TYPES

STATE_FORMAT = 1
MAX_TRACKED = 200_000  # open units, shown results and query segments kept each (oldest dropped)
PRIOR_PURCHASES_PER_CLICK = (0.1, 10.0)  # (rate, pseudo-clicks) before the stream says otherwise
MAX_PRIOR_LOG_SHIFT = 2.0  # a product's prior ratio stays within e^-2..e^2 of its segment's


class ClickModel:
    """Evidence per key from the stream; snapshots of the active keys' effects."""

    def __init__(self, cfg: ClickModelConfig, catalog: ProductCatalog):
        self.cfg, self.catalog = cfg, catalog
        self.offset = 0  # the next log offset to read
        self.epoch = 0  # admin operations so far
        self.enabled = cfg.enabled
        self.now = 0.0  # stream time: the largest event ts seen
        self.curves = PositionModel(cfg)
        self.surge = SurgeMeter(cfg)
        self.guard = KeyGuard(cfg)
        self.keys: dict[str, KeyEvidence] = {}
        self.units: OrderedDict[str, list] = OrderedDict()  # key\x1fuser -> [start ts, P(no click), clicked, strong, in a surge]
        self.shown: OrderedDict[str, list] = OrderedDict()  # session\x1fquery\x1fproduct -> [ts, position, score, segment, clicked]
        self.query_votes: OrderedDict[str, dict[str, int]] = OrderedDict()  # query -> segment -> top impressions
        self.clicks, self.purchases = Decayed(), Decayed()  # credited product units, for purchases per click
        self.quarantine = Quarantine(cfg, MAX_TRACKED)
        self.totals: Counter = Counter()
        self._audit: list[dict] = []
        self._ratios: dict[str, tuple[float, float, float]] = {}

    # ------------------------------------------------------------------ the stream
    def observe(self, records: Iterable[dict]) -> dict[str, int]:
        """Learns from FeedbackLog records (normal-form events with `offset` and `flags`), in log order;
        counts of records used and left out, by reason."""
        counts: Counter = Counter()
        for record in records:
            offset = record.get("offset", self.offset)
            if offset < self.offset:
                counts["replayed"] += 1
                continue
            self.offset = int(offset) + 1
            counts[self._observe_one(record, int(offset))] += 1
        self.totals.update(counts)
        return dict(counts)

    def _observe_one(self, r: dict, offset: int) -> str:
        if r.get("flags"):
            return "flagged"
        if r.get("user") in self.suspects:
            return "suspect_account"
        if not r.get("query") or r.get("position") is None:
            return "not_search"
        if r["product_id"] not in self.catalog:
            return "unknown_product"
        ts = float(r["ts"])
        if r.get("ingested_at") is not None:  # an event is not later than its arrival: a clock ahead (or a
            ts = min(ts, float(r["ingested_at"]))  # session's later events sent at once) must not move ours
        self.now = max(self.now, ts)
        self._ratios.clear()  # ratios are remembered within one event's judgements only
        self._forget_before(self.now - self.cfg.credit_interval_s)
        if r["type"] == "impression":
            return self._impression(r, ts, offset)
        if r["type"] in POSITIVE_TYPES:
            return self._positive(r, ts, offset)
        return "unknown_type"

    def _impression(self, r: dict, ts: float, offset: int) -> str:
        shown_key = "\x1f".join((r["session"], r["query"], r["product_id"]))
        if shown_key in self.shown:
            return "repeat_impression"
        position, score = int(r["position"]), r.get("score")
        segment = self._segment(r["query"], r["product_id"], position)
        self.shown[shown_key] = [ts, position, score, segment, False]
        self.curves.record_impression(position, score)
        p_click = self.curves.p_click(position, score)
        per_click = 1.0 + self.cfg.purchase_credit * self._purchases_per_click()
        names = self.catalog.keys(segment, r["product_id"], self.catalog.stated_fields(r["query"]))
        for name in names:
            unit = self._unit(name, r["user"], ts)
            gained = unit[1] * p_click
            unit[1] -= gained
            ev = self._evidence(name)
            ev.expected.add(gained * per_click, ts, self.cfg.half_life_s)
            ev.expose(r["user"], gained * per_click, ts, self.cfg)
            if self.guard.is_active(name):
                ev.since_expected.add(gained * per_click, ts, self.cfg.half_life_s)
        for name in names[1:]:  # impressions alone break a promise, or age a key's evidence past the span
            if self.keys[name].first_credit_ts is not None and not self.guard.is_frozen(name):
                self._judge(name, offset)
        return "impression"

    def _positive(self, r: dict, ts: float, offset: int) -> str:
        shown = self.shown.get("\x1f".join((r["session"], r["query"], r["product_id"])))
        if shown is None:
            return "no_impression"
        strong = r["type"] != "click"
        if strong:
            self.quarantine.bought(r["user"], ts)
        if not strong and not shown[4]:
            shown[4] = True
            self.curves.record_click(shown[1], shown[2])
        surging = self.surge.click(ts) if not strong else self.surge.surging(ts)
        amount = self.cfg.purchase_credit if strong else 1.0
        credited, expired = [], False
        names = self.catalog.keys(shown[3], r["product_id"], self.catalog.stated_fields(r["query"]))
        for name in names:
            unit = self.units.get(f"{name}\x1f{r['user']}")
            expired |= unit is None  # opened by an older impression of the key, closed since
            if unit is None or (strong and (not unit[2] or unit[3])) or (not strong and unit[2]):
                continue
            unit[3 if strong else 2] = True
            unit[SURGE_FLAG] = unit[SURGE_FLAG] or (surging and not strong)
            ev = self.keys[name]
            (ev.buys if strong else ev.clicks).add(1.0, ts, self.cfg.half_life_s)
            for total in (ev.observed, ev.surge if surging else None, ev.since_observed if self.guard.is_active(name) else None):
                if total is not None:
                    total.add(amount, ts, self.cfg.half_life_s)
            ev.credit_account(r["user"], r["session"], amount, ts, self.cfg)
            credited.append(name)
        if not strong and r["user"] not in self.buyers:
            caught = self.quarantine.on_click(r["user"], names, surging, self.keys, self.guard, offset) or \
                self.quarantine.on_search_click(r["user"], r["session"], r["query"], ts, self.keys, self.guard, offset)
            if caught is not None:
                self._quarantined(caught)
                return "suspect_account"
        if not credited:
            return "expired_unit" if expired else "repeat_credit"
        if credited[-1].endswith(f"|{PRODUCT_FIELD}={r['product_id']}"):
            (self.purchases if strong else self.clicks).add(1.0, ts, self.cfg.half_life_s)
        for name in credited:
            if parse_key(name)[1] is not None:
                self._judge(name, offset)
        return "purchase" if strong else "click"

    # ------------------------------------------------------------------ bookkeeping
    def _segment(self, query: str, product_id: str, position: int) -> str:
        """The query's segment: named by its text, else the commonest among its top impressions so far."""
        segment = self.catalog.text_segment(query)
        if segment is not None:
            return segment
        votes = self.query_votes.pop(query, {})
        if position < self.cfg.segment_top_n:
            own = self.catalog.segment(product_id)
            votes[own] = votes.get(own, 0) + 1
        self.query_votes[query] = votes
        _trim(self.query_votes)
        return majority(s for s, n in votes.items() for _ in range(n)) or self.catalog.segment(product_id)

    def _unit(self, name: str, user: str, ts: float) -> list:
        """The open credit unit of (key, user), a fresh one when none is open."""
        key = f"{name}\x1f{user}"
        unit = self.units.get(key)
        if unit is None or ts - unit[0] > self.cfg.credit_interval_s:
            self.units.pop(key, None)
            unit = self.units[key] = [ts, 1.0, False, False, False]  # see `units`; the last: SURGE_FLAG
            _trim(self.units)
        return unit

    def _forget_before(self, cutoff: float) -> None:
        """Units and shown results older than the credit interval can no longer earn a credit."""
        for table in (self.units, self.shown):
            while table and next(iter(table.values()))[0] < cutoff:
                table.popitem(last=False)

    def _evidence(self, name: str) -> KeyEvidence:
        ev = self.keys.get(name)
        if ev is None:
            ev = self.keys[name] = KeyEvidence()
        return ev

    def _purchases_per_click(self) -> float:
        rate, pseudo = PRIOR_PURCHASES_PER_CLICK
        h = self.cfg.half_life_s
        return (self.purchases.at(self.now, h) + rate * pseudo) / (self.clicks.at(self.now, h) + pseudo)

    def _segment_purchases_per_click(self, segment: str) -> float:
        """The segment's purchases per credited click, shrunk toward the stream's (segments convert
        differently: a key is judged against its own)."""
        h, stream = self.cfg.half_life_s, self._purchases_per_click()
        ev = self.keys.get(segment)
        if ev is None:
            return stream
        pseudo = PRIOR_PURCHASES_PER_CLICK[1]
        return (ev.buys.at(self.now, h) + stream * pseudo) / (ev.clicks.at(self.now, h) + pseudo)

    # ------------------------------------------------------------------ ratios and effects
    def ratio(self, name: str) -> tuple[float, float, float]:
        """(lower, mean, upper) of a key's observed/expected ratio, shrunk toward its parent."""
        if name not in self._ratios:
            self._ratios[name] = self._bounds(name, self.cfg.confidence)
        return self._ratios[name]

    def _bounds(self, name: str, level: float) -> tuple[float, float, float]:
        segment, field_name, value = parse_key(name)
        if field_name is None:
            parent = 1.0
        elif field_name == PRODUCT_FIELD:
            parent = self._product_prior(segment, value)
        else:
            parent = self.ratio(segment)[1]
        ev = self.keys.get(name) or KeyEvidence()
        h = self.cfg.half_life_s
        return ratio_bounds(ev.observed.at(self.now, h), ev.expected.at(self.now, h), parent,
                            self.cfg.prior_strength, level)

    def _product_prior(self, segment: str, product_id: str) -> float:
        base = self.ratio(segment)[1]
        shift = 1.0
        for name in self.catalog.keys(segment, product_id)[1:-1]:
            if name in self.keys:
                shift *= self.ratio(name)[1] / base
        limit = 2.718281828459045 ** MAX_PRIOR_LOG_SHIFT
        return base * min(limit, max(1.0 / limit, shift))

    def effect(self, name: str) -> float:
        """The key's effect in score units now (0 for a segment key, which shifts a whole list): a
        boost sized by its lower bound at `boost_confidence`, a penalty by its upper bound at
        `confidence` (see `core.click_guard.key_effect`)."""
        segment, field_name, _ = parse_key(name)
        if field_name is None:
            return 0.0
        lower, mean, upper = self.ratio(name)
        baseline = self.ratio(segment)[1]
        level = self.cfg.boost_confidence
        if mean > baseline and level is not None and level != self.cfg.confidence:
            lower = self._bounds(name, level)[0]
        return key_effect(lower, upper, baseline, self.cfg)

    def _judge(self, name: str, offset: int) -> None:
        segment = parse_key(name)[0]
        record = self.guard.judge(name, self.keys[name], self.ratio(name), self.ratio(segment)[1],
                                  self.now, offset, self._segment_purchases_per_click(segment))
        if record is not None:
            self._audit.append({**record, "event_ts": self.now})
            reason = record["reason"].split(":", 1)[0]
            if record["decision"] == "frozen" and reason in ATTACK_REASONS:
                self._quarantined(self.quarantine.on_freeze(name, reason, self.keys, self.units, self.guard, offset))

    def _quarantined(self, records: list[dict]) -> None:
        """Audit records of a quarantine (suspects' evidence taken out: ratios change)."""
        self._ratios.clear()
        self._audit.extend({**record, "event_ts": self.now} for record in records)

    @property
    def suspects(self) -> dict[str, list[str]]:
        return self.quarantine.suspects

    @property
    def buyers(self) -> OrderedDict[str, float]:
        return self.quarantine.buyers

    # ------------------------------------------------------------------ serving and operations
    def snapshot(self, min_active_s: float = 0.0) -> Snapshot:
        """The active keys' current effects, stamped with the offset they cover; deterministic in the
        events read and the admin operations done. `min_active_s`: only keys active at least this
        long in event time (what the slow path may consolidate, see `consolidate_after_s`)."""
        effects = []
        self._ratios.clear()
        if self.enabled:
            for name in sorted(n for n in self.guard.status if self.guard.is_active(n)
                               and (min_active_s <= 0 or self.guard.active_for(n, self.now) >= min_active_s)):
                value = self.effect(name)
                if value != 0.0:
                    effects.append((name, value))
        return Snapshot(offset=self.offset, epoch=self.epoch, ts=self.now, enabled=self.enabled,
                        effects=tuple(effects), max_boost=self.cfg.max_boost, max_penalty=self.cfg.max_penalty,
                        segment_top_n=self.cfg.segment_top_n, boost_min_score=self.cfg.boost_min_score)

    def drain_audit(self) -> list[dict]:
        """Activations, deactivations, freezes and admin operations since the last call (each with the
        offset that caused it), for `core.audit.append`."""
        records, self._audit = self._audit, []
        return records

    def freeze(self, name: str, reason: str = "admin: frozen by an operator") -> dict:
        parse_key(name)
        self.epoch += 1
        record = {**self.guard.freeze(name, reason, self.offset), "event_ts": self.now}
        self._audit.append(record)
        return record

    def clear(self, name: str) -> dict:
        """Drops a key's evidence, open units and status (frozen or not): it starts afresh."""
        parse_key(name)
        self.epoch += 1
        self.keys.pop(name, None)
        self._ratios.clear()
        for unit in [u for u in self.units if u.split("\x1f", 1)[0] == name]:
            del self.units[unit]
        record = {**self.guard.clear(name, self.offset), "event_ts": self.now}
        self._audit.append(record)
        return record

    def set_enabled(self, enabled: bool) -> dict:
        """Turns the layer on or off at serving time (evidence keeps accruing either way)."""
        self.epoch += 1
        self.enabled = bool(enabled)
        record = {"source": "click_model", "decision": "enabled" if enabled else "disabled", "key": "*",
                  "reason": "admin", "offset": self.offset, "metrics": {}, "event_ts": self.now}
        self._audit.append(record)
        return record

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        """Everything a restart needs, as plain JSON data (the pending audit records are not in it:
        drain them first)."""
        return {"format": STATE_FORMAT, "offset": self.offset, "epoch": self.epoch, "enabled": self.enabled,
                "now": self.now, "curves": self.curves.state(), "surge": self.surge.state(),
                "guard": self.guard.state(), "keys": {n: ev.to_dict() for n, ev in self.keys.items()},
                "units": [[k, *u] for k, u in self.units.items()], "shown": [[k, *s] for k, s in self.shown.items()],
                "query_votes": [[q, v] for q, v in self.query_votes.items()], "clicks": self.clicks.to_list(),
                "purchases": self.purchases.to_list(), "totals": dict(self.totals),
                **self.quarantine.state()}

    @classmethod
    def from_state(cls, cfg: ClickModelConfig, catalog: ProductCatalog, state: dict) -> ClickModel:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"click model state format {state.get('format')!r}, expected {STATE_FORMAT}")
        model = cls(cfg, catalog)
        model.offset, model.epoch, model.enabled = int(state["offset"]), int(state["epoch"]), bool(state["enabled"])
        model.now = float(state["now"])
        model.curves.restore(state["curves"])
        model.surge.restore(state["surge"])
        model.guard.restore(state["guard"])
        model.keys = {n: KeyEvidence.from_dict(d) for n, d in state["keys"].items()}
        model.units = OrderedDict((k, [*u, False][:5]) for k, *u in state["units"])  # 4 fields before the surge flag
        model.shown = OrderedDict((k, list(s)) for k, *s in state["shown"])
        model.query_votes = OrderedDict((q, dict(v)) for q, v in state["query_votes"])
        model.clicks, model.purchases = Decayed.from_list(state["clicks"]), Decayed.from_list(state["purchases"])
        model.totals = Counter(state["totals"])
        model.quarantine.restore(state)
        return model


def _trim(table: OrderedDict) -> None:
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)


def catalog_for(products: Iterable[dict], cfg: ClickModelConfig, **kwargs) -> ProductCatalog:
    """The catalog lookups with the config's segment and attribute fields."""
    return ProductCatalog(products, segment_field=cfg.segment_field, attribute_fields=cfg.attribute_fields,
                          family_fields=cfg.family_fields, **kwargs)


__all__ = ["ClickModel", "ClickModelConfig", "ProductCatalog", "Snapshot", "catalog_for", "key_name"]
