"""A segmented write-ahead log of JSON records (consumers' committed offsets: core.consumer_offsets).

The FeedbackLog acknowledges an event only after it is on disk, so the log is built around one
rule: `append` returns after the whole batch is written and fsynced, never before. Everything else
follows from what a crash can and cannot leave behind.

On disk::

    <dir>/segment-<first_offset:020d>.wal   records; a segment's name is the offset of its first record
    <dir>/LOCK                              flock target: one writer per log (an opener waits up to
                                            LOCK_WAIT_S for a dying previous owner, e.g. a killed actor)

Record: 4-byte big-endian payload length, 4-byte big-endian CRC32 of the payload, payload (compact
UTF-8 JSON of one dict). Offsets are global record numbers from 0. A new segment is started when
the current one has reached `segment_bytes` (checked before each batch, so a segment may overshoot
by one batch).

Recovery on open
----------------
* A crash mid-`append` can only damage the end of the LAST segment (earlier segments were fsynced
  before the next one was created): an incomplete header or payload, a CRC mismatch or undecodable
  JSON with no valid record after it is a torn write. The file is truncated to the last good record
  and fsynced; `recovery` says how much went. Those bytes were never acknowledged.
* Damage followed by a valid record, damage in an earlier segment, or missing segments cannot come
  from a crash: `WalCorruptionError` names the file and byte position, and nothing is changed.
  A valid record cannot hide inside a JSON payload: its header starts with a 0x00 byte (lengths are
  under 16 MiB) and JSON text never contains a raw NUL.
* After a failed write or fsync the log refuses further appends (the file's state is unknown;
  reopening re-validates it).

Reads use an in-memory index (each segment's first offset, and the byte position of every
`INDEX_EVERY`-th record), so `read` seeks instead of rescanning. All methods are thread-safe.
Stdlib only; no Ray imports.
"""


from __future__ import annotations

import bisect
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from core import wal_segments as seg
from core.storage import fsync_dir
from core.wal_segments import (
    Segment,
    WalCorruptionError,
    WalError,
    count_chunks,
    decode_at,
    decode_block,
    encode_record,
    list_segments,
    scan_segment,
    segment_path,
    valid_record_after,
)

__all__ = ["WalError", "WalCorruptionError", "WriteAheadLog", "read_only_records", "read_only_end_offset"]

LOCK_WAIT_S = 30.0


# --------------------------------------------------------------------------- the log


