"""UserSessions: the named actor behind `/v1/recommend {user_id}` (state in `core.sessions`).

It tails the FeedbackLog itself: every call first reads the records appended since its last read,
so a click acknowledged by the log is in the very next recommendation, whatever the source (HTTP,
replay, Redis). Its state is a cache of the log: on (re)start it replays the last `warm_events`
records, so nothing needs saving.
"""

from __future__ import annotations

import ray

from actors.feedback_log import get_feedback_log
from core.events import pseudonym
from core.sessions import RecentProducts

SESSIONS_NAME = "aisle-user-sessions"
NAMESPACE = "aisle"
READ_BATCH = 5000


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class UserSessions:
    def __init__(self, salt: str, warm_events: int = 50_000):
        self.salt, self.log = salt, get_feedback_log()
        self.state = RecentProducts()
        end = ray.get(self.log.stats.remote())["end_offset"]
        self.offset = max(0, end - warm_events)
        self._catch_up()

    def _catch_up(self) -> None:
        while True:
            batch = ray.get(self.log.read.remote(self.offset, READ_BATCH))
            self.state.observe(batch["events"])
            self.offset = batch["next_offset"]
            if not batch["events"] or self.offset >= batch["end_offset"]:
                return

    def recent(self, user_id: str, n: int = 10) -> list[str]:
        """The shopper's latest products (raw user id in, pseudonymised here with the log's salt)."""
        self._catch_up()
        return self.state.recent(pseudonym(user_id, self.salt), n)

    def popular(self, n: int = 10, exclude: list[str] | None = None) -> list[str]:
        self._catch_up()
        return self.state.popular(n, set(exclude or ()))

    def stats(self) -> dict:
        return {"offset": self.offset, "users": self.state.users}


def get_or_create_user_sessions(salt: str):
    return UserSessions.options(name=SESSIONS_NAME, namespace=NAMESPACE, get_if_exists=True).remote(salt)


def get_user_sessions():
    return ray.get_actor(SESSIONS_NAME, namespace=NAMESPACE)
