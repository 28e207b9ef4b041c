"""Consumers' committed read offsets of a write-ahead log: one small file per consumer
(``<consumer>.offset``, JSON), replaced atomically and fsynced, so a consumer that crashes resumes
from its last commit. Readers of a live log's offsets (`aisle status`) use `read_only_offsets`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from core import storage
from core.wal_segments import WalCorruptionError

__all__ = ["OffsetStore", "read_only_offsets"]

CONSUMER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
OFFSET_SUFFIX = ".offset"
TMP_PREFIX = ".tmp-"  # core.storage's temp files: a commit that crashed before its rename


# --------------------------------------------------------------------------- consumer offsets


def _check_consumer(consumer: Any) -> str:
    if not isinstance(consumer, str) or not CONSUMER_RE.fullmatch(consumer):
        raise ValueError(f"invalid consumer name {consumer!r}: 1..64 characters of A-Z a-z 0-9 _ . -")
    return consumer


class OffsetStore:
    """Committed read offsets per consumer, one small file each, replaced atomically."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(os.path.abspath(os.fspath(directory)))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._offsets = self._load()

    def _load(self) -> dict[str, int]:
        offsets = {}
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TMP_PREFIX):
                os.unlink(entry.path)  # a commit that crashed before os.replace
            elif entry.name.endswith(OFFSET_SUFFIX):
                consumer = entry.name[: -len(OFFSET_SUFFIX)]
                try:
                    offset = json.loads(Path(entry.path).read_text(encoding="utf-8"))["offset"]
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise WalCorruptionError(f"{entry.path}: unreadable committed offset ({exc})") from exc
                offsets[consumer] = int(offset)
        return offsets

    def commit(self, consumer: str, offset: int) -> None:
        """Durably record that `consumer` has processed every record before `offset`."""
        _check_consumer(consumer)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        with self._lock:
            storage.write_text(self.directory / f"{consumer}{OFFSET_SUFFIX}",
                               json.dumps({"consumer": consumer, "offset": offset}) + "\n")
            self._offsets[consumer] = offset

    def get(self, consumer: str) -> int:
        """The committed offset of `consumer`; 0 if it never committed."""
        _check_consumer(consumer)
        with self._lock:
            return self._offsets.get(consumer, 0)

    def all(self) -> dict[str, int]:
        with self._lock:
            return dict(self._offsets)


def read_only_offsets(directory: str | os.PathLike) -> dict[str, int]:
    """Committed offsets per consumer, read without the OffsetStore (which clears crashed commits)."""
    directory = Path(directory)
    offsets = {}
    for path in sorted(directory.glob(f"*{OFFSET_SUFFIX}")) if directory.is_dir() else []:
        try:
            offsets[path.name[: -len(OFFSET_SUFFIX)]] = int(json.loads(path.read_text(encoding="utf-8"))["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # replaced mid-read or damaged: the OffsetStore reports that, an observer skips it
    return offsets
