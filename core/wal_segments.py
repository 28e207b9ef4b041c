"""The write-ahead log's files: how a record is framed, and how a segment file is listed, scanned and
indexed. `core.wal` is the log built on them (appends, recovery, reads); see its docstring for the
format's guarantees.

Record: 4-byte big-endian payload length, 4-byte big-endian CRC32 of the payload, payload (compact
UTF-8 JSON of one dict). A segment is ``segment-<first offset:020d>.wal``; its in-memory index holds
the byte position of every `INDEX_EVERY`-th record.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AisleError

HEADER = struct.Struct(">II")
MIN_PAYLOAD_BYTES = 2  # "{}"
MAX_RECORD_BYTES = 16 << 20
INDEX_EVERY = 1024
SEGMENT_RE = re.compile(r"segment-(\d{20})\.wal")


class WalError(AisleError):
    """The log cannot be opened or written (locked by another process, a failed write)."""


class WalCorruptionError(WalError):
    """The log holds damage a crash cannot explain; the message names the file and byte position."""


# --------------------------------------------------------------------------- records


def encode_record(record: dict) -> bytes:
    """Header + compact JSON payload of one record."""
    if not isinstance(record, dict):
        raise TypeError(f"a log record must be a dict, got {type(record).__name__}")
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"a log record is {len(payload)} bytes, more than the {MAX_RECORD_BYTES} allowed")
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_at(data: bytes | memoryview, pos: int) -> tuple[dict, int] | None:
    """(record, end position) if a valid record starts at `pos` of `data`, else None."""
    if len(data) - pos < HEADER.size:
        return None
    length, crc = HEADER.unpack_from(data, pos)
    start, end = pos + HEADER.size, pos + HEADER.size + length
    if not MIN_PAYLOAD_BYTES <= length <= MAX_RECORD_BYTES or end > len(data):
        return None
    payload = bytes(data[start:end])
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return (record, end) if isinstance(record, dict) else None


def valid_record_after(data: bytes, pos: int) -> int | None:
    """Position of the first valid record starting after `pos`, or None."""
    candidate = data.find(b"\x00", pos + 1)
    while candidate != -1:
        if decode_at(data, candidate) is not None:
            return candidate
        candidate = data.find(b"\x00", candidate + 1)
    return None


def count_chunks(data: bytes, pos: int) -> int:
    """How many record-shaped pieces (headers and what they claim) lie in the bad tail from `pos`."""
    chunks = 0
    while pos < len(data):
        chunks += 1
        if len(data) - pos < HEADER.size:
            break
        length = HEADER.unpack_from(data, pos)[0]
        pos += HEADER.size + length
    return chunks


# --------------------------------------------------------------------------- segments


@dataclass
class Segment:
    first: int
    path: Path
    count: int = 0
    size: int = 0
    index: list[int] = field(default_factory=list)  # byte position of record first + k * INDEX_EVERY

    @property
    def end(self) -> int:
        return self.first + self.count

    def note_record(self, position: int) -> None:
        if self.count % INDEX_EVERY == 0:
            self.index.append(position)
        self.count += 1


def segment_path(directory: Path, first: int) -> Path:
    return directory / f"segment-{first:020d}.wal"


def list_segments(directory: Path) -> list[Segment]:
    found = []
    for entry in os.scandir(directory):
        match = SEGMENT_RE.fullmatch(entry.name)
        if match:
            found.append(Segment(first=int(match.group(1)), path=Path(entry.path)))
    return sorted(found, key=lambda s: s.first)


def scan_segment(segment: Segment, data: bytes) -> int:
    """Index the valid prefix of `data` into `segment`; returns the position where it ends."""
    pos = 0
    while True:
        decoded = decode_at(data, pos)
        if decoded is None:
            return pos
        segment.note_record(pos)
        pos = decoded[1]


def decode_block(
    segment: Segment, data: bytes, start: int, first: int, offset: int, stop: int
) -> list[tuple[int, dict]]:
    """Records `offset` to `stop` of the index block that starts at byte `start` with record `first`."""
    out, pos = [], 0
    for o in range(first, min(stop, first + INDEX_EVERY)):
        if o < offset:
            pos += HEADER.size + HEADER.unpack_from(data, pos)[0]
            continue
        decoded = decode_at(data, pos)
        if decoded is None:
            raise WalCorruptionError(
                f"{segment.path}: record {o} at byte {start + pos} changed on disk since the log was opened"
            )
        out.append((o, decoded[0]))
        pos = decoded[1]
    return out
