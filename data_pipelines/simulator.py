"""Seeded shopper simulator over the generated catalog: the hidden truth that online learning
chases, and the raw click/purchase events (core/events.py schema) it learns from.

The simulator never calls a service. The caller passes the ranked list that was shown (from
/v1/search in the benchmark, from any ranker in tests); shoppers examine it with a position bias
and click / buy according to the hidden *true* relevance, which tests and benchmarks can read
back (``truth``, ``ndcg``) to know whether a ranker actually learned.

Truth and drift. Without drift the truth is ``catalog.grade``, the same labels as the judgements.
A ``Drift`` (``data_pipelines.drift``: a brand trend, an attribute trend or a fading line, from a
YAML spec) moves it for the queries of one category that leave its attribute open; e.g. the brand
trend: a trend-brand product that is at least partially relevant becomes 2, every other exact
match drops to 1. The judgements (and any model trained on them) do not know this; only the
feedback does. Held-out evaluation queries (``drift.hold_out_queries``) are excluded from the
shoppers' pool with every query that shares their normalised text or their hidden intent.

How realistic this is. Brand and style trends are real, they move what shoppers pick among
equally matching listings, and static relevance labels cannot see them, which is why a ranker
has to learn online. Position-biased examination with grade-dependent click and purchase rates
is the standard position-based click model. What is *not* realistic: the trend switches on at
once and applies to every shopper and every query of the category that leaves the attribute open
alike; the favoured product wins even when a stated size or price does not match; examination of each
position is independent (no cascade, no reformulations, no dwell time); queries are drawn
uniformly (no head/tail popularity); price does not affect buying; bots, adversaries and stealthy
click farms follow three fixed scripts. Numbers from it show whether learning works, not how much
it earns.

Attacks. ``random_bot``: a few accounts firing clicks fractions of a second apart, often without
an impression, easy to rate-limit. ``adversarial``: ordinary-looking users on every query who
prefer the least relevant products, a flood at any volume. ``stealthy``: a click farm built to
pass per-account and per-rate checks: STEALTHY_ACCOUNTS ordinary-looking accounts at the
shoppers' own session rate, with shopper timing, concentrated on a few chosen queries
(``set_attack_queries``) where they click the least relevant shown products; only the
per-query click pattern gives it away.

    python -m data_pipelines.simulator --catalog artifacts/catalog --sessions 300 --out events.jsonl
    python -m data_pipelines.simulator --catalog artifacts/catalog --drift-spec configs/drift/fading_line.yaml \
        --out events.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.bm25 import BM25
from core.events import EVENT_TYPES
from core.metrics import ndcg_at_k

from .catalog import Catalog, read_catalog
from .drift import Drift, drift_applies, load_drift, pick_trend, query_constraints, true_grade

BEHAVIOURS = ("shopper", "random_bot", "adversarial", "stealthy")
SHOPPER_RATE = 1.0  # sessions per second
# The stealthy farm runs at the shoppers' rate so that volume alone does not give it away.
DEFAULT_RATES = {"shopper": SHOPPER_RATE, "random_bot": 20.0, "adversarial": 1.0,
                 "stealthy": SHOPPER_RATE}  # sessions per second
N_BOTS = 5
STEALTHY_ACCOUNTS = 60  # enough accounts that no single one stands out
N_ATTACK_QUERIES = 3  # attacked queries picked when none were set
BOT_IMPRESSION_SHARE = 0.5  # bot sessions that load the result page (the rest only fire clicks)
DEFAULT_START_TS = 1_735_689_600.0  # 2025-01-01T00:00:00Z
OUTPUT_SUFFIXES = (".jsonl", ".parquet")

Ranker = Callable[[str, str], Sequence[str]]


# ------------------------------------------------------------------ simulator
@dataclass(frozen=True)
class Session:
    user_id: str
    session_id: str
    query_id: str
    query_text: str


def _probabilities(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (3,) or not ((arr >= 0) & (arr <= 1)).all():
        raise ValueError(f"{name} must be 3 probabilities (grades 0, 1, 2), got {values!r}")
    return arr


class ShopperSimulator:
    """Sessions, events and the hidden truth for one catalog; deterministic for a seed and the
    same sequence of calls."""

    def __init__(self, catalog: Catalog, seed: int = 0, drift: Drift | None = None,
                 drift_share: float = 0.7, n_users: int = 2000, k: int = 10, eta: float = 1.0,
                 p_click: Sequence[float] = (0.03, 0.25, 0.75),
                 p_purchase: Sequence[float] = (0.0, 0.05, 0.35)) -> None:
        if not 0.0 <= drift_share <= 1.0:
            raise ValueError(f"drift_share must be in [0, 1], got {drift_share}")
        if n_users < 1 or k < 1 or eta < 0:
            raise ValueError(f"need n_users >= 1, k >= 1, eta >= 0; got {n_users}, {k}, {eta}")
        self.drift_share, self.n_users, self.k, self.eta = drift_share, n_users, k, eta
        self.p_click = _probabilities("p_click", p_click)
        self.p_purchase = _probabilities("p_purchase", p_purchase)
        self._rng = np.random.default_rng(seed)
        self._products = {r["product_id"]: r for r in catalog.products.to_dict("records")}
        self._constraints = query_constraints(catalog)
        self._texts = dict(zip(catalog.queries["query_id"], catalog.queries["text"]))
        self._query_ids = list(catalog.queries["query_id"])
        self._pools = {q: list(p) for q, p in
                       catalog.judgements.groupby("query_id", sort=False)["product_id"]}
        self._grades: dict[tuple[str, str], int] = {}
        self._held_out: set[str] = set()
        self._attack_queries: tuple[str, ...] = ()
        self.set_drift(drift)

    # -------------------------------------------------------------- truth
    @property
    def drift(self) -> Drift | None:
        return self._drift

    def set_drift(self, drift: Drift | None) -> None:
        """Switch the hidden truth (None: back to the catalog grades)."""
        self._drift = drift
        self._grades.clear()
        self._affected = [q for q in self._query_ids if drift_applies(self._constraints[q], drift)]

    def affected_queries(self) -> list[str]:
        return list(self._affected)

    @property
    def held_out(self) -> frozenset[str]:
        return frozenset(self._held_out)

    def query_text(self, query_id: str) -> str:
        return self._known(self._texts, query_id, "query")

    def hold_out(self, query_ids: Sequence[str]) -> None:
        """Shoppers never search these queries: an evaluation on them measures what an online model
        learnt about the trend, not what it memorised about the queries it was trained on."""
        self._held_out = set(query_ids)

    def truth(self, query_id: str, product_ids: Sequence[str]) -> list[int]:
        """True grades of ``product_ids`` for the query under the current drift."""
        constraints = self._known(self._constraints, query_id, "query")
        out = []
        for pid in product_ids:
            key = (query_id, pid)
            if key not in self._grades:
                product = self._known(self._products, pid, "product")
                self._grades[key] = true_grade(constraints, product, self._drift)
            out.append(self._grades[key])
        return out

    def pool(self, query_id: str) -> list[str]:
        """The query's judged candidate pool (product ids)."""
        return list(self._known(self._pools, query_id, "query"))

    def ndcg(self, query_id: str, ranked_product_ids: Sequence[str], k: int = 10) -> float:
        """nDCG@k of a ranking against the truth; the ideal comes from the judged pool plus the
        ranked items (so products from outside the pool cannot push it above 1)."""
        ranked = list(dict.fromkeys(ranked_product_ids))[:k]
        shown = set(ranked)
        rest = [p for p in self.pool(query_id) if p not in shown]
        # Grade-0 fillers keep a short ranking's empty slots empty: ndcg_at_k ranks them above
        # `rest`, which then only counts towards the ideal.
        grades = self.truth(query_id, ranked) + [0] * (k - len(ranked)) + self.truth(query_id, rest)
        scores = np.r_[np.arange(k, 0, -1), np.zeros(len(rest))]
        return ndcg_at_k(scores, grades, k=k)

    @staticmethod
    def _known(table: Mapping, key: str, what: str):
        if key not in table:
            raise ValueError(f"unknown {what} id {key!r}")
        return table[key]

    # -------------------------------------------------------------- sessions and events
    @property
    def attack_queries(self) -> tuple[str, ...]:
        """The queries the stealthy farm attacks; empty until set or until its first session."""
        return self._attack_queries

    def set_attack_queries(self, query_ids: Sequence[str]) -> None:
        """Choose the queries stealthy sessions search: a farm pushes a few queries, so that its
        clicks pile up where they can move a ranking."""
        if isinstance(query_ids, str):
            raise ValueError(f"attack queries must be a sequence of query ids, got the string "
                             f"{query_ids!r}")
        chosen = tuple(dict.fromkeys(query_ids))
        if not chosen:
            raise ValueError("attack queries must name at least one query id, got none")
        unknown = [q for q in chosen if q not in self._texts]
        if unknown:
            raise ValueError(f"unknown attack query id(s): {', '.join(map(repr, unknown))}")
        self._attack_queries = chosen

    def _stealthy_queries(self) -> tuple[str, ...]:
        if not self._attack_queries:
            candidates = [q for q in self._query_ids if q not in self._held_out] or self._query_ids
            picks = self._rng.choice(len(candidates), size=min(N_ATTACK_QUERIES, len(candidates)),
                                     replace=False)
            self._attack_queries = tuple(candidates[int(i)] for i in picks)
        return self._attack_queries

    def next_session(self, behaviour: str = "shopper") -> Session:
        """A new session; its query comes from the affected queries with probability drift_share
        while a drift is active. Bots use one of N_BOTS accounts; adversaries are distinct,
        ordinary-looking users (ids beyond the shopper range). Stealthy sessions search one of the
        attack queries (three drawn once if none were set) from STEALTHY_ACCOUNTS accounts that
        look like shoppers' but lie beyond both the shopper and the adversarial ranges, so tests
        can tell the three populations apart."""
        _check_behaviour(behaviour)
        if behaviour == "stealthy":
            attacked = self._stealthy_queries()
            query_id = attacked[int(self._rng.integers(len(attacked)))]
            user = f"u{2 * self.n_users + int(self._rng.integers(STEALTHY_ACCOUNTS)):06d}"
            return Session(user, self._uuid(), query_id, self._texts[query_id])
        queries = self._query_ids
        if self._affected and self._rng.random() < self.drift_share:
            queries = self._affected
        if self._held_out:
            queries = [q for q in queries if q not in self._held_out] or queries
        query_id = queries[int(self._rng.integers(len(queries)))]
        if behaviour == "random_bot":
            user = f"bot-{int(self._rng.integers(N_BOTS))}"
        else:
            offset = self.n_users if behaviour == "adversarial" else 0
            user = f"u{offset + int(self._rng.integers(self.n_users)):06d}"
        return Session(user, self._uuid(), query_id, self._texts[query_id])

    def browse(self, session: Session, shown_product_ids: Sequence[str], start_ts: float,
               behaviour: str = "shopper") -> list[dict]:
        """Raw events of one session over the first k shown products, in time order."""
        _check_behaviour(behaviour)
        shown = list(shown_product_ids)[: self.k]
        if behaviour == "random_bot":
            return self._bot_events(session, shown, float(start_ts))
        if behaviour == "stealthy":
            return self._stealthy_events(session, shown, float(start_ts))
        grades = np.array(self.truth(session.query_id, shown), dtype=int)
        if behaviour == "adversarial":
            grades = 2 - grades  # the least relevant products get the exact-match behaviour
        return self._shopper_events(session, shown, grades, float(start_ts))

    def sessions(self, n: int, ranker: Ranker, start_ts: float,
                 rate_sessions_per_s: float | None = None,
                 behaviour: str = "shopper") -> list[dict]:
        """Events of ``n`` sessions starting as a Poisson process (default rate per behaviour),
        each shown ``ranker(query_text, query_id)``; sorted by time."""
        _check_behaviour(behaviour)
        rate = DEFAULT_RATES[behaviour] if rate_sessions_per_s is None else rate_sessions_per_s
        if rate <= 0:
            raise ValueError(f"rate_sessions_per_s must be > 0, got {rate}")
        events: list[dict] = []
        ts = float(start_ts)
        for _ in range(n):
            session = self.next_session(behaviour)
            shown = ranker(session.query_text, session.query_id)
            events += self.browse(session, shown, ts, behaviour)
            ts += float(self._rng.exponential(1.0 / rate))
        return sorted(events, key=lambda e: e["ts"])

    def _shopper_events(self, session: Session, shown: list[str], grades: np.ndarray,
                        ts: float) -> list[dict]:
        n = len(shown)
        examined = self._rng.random(n) < (1.0 / np.arange(1, n + 1)) ** self.eta
        clicked = examined & (self._rng.random(n) < self.p_click[grades])
        bought = clicked & (self._rng.random(n) < self.p_purchase[grades])
        events = [self._event(session, "impression", pid, pos, ts) for pos, pid in enumerate(shown)]
        for pos in np.flatnonzero(clicked):
            ts += self._rng.uniform(2.0, 30.0)
            events.append(self._event(session, "click", shown[pos], pos, ts))
            if bought[pos]:
                ts += self._rng.uniform(5.0, 60.0)
                events.append(self._event(session, "add_to_cart", shown[pos], pos, ts))
                ts += self._rng.uniform(10.0, 120.0)
                events.append(self._event(session, "purchase", shown[pos], pos, ts))
        return events

    def _bot_events(self, session: Session, shown: list[str], ts: float) -> list[dict]:
        events = []
        if self._rng.random() < BOT_IMPRESSION_SHARE:
            events = [self._event(session, "impression", pid, pos, ts)
                      for pos, pid in enumerate(shown)]
        n_clicks = int(self._rng.integers(1, len(shown) + 1)) if shown else 0
        for pos in self._rng.choice(len(shown), size=n_clicks, replace=False):
            ts += self._rng.uniform(0.02, 0.2)
            events.append(self._event(session, "click", shown[pos], pos, ts))
        return events

    def _stealthy_events(self, session: Session, shown: list[str], ts: float) -> list[dict]:
        # Looks like a shopper's session (impressions, then clicks seconds apart in position
        # order), but the 1-2 clicks go to the least relevant shown products and nothing is
        # bought: a farm pays per click, not per purchase.
        events = [self._event(session, "impression", pid, pos, ts) for pos, pid in enumerate(shown)]
        if not shown:
            return events
        grades = np.array(self.truth(session.query_id, shown), dtype=int)
        n_clicks = min(int(self._rng.integers(1, 3)), len(shown))
        least = np.lexsort((self._rng.random(len(shown)), grades))[:n_clicks]  # grade, then rng
        for pos in sorted(int(p) for p in least):
            ts += self._rng.uniform(2.0, 30.0)
            events.append(self._event(session, "click", shown[pos], pos, ts))
        return events

    def _event(self, session: Session, kind: str, product_id: str, position: int,
               ts: float) -> dict:
        return {"event_id": self._uuid(), "ts": round(ts, 3), "user_id": session.user_id,
                "session_id": session.session_id, "type": kind, "product_id": product_id,
                "query": session.query_text, "position": int(position)}

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.bytes(16), version=4))