class WriteAheadLog:
    """Append-only, fsynced, segmented log of JSON dicts (see module docstring)."""

    def __init__(self, directory: str | os.PathLike, segment_bytes: int = 8 << 20):
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.directory = Path(os.path.abspath(os.fspath(directory)))
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._failed: BaseException | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_process_lock(self.directory / "LOCK", LOCK_WAIT_S)
        try:
            self.recovery = {"truncated_records": 0, "truncated_bytes": 0}
            self._segments = self._open_segments()
            self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._firsts = [s.first for s in self._segments]

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the process lock (idempotent)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                os.close(self._lock_fd)
                self._fd = -1

    # ------------------------------------------------------------------ open and recovery

    def _open_segments(self) -> list[Segment]:
        segments = list_segments(self.directory)
        if not segments:
            segments = [self._create_segment(0)]
        expected = 0
        for i, segment in enumerate(segments):
            if segment.first != expected:
                raise WalCorruptionError(
                    f"{segment.path}: starts at offset {segment.first} but the log before it ends at "
                    f"{expected} (a segment file is missing or misnamed)"
                )
            self._load_segment(segment, last=i == len(segments) - 1)
            expected = segment.end
        return segments

    def _load_segment(self, segment: Segment, last: bool) -> None:
        data = segment.path.read_bytes()
        good = scan_segment(segment, data)
        segment.size = good
        if good == len(data):
            return
        later = valid_record_after(data, good)
        if not last or later is not None:
            where = "a later segment follows" if not last else f"a valid record follows at byte {later}"
            raise WalCorruptionError(
                f"{segment.path}: invalid record at byte {good} (record {segment.end}) and {where}; "
                "a crash cannot cause this, so the log was not changed"
            )
        self.recovery = {"truncated_records": count_chunks(data, good), "truncated_bytes": len(data) - good}
        with open(segment.path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())

    def _create_segment(self, first: int) -> Segment:
        path = segment_path(self.directory, first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)
        return Segment(first=first, path=path)

    # ------------------------------------------------------------------ writing

    def append(self, records: list[dict]) -> tuple[int, int]:
        """Write `records` as one batch and fsync; returns (first offset, end offset).

        When this returns the records are durable. An empty batch writes nothing.
        """
        encoded = [encode_record(r) for r in records]
        with self._lock:
            self._check_writable()
            segment = self._segments[-1]
            first = segment.end
            if not encoded:
                return first, first
            if segment.size >= self.segment_bytes:
                segment = self._roll()
            self._write(b"".join(encoded))
            for record in encoded:
                segment.note_record(segment.size)
                segment.size += len(record)
            return first, segment.end

    def _check_writable(self) -> None:
        if self._fd < 0:
            raise WalError(f"the log at {self.directory} is closed")
        if self._failed is not None:
            raise WalError(
                f"the log at {self.directory} refused the append: an earlier write failed "
                f"({self._failed!r}); reopen it to recover"
            )

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise

    def _roll(self) -> Segment:
        segment = self._create_segment(self._segments[-1].end)
        fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        os.close(self._fd)
        self._fd = fd
        self._segments.append(segment)
        self._firsts.append(segment.first)
        return segment

    # ------------------------------------------------------------------ reading

    @property
    def end_offset(self) -> int:
        """Offset the next record will get (= number of records in the log)."""
        with self._lock:
            return self._segments[-1].end

    @property
    def segment_count(self) -> int:
        with self._lock:
            return len(self._segments)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    def read(self, offset: int, limit: int) -> list[tuple[int, dict]]:
        """Up to `limit` (offset, record) pairs from `offset` on, across segments."""
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (offset, limit)):
            raise TypeError(f"offset and limit must be integers, got {offset!r}, {limit!r}")
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            end = self._segments[-1].end
            if not 0 <= offset <= end:
                raise ValueError(f"offset {offset} is outside the log (0..{end})")
            out: list[tuple[int, dict]] = []
            i = bisect.bisect_right(self._firsts, offset) - 1
            while len(out) < limit and offset < end:
                segment = self._segments[i]
                out.extend(self._read_segment(segment, offset, limit - len(out)))
                offset = segment.end
                i += 1
            return out

    def _read_segment(self, segment: Segment, offset: int, limit: int) -> list[tuple[int, dict]]:
        """Records of one segment from `offset`, one file read per index block of INDEX_EVERY records."""
        stop = min(segment.end, offset + limit)
        out: list[tuple[int, dict]] = []
        with open(segment.path, "rb") as f:
            for block in range((offset - segment.first) // seg.INDEX_EVERY, len(segment.index)):
                block_first = segment.first + block * seg.INDEX_EVERY
                if block_first >= stop:
                    break
                start = segment.index[block]
                end = segment.index[block + 1] if block + 1 < len(segment.index) else segment.size
                f.seek(start)
                out.extend(decode_block(segment, f.read(end - start), start, block_first, offset, stop))
        return out

    def iter_records(self, start: int = 0, batch: int = seg.INDEX_EVERY) -> Iterator[tuple[int, dict]]:
        """(offset, record) from `start` to the end as it was when iteration reached it."""
        while True:
            chunk = self.read(start, batch)
            if not chunk:
                return
            yield from chunk
            start = chunk[-1][0] + 1


# --------------------------------------------------------------------------- observers


def read_only_records(directory: str | os.PathLike, start: int = 0) -> Iterator[tuple[int, dict]]:
    """(offset, record) from `start` on, for an observer (`aisle status`, `aisle report`) of a log
    that a writer may hold open: no lock, no recovery, nothing written. It stops at the first record
    that does not decode (a torn tail, or a batch the writer is still writing)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    segments = list_segments(directory)
    for i, segment in enumerate(segments):
        following = segments[i + 1].first if i + 1 < len(segments) else None
        if following is not None and following <= start:
            continue
        data, pos, offset = segment.path.read_bytes(), 0, segment.first
        while (decoded := decode_at(data, pos)) is not None:
            if offset >= start:
                yield offset, decoded[0]
            pos, offset = decoded[1], offset + 1
        if pos < len(data):
            return


def read_only_end_offset(directory: str | os.PathLike) -> int:
    """The log's end offset (its depth) as an observer sees it: reads the last segment only."""
    directory = Path(directory)
    segments = list_segments(directory) if directory.is_dir() else []
    if not segments:
        return 0
    last = segments[-1]
    scan_segment(last, last.path.read_bytes())
    return last.end



def _acquire_process_lock(path: Path, wait_s: float) -> int:
    """flock `path` exclusively, waiting up to `wait_s` for a dying previous owner to let go."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WalError(
                    f"{path.parent}: still open elsewhere after {wait_s:g} s (another process, or an "
                    "unclosed WriteAheadLog in this one); a log takes one writer"
                ) from None
            time.sleep(0.05)
