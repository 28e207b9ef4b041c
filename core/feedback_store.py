"""The FeedbackLog's logic without Ray: validate, dedupe, screen and durably log stream events.

`append` turns a batch of raw events into log records and returns only after they are fsynced
(core.wal), so an acknowledged event survives any crash of the process. Each raw event is
normalised by `core.events.normalize_event` (rejected with its reason otherwise), dropped as a
duplicate if its `event_id` is already in the log or earlier in the batch, and otherwise screened
for anomalies (`screen.screen(event) -> list of reasons`, empty = clean) and stored as
``{**event, "ingested_at": t, "flags": [...]}``. Flagged events are kept, not dropped: the consumer
decides what a flag means.

Exactly-once across restarts: on open the log is recovered (torn tail truncated), every record's
event_id goes back into the seen-set, and the counters of stored events are recomputed from the
log. A client (or Ray) that resends a batch whose acknowledgement it never got therefore gets
"duplicate" for the events that made it to disk, and they are stored once. The screen is warmed
with the last `warm_records` records so its rate windows survive a restart.

Memory: the seen-set holds every event_id ever logged, about 100 bytes each (a 36-character UUID
string plus set overhead): ~100 MB per million events. Opening replays the whole log.

Layout: ``<log_dir>/wal/`` (segments), ``<log_dir>/offsets/`` (consumer offsets),
``<log_dir>/archive.json`` (which sealed segments were copied to `archive_uri`, when one is set:
see core.segment_archive; uploads run in a background thread and never delay an append).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Protocol

from core.events import normalize_event, rejection_field
from core.segment_archive import MANIFEST_FILE, SegmentArchiver
from core.consumer_offsets import OffsetStore
from core.wal import WriteAheadLog

__all__ = ["Screen", "FeedbackStore", "MAX_REJECTIONS", "MAX_READ"]

MAX_REJECTIONS = 50
"""Rejections listed in an append result (all are counted)."""
MAX_READ = 10_000
"""Most events one `read` returns, to bound the size of a reply."""
_STORE_KEYS = ("ingested_at", "flags")


class Screen(Protocol):
    """Anomaly screen: reasons an event looks wrong (bot-like rate, ...); [] when it looks fine."""

    def screen(self, event: dict) -> list[str]: ...


def _as_event(record: dict) -> dict:
    """The normal-form event a record was made from (what the screen saw at ingest)."""
    return {k: v for k, v in record.items() if k not in _STORE_KEYS}


class FeedbackStore:
    """Durable, deduplicated event log with consumer offsets (see module docstring)."""

    def __init__(
        self,
        log_dir: str | os.PathLike,
        salt: str,
        segment_bytes: int = 8 << 20,
        screen: Screen | None = None,
        clock: Callable[[], float] = time.time,
        warm_records: int = 50_000,
        archive_uri: str | None = None,
    ):
        if not isinstance(salt, str) or not salt:
            raise ValueError("salt must be a non-empty string")
        started = time.perf_counter()
        self.log_dir = Path(os.path.abspath(os.fspath(log_dir)))
        self._salt = salt
        self._screen = screen
        self._clock = clock
        self._lock = threading.Lock()
        self._wal = WriteAheadLog(self.log_dir / "wal", segment_bytes=segment_bytes)
        self._archiver: SegmentArchiver | None = None
        try:
            self._offsets = OffsetStore(self.log_dir / "offsets")
            if archive_uri:
                self._archiver = SegmentArchiver(self.log_dir / "wal", archive_uri, self.log_dir / MANIFEST_FILE)
        except BaseException:
            self._wal.close()
            raise
        self._segments = self._wal.segment_count
        self._seen: set[str] = set()
        self._flagged = 0
        self._flag_reasons: Counter[str] = Counter()
        self._duplicate_since_start = 0
        self._rejected_since_start = 0
        self._replay(warm_records)
        self._open_seconds = time.perf_counter() - started

    def close(self) -> None:
        """Release the log (a store is one writer; reopening in the same process needs this first)."""
        if self._archiver is not None:
            self._archiver.close()
        self._wal.close()

    def wait_archived(self, timeout: float | None = None) -> bool:
        """Wait for the archiver to finish the uploads asked for so far (True; also when none is set)."""
        return self._archiver.wait_idle(timeout) if self._archiver is not None else True

    # ------------------------------------------------------------------ open

    def _replay(self, warm_records: int) -> None:
        """Rebuild the seen-set and counters from the log; warm the screen with its tail."""
        tail: deque[dict] = deque(maxlen=max(0, warm_records) if self._screen is not None else 0)
        for _, record in self._wal.iter_records():
            self._seen.add(record["event_id"])
            self._count_flags(record["flags"])
            tail.append(record)
        if self._screen is not None:
            for record in tail:
                self._screen.screen(_as_event(record))

    def _count_flags(self, flags: list[str]) -> None:
        if flags:
            self._flagged += 1
            self._flag_reasons.update(flags)

    # ------------------------------------------------------------------ writing

    def append(self, raw_events: list) -> dict:
        """Validate, dedupe, screen and durably log a batch; the result counts what happened to each."""
        if not isinstance(raw_events, list):
            raise ValueError(f"append expects a list of events, got {type(raw_events).__name__}")
        with self._lock:
            now = self._clock()
            records: list[dict] = []
            batch_ids: set[str] = set()
            rejections: list[dict] = []
            rejected = duplicate = 0
            for index, raw in enumerate(raw_events):
                try:
                    event = normalize_event(raw, self._salt, now=now)
                except ValueError as exc:
                    rejected += 1
                    if len(rejections) < MAX_REJECTIONS:
                        reason = str(exc)
                        rejections.append({"index": index, "field": rejection_field(reason), "reason": reason})
                    continue
                event_id = event["event_id"]
                if event_id in self._seen or event_id in batch_ids:
                    duplicate += 1
                    continue
                batch_ids.add(event_id)
                records.append({**event, "ingested_at": now, "flags": self._flags(event)})
            first, end = self._wal.append(records)  # durable from here on
            if self._archiver is not None and self._wal.segment_count != self._segments:
                self._segments = self._wal.segment_count
                self._archiver.notify()  # a segment was sealed: upload it in the background
            self._seen.update(batch_ids)
            for record in records:
                self._count_flags(record["flags"])
            self._duplicate_since_start += duplicate
            self._rejected_since_start += rejected
            return {
                "new": len(records),
                "duplicate": duplicate,
                "rejected": rejected,
                "flagged": sum(1 for r in records if r["flags"]),
                "rejections": rejections,
                "first_offset": first,
                "end_offset": end,
            }

    def _flags(self, event: dict) -> list[str]:
        if self._screen is None:
            return []
        flags = self._screen.screen(event)
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            name = type(self._screen).__name__
            raise TypeError(f"{name}.screen must return a list of strings, got {flags!r}")
        return flags

    # ------------------------------------------------------------------ reading and offsets

    def read(self, offset: int, limit: int = 1000) -> dict:
        """Events from `offset` on (each with its "offset"), at most `limit` (<= MAX_READ)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_READ:
            raise ValueError(f"limit must be an integer in 0..{MAX_READ}, got {limit!r}")
        records = self._wal.read(offset, limit)
        return {
            "events": [{**record, "offset": o} for o, record in records],
            "next_offset": offset + len(records),
            "end_offset": self._wal.end_offset,
        }

    def commit(self, consumer: str, offset: int) -> None:
        """Record that `consumer` has processed every event before `offset` (<= end_offset)."""
        end = self._wal.end_offset
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= end:
            raise ValueError(f"offset {offset!r} is outside the log (0..{end})")
        self._offsets.commit(consumer, offset)

    def committed(self, consumer: str) -> int:
        """The offset `consumer` last committed; 0 if never."""
        return self._offsets.get(consumer)

    def stats(self) -> dict[str, Any]:
        """Depth, size, counters, open-time recovery and each consumer's lag."""
        with self._lock:
            end = self._wal.end_offset
            return {
                "log_dir": str(self.log_dir),
                "end_offset": end,
                "segments": self._wal.segment_count,
                "bytes": self._wal.size_bytes,
                "events": {
                    "new": end,
                    "flagged": self._flagged,
                    "flagged_by_reason": dict(self._flag_reasons),
                    "duplicate_since_start": self._duplicate_since_start,
                    "rejected_since_start": self._rejected_since_start,
                },
                "recovery": dict(self._wal.recovery),
                "open_seconds": round(self._open_seconds, 3),
                "archive": self._archiver.stats() if self._archiver is not None else None,
                "consumers": {
                    name: {"offset": offset, "lag": end - offset}
                    for name, offset in sorted(self._offsets.all().items())
                },
            }
