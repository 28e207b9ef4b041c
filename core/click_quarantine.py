"""Suspect accounts of the online click model (`core.click_model`): who they are, and taking out the
evidence they gave. Pure bookkeeping over the model's tables, no I/O.

When a key is frozen as an attack (`core.click_guard.ATTACK_REASONS`), accounts that never bought or
carted anything in the stream become suspects: for too few accounts or clicks that never convert
(`ACCOUNT_REASONS`), every one credited on the key, at the freeze or when it clicks the key later;
for a surge, those credited on it during a surge (its genuine shoppers from before the flood are
not). The evidence a suspect gave before is taken out of every key (`KeyEvidence.retract`: a farm
frozen on one key has also boosted others, and its skipping has earned penalties on the products it
would not click), its later events teach no key, and the slow path holds windows holding its events
(`suspects`). Every key whose credited accounts are then mostly suspects is frozen
(`suspect_accounts`). Shoppers who buy are never suspects. An operator's freeze says nothing about
the accounts.

A farm that spreads its clicks over products no single key catches is still one set of accounts
searching the same few queries again and again: an account that never bought and clicks one
query's results in more than `max_query_sessions` sessions within the half-life is a suspect too
(`repeated_search`), whatever keys its clicks credited.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from core.click_config import ClickModelConfig
from core.click_evidence import KeyEvidence
from core.click_guard import ACCOUNT_REASONS, KeyGuard

REPEATED_SEARCH = "repeated_search"
"""The reason an account searched its way into quarantine (`Quarantine.suspects` holds it, not a key)."""
SURGE_FLAG = 4  # in a credit unit (`ClickModel.units`): the unit's click was credited during a surge


class Quarantine:
    """Buyers (never suspects) and suspects (user -> the attack-frozen keys that made it one)."""

    def __init__(self, cfg: ClickModelConfig, max_buyers: int):
        self.cfg, self.max_buyers = cfg, max_buyers
        self.buyers: OrderedDict[str, float] = OrderedDict()  # user -> last purchase or cart ts
        self.suspects: dict[str, list[str]] = {}
        self.searches: OrderedDict[str, list] = OrderedDict()  # user \x1f query -> [last session, decayed sessions, ts]

    def bought(self, user: str, ts: float) -> None:
        self.buyers.pop(user, None)
        self.buyers[user] = ts
        while len(self.buyers) > self.max_buyers:
            self.buyers.popitem(last=False)

    def on_freeze(self, name: str, reason: str, keys: Mapping[str, KeyEvidence], units: Mapping[str, list],
                  guard: KeyGuard, offset: int) -> list[dict]:
        """`name` was frozen as an attack for `reason`: the accounts behind it become suspects, keys
        mostly theirs are frozen, their evidence is taken out. The audit records of all that."""
        users = [u for u in keys[name].users if u not in self.buyers]
        if reason == "surge":
            users = [u for u in users if (units.get(f"{name}\x1f{u}") or [False] * (SURGE_FLAG + 1))[SURGE_FLAG]]
        new = self._suspect(users, name)
        return self._freeze_held(keys, guard, offset, f"after {name} was frozen") + self._retract(new, name, keys, offset)

    def on_click(self, user: str, names: Sequence[str], surging: bool, keys: Mapping[str, KeyEvidence],
                 guard: KeyGuard, offset: int) -> list[dict] | None:
        """A click by `user` (who never bought) on the keys `names`: when one of them is frozen as an
        attack, the account becomes a suspect as it would have at the freeze (on a key frozen for its
        accounts at any time, on one frozen for a surge during a surge). The audit records, or None
        when the click is not caught."""
        for name in names:
            status = guard.status.get(name)
            if not status or status["state"] != "frozen":
                continue
            reason = status["reason"].split(":", 1)[0]
            if reason in ACCOUNT_REASONS or (reason == "surge" and surging):
                return self._retract(self._suspect([user], name), name, keys, offset)
        return None

    def on_search_click(self, user: str, session: str, query: str, ts: float, keys: Mapping[str, KeyEvidence],
                        guard: KeyGuard, offset: int) -> list[dict] | None:
        """A click by `user` (who never bought) on `query`'s results in `session`: the audit records
        when the account thereby becomes a suspect (`repeated_search`), else None."""
        if self.cfg.max_query_sessions <= 0 or user in self.suspects:
            return None
        name = f"{user}\x1f{query}"
        entry = self.searches.pop(name, None) or [None, 0.0, ts]
        if entry[0] != session:
            entry[1] = entry[1] * 0.5 ** (max(ts - entry[2], 0.0) / self.cfg.half_life_s) + 1.0
            entry[0], entry[2] = session, max(ts, entry[2])
        self.searches[name] = entry
        while len(self.searches) > self.max_buyers:
            self.searches.popitem(last=False)
        if entry[1] <= self.cfg.max_query_sessions + 1e-9:
            return None
        reason = f"{REPEATED_SEARCH}: {query!r}"
        new = self._suspect([user], reason)
        return self._freeze_held(keys, guard, offset, f"after an account searched {query!r} again and again",
                                 [k for k, ev in keys.items() if user in ev.users]) + self._retract(new, reason, keys, offset)

    def _freeze_held(self, keys: Mapping[str, KeyEvidence], guard: KeyGuard, offset: int, cause: str,
                     names: Sequence[str] | None = None) -> list[dict]:
        """Freezes every key (of `names`, default all) credited by at least min_users accounts, more
        than max_suspect_share of them quarantined (those taken out before included:
        `suspect_accounts`); the audit records."""
        records = []
        if self.cfg.max_suspect_share >= 1:
            return records
        for other in (keys if names is None else names):
            ev = keys[other]
            credited = len(ev.users) + ev.retracted  # the quarantined ones taken out still count
            if credited < self.cfg.min_users or guard.is_frozen(other):
                continue
            held = sum(user in self.suspects for user in ev.users) + ev.retracted
            if held > self.cfg.max_suspect_share * credited:
                records.append(guard.freeze(other, f"suspect_accounts: {held} of the {credited} accounts "
                                                   f"credited on it are quarantined ({cause})", offset))
        return records

    def _suspect(self, users: Sequence[str], name: str) -> list[str]:
        """Marks `users` suspects because of key `name`; those that were not suspects before."""
        new = [u for u in dict.fromkeys(users) if u not in self.suspects]
        for user in users:
            self.suspects.setdefault(user, []).append(name)
        return new

    def _retract(self, users: list[str], name: str, keys: Mapping[str, KeyEvidence], offset: int) -> list[dict]:
        """Takes the evidence of `users` (new suspects because of `name`) out of every key; one audit record."""
        if not users:
            return []
        touched = 0
        for ev in keys.values():
            touched += any([ev.retract(user, self.cfg) for user in users])  # a list: every user is taken out
        return [{"source": "click_model", "decision": "retracted", "key": name,
                 "reason": f"the evidence of {len(users)} new suspect accounts taken out of {touched} keys",
                 "offset": offset, "metrics": {"accounts": len(users), "keys": touched}}]

    def state(self) -> dict:
        return {"buyers": [[u, ts] for u, ts in self.buyers.items()], "suspects": self.suspects,
                "searches": [[k, e] for k, e in self.searches.items()]}

    def restore(self, state: dict) -> None:
        self.buyers = OrderedDict((u, ts) for u, ts in state.get("buyers", []))  # absent before quarantine
        self.suspects = {u: list(keys) for u, keys in state.get("suspects", {}).items()}
        self.searches = OrderedDict((k, list(e)) for k, e in state.get("searches", []))  # absent before repeated_search
