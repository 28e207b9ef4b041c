"""Copies the feedback log's sealed write-ahead-log segments to an archive location (s3:// or a path).

When the log rolls to a new segment, the previous one is sealed: fsynced and never written again
(core.wal). The archiver uploads every sealed segment to ``<archive_uri>/<segment file name>``
from a background thread, checks the stored size against the local file, and records it in a
manifest (``<log_dir>/archive.json``, replaced atomically) so a restart does not upload it again.

* An acknowledged append never waits for the archive and never fails because of it: uploads run
  in their own thread, woken by the store after a roll (`notify`).
* A failed upload (network, credentials, a size mismatch) is logged, kept in `stats()` as
  `last_error`, and tried again on the next roll, after `RETRY_S`, and when the log is reopened.
* Local segments stay where they are: the log replays them on open (dedupe set, counters) and
  serves reads from them. The archive is a copy for retention and offline analysis; pruning
  local segments is not done here.
* The segment being written (the last one) is never archived; after a restart the previous run's
  sealed segments are archived if the manifest does not list them.

No Ray imports.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from core import storage
from core.wal_segments import SEGMENT_RE

__all__ = ["SegmentArchiver", "MANIFEST_FILE", "RETRY_S"]

logger = logging.getLogger("aisle.feedback.archive")

MANIFEST_FILE = "archive.json"
RETRY_S = 60.0
"""After a failed pass, the archiver tries again this many seconds later (or at the next roll)."""


class SegmentArchiver:
    """Background copier of sealed segments of the log in `wal_dir` to `archive_uri` (see module docstring)."""

    def __init__(self, wal_dir: str | os.PathLike, archive_uri: str, manifest: str | os.PathLike,
                 retry_s: float = RETRY_S):
        self.wal_dir = Path(wal_dir)
        self.archive_uri = archive_uri.rstrip("/") if storage.is_remote(archive_uri) else os.path.abspath(archive_uri)
        storage.resolve(self.archive_uri)  # a malformed URI fails here, at open, not in the thread
        self.manifest_path = Path(manifest)
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._archived = self._load_manifest()
        self._wake = threading.Condition()
        self._requested = 0  # notify() calls so far
        self._finished = 0  # the value of _requested at the start of the last finished pass
        self._closing = False
        self.last_error: str | None = None
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="segment-archiver", daemon=True)
        self.notify()  # a previous run's sealed segments that never made it
        self._thread.start()

    # ------------------------------------------------------------------ manifest

    def _load_manifest(self) -> dict[str, int]:
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("unreadable archive manifest %s (%s): sealed segments will be uploaded again",
                           self.manifest_path, exc)
            return {}
        entries = doc.get("archives", {}).get(self.archive_uri, {}) if isinstance(doc, dict) else {}
        return {name: int(e["bytes"]) for name, e in entries.items() if isinstance(e, dict) and "bytes" in e}

    def _record(self, name: str, size: int) -> None:
        """Add one archived segment to the manifest (other archive locations' entries are kept)."""
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        archives = doc.setdefault("archives", {})
        archives.setdefault(self.archive_uri, {})[name] = {
            "bytes": size, "archived_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_text(self.manifest_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        with self._lock:
            self._archived[name] = size

    # ------------------------------------------------------------------ work

    def sealed_segments(self) -> list[Path]:
        """Every segment file but the last (the one being written), in log order."""
        names = sorted(e.name for e in os.scandir(self.wal_dir) if SEGMENT_RE.fullmatch(e.name))
        return [self.wal_dir / name for name in names[:-1]]

    def pending(self) -> list[Path]:
        with self._lock:
            return [p for p in self.sealed_segments() if p.name not in self._archived]

    def archive_pending(self) -> int:
        """Upload every sealed segment not archived yet; returns how many went. Stops at the first
        failure (logged, kept in `last_error`); the rest waits for the next pass."""
        done = 0
        for path in self.pending():
            if self._closing:
                break
            target = storage.join(self.archive_uri, path.name)
            try:
                size = path.stat().st_size
                stored = storage.upload_file(path, target)
                if stored != size:
                    raise OSError(f"stored {stored} bytes of {size}")
                self._record(path.name, size)
            except Exception as exc:  # noqa: BLE001 - any failure: log, keep the log running, retry later
                self.failures += 1
                self.last_error = f"{path.name} -> {target}: {exc}"
                logger.warning("could not archive segment %s", self.last_error)
                return done
            done += 1
            self.last_error = None
            logger.info("archived %s (%d bytes) to %s", path.name, size, target)
        return done

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._finished == self._requested and not self._closing:
                    self._wake.wait(timeout=self.retry_s if self.last_error else None)
                if self._closing:
                    return
                requested = self._requested
            self.archive_pending()
            with self._wake:
                self._finished = requested
                self._wake.notify_all()

    def notify(self) -> None:
        """A segment was sealed (or may have been): wake the uploader. Never waits for it."""
        with self._wake:
            self._requested += 1
            self._wake.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until a pass that started after every notify() so far has finished (tests, shutdown)."""
        with self._wake:
            target = self._requested
            return self._wake.wait_for(lambda: self._finished >= target or self._closing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (an upload in flight finishes or is retried at the next open)."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout)

    def stats(self) -> dict:
        with self._lock:
            archived = dict(self._archived)
        pending = [p.name for p in self.sealed_segments() if p.name not in archived]
        return {"uri": self.archive_uri, "archived": len(archived), "archived_bytes": sum(archived.values()),
                "pending": len(pending), "failures": self.failures, "last_error": self.last_error}
