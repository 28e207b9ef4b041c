"""Recent products per shopper and what is popular right now, from the event stream (no Ray).

Fed with FeedbackLog records in log order; used by `/v1/recommend {user_id}` so a click changes the
next recommendation at once. Only clean positive events count (click, add-to-cart, purchase):
impressions say what we showed, not what the shopper wanted, and flagged events (bots) must not
steer anyone's recommendations. Users are pseudonyms (salted hashes), as in the log.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque

from core.events import POSITIVE_TYPES


class RecentProducts:
    def __init__(self, per_user: int = 20, max_users: int = 100_000, popular_window: int = 5_000):
        self.per_user, self.max_users = per_user, max_users
        self._users: OrderedDict[str, deque[str]] = OrderedDict()
        self._recent_positives: deque[str] = deque(maxlen=popular_window)
        self._popular: Counter[str] = Counter()

    def observe(self, records: list[dict]) -> None:
        for r in records:
            if r.get("flags") or r.get("type") not in POSITIVE_TYPES:
                continue
            self._remember(r["user"], r["product_id"])
            if len(self._recent_positives) == self._recent_positives.maxlen:
                old = self._recent_positives[0]
                self._popular[old] -= 1
                if self._popular[old] <= 0:
                    del self._popular[old]
            self._recent_positives.append(r["product_id"])
            self._popular[r["product_id"]] += 1

    def _remember(self, user: str, product_id: str) -> None:
        items = self._users.pop(user, None) or deque(maxlen=self.per_user)
        if product_id in items:
            items.remove(product_id)
        items.appendleft(product_id)
        self._users[user] = items  # most recently active user last
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)

    def recent(self, user: str, n: int) -> list[str]:
        """The user's latest distinct positive products, newest first."""
        return list(self._users.get(user, ()))[:n]

    def popular(self, n: int, exclude: set[str] = frozenset()) -> list[str]:
        return [p for p, _ in self._popular.most_common(n + len(exclude)) if p not in exclude][:n]

    @property
    def users(self) -> int:
        return len(self._users)
