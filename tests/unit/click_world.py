"""A tiny world for the click-model tests: two segments of 48 products, and shoppers who examine a
result list with a known position bias and click by a known score curve times a hidden preference.

Records come out in the FeedbackLog's normal form (`user`, `session`, `offset`, `flags`), with the
served `score` on impressions, so the click model reads them as it reads the log.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BRANDS = ("Acme", "Strivo", "Paceline", "Kessick")
COLOURS = ("navy", "red", "black", "white")
MATERIALS = ("mesh", "knit")
SEGMENTS = {"footwear": ("running shoes", "walking shoes", "hiking boots"),
            "tops": ("t-shirt", "polo shirt", "cardigan")}
START = 1_735_689_600.0


def products() -> list[dict]:
    """Each (brand, colour) pair three times per segment; product i of a segment has brand i % 4,
    colour (i // 4) % 4, material (i // 16) % 2, type i % 3."""
    rows = []
    for segment, types in SEGMENTS.items():
        for i in range(48):
            rows.append({"product_id": f"{segment[0].upper()}{i:03d}", "category": segment,
                         "product_type": types[i % 3], "brand": BRANDS[i % 4], "colour": COLOURS[(i // 4) % 4],
                         "material": MATERIALS[(i // 16) % 2]})
    return rows


def exam(position: int) -> float:
    return 1.0 / (position + 1)


def click_rate(score: float) -> float:
    """P(click | examined) of a product nobody prefers, by its served score."""
    return 0.05 + 0.15 * score


class Shoppers:
    """Sessions of shoppers over random result lists of a query's segment; deterministic per seed."""

    def __init__(self, seed: int = 0, n_users: int = 500, queries: tuple[str, ...] = ("running shoes", "walking shoes",
                 "t-shirt", "polo shirt"), hidden: frozenset[str] = frozenset(),
                 pinned: tuple[str, float] | None = None):
        self.rng = np.random.default_rng(seed)
        self.rows = {r["product_id"]: r for r in products()}
        self.n_users, self.queries, self.hidden, self.pinned = n_users, queries, hidden, pinned
        self.prefer: Callable[[dict, str], float] = lambda product, segment: 1.0
        self.offset, self.ts, self.sessions = 0, START, 0
        self.clicks: dict[str, int] = {}

    def segment_of(self, query: str) -> str:
        return next(s for s, types in SEGMENTS.items() if query in types)

    def result_list(self, query: str) -> list[tuple[str, float]]:
        """10 of the 16 products of the query's type (a pinned one always first), scores descending."""
        pinned = self.pinned if self.pinned and self.rows[self.pinned[0]]["product_type"] == query else None
        pool = [p for p, r in self.rows.items() if r["product_type"] == query and p not in self.hidden
                and (pinned is None or p != pinned[0])]
        picked = list(self.rng.choice(pool, size=min(10, len(pool)), replace=False))
        scores = sorted(self.rng.uniform(0.2, 1.6, size=len(picked)), reverse=True)
        hits = [(str(p), float(s)) for p, s in zip(picked, scores)]
        return ([pinned] + hits[:9]) if pinned else hits

    def session(self, user: str | None = None, query: str | None = None, step_s: float = 1.0) -> list[dict]:
        """One shopper's impressions of a fresh list, then their clicks and purchases."""
        query = query or self.queries[int(self.rng.integers(len(self.queries)))]
        user = user or f"u{int(self.rng.integers(self.n_users))}"
        session = f"s{self.sessions}"
        self.sessions += 1
        hits = self.result_list(query)
        segment = self.segment_of(query)
        records = [self.record(user, session, "impression", p, query, pos, score) for pos, (p, score) in enumerate(hits)]
        for pos, (p, score) in enumerate(hits):
            if self.rng.random() < min(1.0, exam(pos) * click_rate(score) * self.prefer(self.rows[p], segment)):
                self.clicks[p] = self.clicks.get(p, 0) + 1
                records.append(self.record(user, session, "click", p, query, pos, None, 2.0))
        self.ts += step_s
        return records

    def stream(self, n_sessions: int, step_s: float = 1.0) -> list[dict]:
        return [r for _ in range(n_sessions) for r in self.session(step_s=step_s)]

    def record(self, user: str, session: str, kind: str, product_id: str, query: str, position: int,
               score: float | None, after_s: float = 0.0) -> dict:
        r = {"event_id": f"e{self.offset}", "ts": self.ts + after_s, "user": user, "session": session, "type": kind,
             "product_id": product_id, "query": query, "position": position, "offset": self.offset, "flags": []}
        if score is not None:
            r["score"] = score
        self.offset += 1
        return r