def _check_behaviour(behaviour: str) -> None:
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")


# ------------------------------------------------------------------ CLI
def bm25_pool_ranker(catalog: Catalog, simulator: ShopperSimulator) -> Ranker:
    """Each query's judged pool ordered by BM25 over title + description (ties by product id)."""
    products = catalog.products
    index = BM25((products["title"] + " " + products["description"]).tolist())
    row = {pid: i for i, pid in enumerate(products["product_id"])}

    def rank(query_text: str, query_id: str) -> list[str]:
        pool = sorted(simulator.pool(query_id))
        scores = index.score(query_text, [row[p] for p in pool])
        return [pool[i] for i in np.argsort(-scores, kind="stable")]

    return rank


EVENT_COLUMNS = ("event_id", "ts", "user_id", "session_id", "type", "product_id", "query",
                 "position")


def write_events(events: list[dict], out: Path) -> None:
    """JSON lines, or parquet when ``out`` ends in .parquet."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pd.DataFrame(events, columns=list(EVENT_COLUMNS)).to_parquet(out, index=False)
    else:
        out.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m data_pipelines.simulator",
                     description="Simulate shopper sessions on a generated catalog and write raw "
                                 "events for `aisle replay`.")
    parser.add_argument("--catalog", required=True,
                        help="directory written by data_pipelines.catalog")
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--out", required=True, help="events file, .jsonl or .parquet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift", action="store_true", help="apply the seed's brand trend")
    parser.add_argument("--drift-spec", help="apply the drift of a spec file (configs/drift/*.yaml)")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="shopper")
    parser.add_argument("--start-ts", type=float, default=DEFAULT_START_TS,
                        help="unix time of the first session")
    args = parser.parse_args(argv)
    if not (Path(args.catalog) / "products.parquet").is_file():
        parser.error(f"--catalog: no catalog at {args.catalog} (products.parquet missing)")
    if args.sessions < 1:
        parser.error(f"--sessions must be >= 1, got {args.sessions}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out)
    if out.suffix not in OUTPUT_SUFFIXES:
        parser.error(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)}, got {args.out}")
    if args.drift_spec and (args.drift or not Path(args.drift_spec).is_file()):
        parser.error(f"--drift-spec: no spec file at {args.drift_spec} (and not with --drift)")
    catalog = read_catalog(args.catalog)
    if args.drift_spec:
        drift = load_drift(args.drift_spec, catalog, args.seed)
    else:
        drift = pick_trend(catalog, args.seed) if args.drift else None
    sim = ShopperSimulator(catalog, seed=args.seed, drift=drift)
    events = sim.sessions(args.sessions, bm25_pool_ranker(catalog, sim), args.start_ts,
                          behaviour=args.behaviour)
    write_events(events, out)
    counts = Counter(e["type"] for e in events)
    by_type = ", ".join(f"{t}: {counts.get(t, 0)}" for t in EVENT_TYPES)
    summary = f"wrote {len(events)} events from {args.sessions} {args.behaviour} sessions to {out}"
    if drift:
        by_type += f"; drift: {drift.name}, {len(sim.affected_queries())} queries affected"
    print(f"{summary} ({by_type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
