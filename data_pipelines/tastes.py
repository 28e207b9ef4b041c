"""Shoppers with lasting tastes, browsing recommendations over the generated catalog: the hidden
truth a recommender learns from the stream, and the raw events (core/events.py schema) it sees.

Each simulated user keeps one taste for good: a category, two brands of that category and a price
band (a third of the category's price range). How much a product suits them is a grade:
2 = their category, one of their brands and within their band; 1 = their category and one of the
brand or the band; 0 = anything else. A session is several steps long: the shopper lands on a
product of their category (as from a search), then asks the recommender for `k` products
(`recommend(user_id, k)`, the live session included), examines the list with a position bias
(P(examined at p) = (1 / (p + 1)) ** eta), clicks by grade, sometimes buys, and the first click
is where the next step starts. What the recommender sees is what a shop sees: impressions,
clicks, add-to-carts, purchases.

How realistic this is. Shoppers do keep brands, categories and a budget, and a session is a walk
through related products; that much is what a recommender should learn. Not realistic: one fixed
taste per user, one category per user, tastes drawn uniformly, no seasonality, no substitutes or
complements (a shopper never buys the socks that go with the shoes), a click model with
independent examination. Its numbers show whether learning works, not how much it earns.

    python -m data_pipelines.tastes --catalog artifacts/catalog --users 200 --sessions 400 --out taste_events.jsonl
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

Recommend = Callable[[str, int], Sequence[str]]
DEFAULT_START_TS = 1_735_689_600.0  # 2025-01-01T00:00:00Z


@dataclass(frozen=True)
class Taste:
    category: str
    brands: tuple[str, ...]
    price_low: float
    price_high: float


class TasteShoppers:
    """Users, their tastes, sessions and the truth; deterministic for a seed and the same calls."""

    def __init__(self, products: pd.DataFrame, n_users: int = 500, seed: int = 0, k: int = 10,
                 steps: int = 4, eta: float = 1.0, p_click: Sequence[float] = (0.02, 0.2, 0.6),
                 p_purchase: Sequence[float] = (0.0, 0.05, 0.3), first_user: int = 0):
        missing = {"product_id", "category", "brand", "price"} - set(products.columns)
        if missing:
            raise ValueError(f"products need columns {sorted(missing)}")
        if n_users < 1 or k < 1 or steps < 1 or eta < 0:
            raise ValueError(f"need n_users, k, steps >= 1 and eta >= 0; got {n_users}, {k}, {steps}, {eta}")
        self.k, self.steps, self.eta = k, steps, eta
        self.p_click, self.p_purchase = np.asarray(p_click, float), np.asarray(p_purchase, float)
        self._rng = np.random.default_rng(seed)
        p = products.assign(product_id=products["product_id"].astype(str), price=products["price"].astype(float))
        self._category = dict(zip(p["product_id"], p["category"]))
        self._brand = dict(zip(p["product_id"], p["brand"]))
        self._price = dict(zip(p["product_id"], p["price"]))
        self._by_category = {c: list(g["product_id"]) for c, g in p.groupby("category", sort=True)}
        self.users = {f"t{first_user + i:06d}": self._draw_taste(p) for i in range(n_users)}
        self._ideal: dict[str, float] = {}

    def _draw_taste(self, p: pd.DataFrame) -> Taste:
        categories = sorted(self._by_category)
        category = categories[int(self._rng.integers(len(categories)))]
        rows = p[p["category"] == category]
        brands = sorted(rows["brand"].unique())
        picked = tuple(sorted(self._rng.choice(brands, size=min(2, len(brands)), replace=False).tolist()))
        cuts = np.quantile(rows["price"], [0.0, 1 / 3, 2 / 3, 1.0])
        band = int(self._rng.integers(3))
        return Taste(category, picked, float(cuts[band]), float(cuts[band + 1]))

    # -------------------------------------------------------------- truth
    def grade(self, user: str, product_id: str) -> int:
        taste = self.users[user]
        if self._category.get(product_id) != taste.category:
            return 0
        brand = self._brand[product_id] in taste.brands
        price = taste.price_low <= self._price[product_id] <= taste.price_high
        return 2 if brand and price else 1 if brand or price else 0

    def ndcg(self, user: str, ranked: Sequence[str], k: int = 10) -> float:
        """NDCG@k of a ranked list against the user's grades (gain 2^g - 1) over the whole catalog."""
        gains = np.array([2 ** self.grade(user, p) - 1 for p in list(ranked)[:k]], dtype=float)
        dcg = float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())
        if user not in self._ideal:
            best = sorted((2 ** self.grade(user, p) - 1 for p in self._by_category[self.users[user].category]),
                          reverse=True)[:k]
            self._ideal[user] = float((np.array(best) / np.log2(np.arange(2, len(best) + 2))).sum())
        return dcg / self._ideal[user] if self._ideal[user] > 0 else 0.0

    # -------------------------------------------------------------- sessions
    def pick_user(self) -> str:
        users = list(self.users)
        return users[int(self._rng.integers(len(users)))]

    def landing(self, user: str) -> str:
        """A product of the user's category that suits them at least partly (as a search would find)."""
        pool = [p for p in self._by_category[self.users[user].category] if self.grade(user, p) >= 1]
        return pool[int(self._rng.integers(len(pool)))]

    def session(self, user: str, recommend: Recommend, start_ts: float) -> list[dict]:
        """Events of one multi-step session of `user`, in time order; `recommend` is called once per
        step, after the previous step's events happened (pass them to the shop first if its answer
        should see them: `run_session` does)."""
        return list(self.run_session(user, recommend, start_ts, post=None))

    def run_session(self, user: str, recommend: Recommend, start_ts: float,
                    post: Callable[[list[dict]], None] | None) -> list[dict]:
        """As `session`, handing each step's events to `post` before the next recommendation."""
        sid, ts = self._uuid(), float(start_ts)
        first = self.landing(user)   # seen (a product page), then clicked: no position, no query
        step_events = [self._event(user, sid, "impression", first, None, ts),
                       self._event(user, sid, "click", first, None, ts + float(self._rng.uniform(1.0, 10.0)))]
        out: list[dict] = []
        for _ in range(self.steps):
            out += step_events
            if post is not None:
                post(step_events)
            ts = step_events[-1]["ts"] + float(self._rng.uniform(2.0, 20.0))
            shown = list(recommend(user, self.k))[: self.k]
            step_events = self._browse(user, sid, shown, ts)
            if not any(e["type"] == "click" for e in step_events):
                out += step_events
                if post is not None:
                    post(step_events)
                return out
        out += step_events
        if post is not None:
            post(step_events)
        return out

    def _browse(self, user: str, sid: str, shown: list[str], ts: float) -> list[dict]:
        n = len(shown)
        grades = np.array([self.grade(user, p) for p in shown], dtype=int)
        examined = self._rng.random(n) < (1.0 / np.arange(1, n + 1)) ** self.eta
        clicked = examined & (self._rng.random(n) < self.p_click[grades])
        events = [self._event(user, sid, "impression", pid, pos, ts) for pos, pid in enumerate(shown)]
        first = np.flatnonzero(clicked)[:1]   # the first click is where the session goes on
        for pos in first:
            ts += float(self._rng.uniform(2.0, 30.0))
            events.append(self._event(user, sid, "click", shown[pos], int(pos), ts))
            if self._rng.random() < self.p_purchase[grades[pos]]:
                ts += float(self._rng.uniform(10.0, 90.0))
                events.append(self._event(user, sid, "purchase", shown[pos], int(pos), ts))
        return events

    def _event(self, user: str, sid: str, kind: str, product_id: str, position: int | None, ts: float) -> dict:
        event = {"event_id": self._uuid(), "ts": round(ts, 3), "user_id": user, "session_id": sid,
                 "type": kind, "product_id": product_id}
        if position is not None:
            event["position"] = int(position)
        return event

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.bytes(16), version=4))


def main(argv: Sequence[str] | None = None) -> int:
    """Events of taste sessions whose recommendations are the user's category shuffled (no model):
    a file for `aisle replay` or for inspection."""
    from data_pipelines.catalog import read_catalog
    from data_pipelines.simulator import write_events

    parser = argparse.ArgumentParser(description="shoppers with lasting tastes over the generated catalog")
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from pathlib import Path

    shoppers = TasteShoppers(read_catalog(Path(args.catalog)).products, n_users=args.users, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)

    def shuffled(user: str, k: int) -> list[str]:
        pool = shoppers._by_category[shoppers.users[user].category]
        return [pool[i] for i in rng.permutation(len(pool))[:k]]

    events, ts = [], DEFAULT_START_TS
    for _ in range(args.sessions):
        events += shoppers.session(shoppers.pick_user(), shuffled, ts)
        ts += float(rng.exponential(1.0))
    write_events(sorted(events, key=lambda e: e["ts"]), Path(args.out))
    print(f"wrote {len(events)} events of {args.sessions} sessions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
