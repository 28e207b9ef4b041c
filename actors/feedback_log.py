"""FeedbackLog: the named Ray actor every event source writes to (a thin shell over FeedbackStore).

What survives a crash, and why:

* Every acknowledged event. `append` returns only after the batch is written and fsynced to the
  write-ahead log (core.wal), so a reply means the events are on disk.
* Nothing is stored twice. When the actor process dies, Ray starts a new instance
  (`max_restarts=-1`), whose constructor replays the log: a torn tail from the crash is truncated
  and every logged event_id goes back into the dedupe set. Ray then retries the call that was in
  flight on the new instance (`max_task_retries=-1`); events that had reached the disk come back
  as duplicates, the rest are stored now. Deduplication by event_id makes the retry exactly-once.
* Consumer offsets (`commit`) are written atomically, so a restarted consumer resumes where it
  committed (at-least-once processing from there).
* Sealed segments, when `archive_uri` is set, are copied there in the background (core.segment_archive);
  the local segments stay, the log replays them.
* Lost: the "since start" duplicate and rejected counters (the stored-event counters are recomputed
  from the log).

The actor takes no CPU (`num_cpus=0`): it waits on the disk, not the processor. Its disk is one
node's: `resources` (StreamConfig.state_resources) pins it, and every restart, to the node that
declares them. When that node is lost, appends wait (Ray retries them on the restarted actor, which
can start only there) and go through once the node is back, with every acknowledged event on its
disk (measured: benchmarks/scale_bench.py, "stream log on a lost node"); sealed segments copied to
`archive_uri` outlive the disk itself. It is named
(`FEEDBACK_LOG_NAME` in `NAMESPACE`) so the Serve ingress, the replay command and the update
coordinator find the same instance, and it is not detached: it lives as long as the driver that
created it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ray

from core.errors import AisleError
from core.feedback_store import FeedbackStore
from ops import metrics

__all__ = ["FEEDBACK_LOG_NAME", "NAMESPACE", "FeedbackLog", "get_or_create_feedback_log", "get_feedback_log"]

FEEDBACK_LOG_NAME = "aisle-feedback-log"
NAMESPACE = "aisle"
DEFAULT_SEGMENT_BYTES = 8 << 20


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class FeedbackLog:
    """Ray actor around FeedbackStore; `screen_factory` (picklable) builds the anomaly screen in the actor."""

    def __init__(
        self,
        log_dir: str,
        salt: str,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        screen_factory: Callable[[], Any] | None = None,
        archive_uri: str | None = None,
    ):
        screen = screen_factory() if screen_factory is not None else None
        self._store = FeedbackStore(log_dir, salt, segment_bytes=segment_bytes, screen=screen, archive_uri=archive_uri)
        self._record_depth()

    def append(self, raw_events: list) -> dict:
        result = self._store.append(raw_events)
        metrics.inc("aisle_events", result["new"], outcome="accepted")
        metrics.inc("aisle_events", result["duplicate"], outcome="duplicate")
        metrics.inc("aisle_events", result["rejected"], outcome="rejected")
        metrics.inc("aisle_events", result["flagged"], outcome="flagged")
        if result["new"]:
            self._record_depth()
        return result

    def read(self, offset: int, limit: int = 1000) -> dict:
        return self._store.read(offset, limit)

    def commit(self, consumer: str, offset: int) -> None:
        self._store.commit(consumer, offset)
        self._record_depth()

    def _record_depth(self) -> None:
        """aisle_feedback_log_depth and each consumer's aisle_consumer_lag."""
        stats = self._store.stats()
        metrics.set_gauge("aisle_feedback_log_depth", stats["end_offset"])
        for name, consumer in stats["consumers"].items():
            metrics.set_gauge("aisle_consumer_lag", consumer["lag"], consumer=name)

    def committed(self, consumer: str) -> int:
        return self._store.committed(consumer)

    def stats(self) -> dict:
        return self._store.stats()

    def ping(self) -> int:
        """The actor's process id (it changes when Ray restarts the actor)."""
        return os.getpid()


def get_or_create_feedback_log(
    log_dir: str | os.PathLike,
    salt: str,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    screen_factory: Callable[[], Any] | None = None,
    archive_uri: str | None = None,
    resources: dict[str, float] | None = None,
) -> ray.actor.ActorHandle:
    """The named FeedbackLog, started on `log_dir` if it is not running; `archive_uri` (s3://... or a
    path): where sealed segments are copied (core.segment_archive); `resources`: custom Ray resources
    it asks for, so that it runs (and Ray restarts it) only on the node whose disk holds `log_dir`.

    AisleError if the running one logs to another directory (two logs would split the stream).
    """
    log_dir = os.path.abspath(os.fspath(log_dir))
    handle = FeedbackLog.options(name=FEEDBACK_LOG_NAME, namespace=NAMESPACE, get_if_exists=True,
                                 resources=dict(resources or {})).remote(
        log_dir, salt, segment_bytes, screen_factory, archive_uri
    )
    running_dir = ray.get(handle.stats.remote())["log_dir"]
    if running_dir != log_dir:
        raise AisleError(
            f"the running {FEEDBACK_LOG_NAME} actor logs to {running_dir}, not {log_dir}; "
            "stop it first or use its directory"
        )
    return handle


def get_feedback_log() -> ray.actor.ActorHandle:
    """The running FeedbackLog; AisleError if none was started in this Ray cluster."""
    try:
        return ray.get_actor(FEEDBACK_LOG_NAME, namespace=NAMESPACE)
    except ValueError:
        raise AisleError(
            f"no {FEEDBACK_LOG_NAME} actor in Ray namespace {NAMESPACE!r}: "
            "start it with actors.feedback_log.get_or_create_feedback_log(log_dir, salt)"
        ) from None
