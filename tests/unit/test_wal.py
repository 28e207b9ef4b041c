"""core.wal: round trip, segments, indexed reads, torn-tail recovery, corruption detection, offsets."""

from __future__ import annotations

import json
import os
import random
import threading
import zlib
from pathlib import Path

import pytest

import core.wal as wal
import core.wal_segments as wal_segments
from core.consumer_offsets import OffsetStore
from core.errors import AisleError
from core.wal import WalCorruptionError, WalError, WriteAheadLog
from core.wal_segments import HEADER


def rec(i: int) -> dict:
    return {"i": i, "text": f"record {i} " + "x" * (i % 7), "ü": "ñ"}


def fill(directory: Path, n: int, batch: int = 10, segment_bytes: int = 8 << 20) -> None:
    with WriteAheadLog(directory, segment_bytes=segment_bytes) as log:
        for start in range(0, n, batch):
            log.append([rec(i) for i in range(start, min(n, start + batch))])


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.wal"))


def record_bounds(path: Path) -> list[int]:
    """Byte position where each record of a (valid) segment file starts, plus its end."""
    data, pos, bounds = path.read_bytes(), 0, [0]
    while pos < len(data):
        pos += HEADER.size + HEADER.unpack_from(data, pos)[0]
        bounds.append(pos)
    return bounds


# ---- writing and reading -------------------------------------------------------------------------

def test_round_trip_and_reopen(tmp_path):
    with WriteAheadLog(tmp_path) as log:
        assert log.end_offset == 0 and log.read(0, 10) == []
        assert log.append([rec(0), rec(1), rec(2)]) == (0, 3)
        assert log.append([]) == (3, 3)
        assert log.append([rec(3)]) == (3, 4)
        assert log.read(1, 2) == [(1, rec(1)), (2, rec(2))]
    with WriteAheadLog(tmp_path) as log:
        assert log.end_offset == 4
        assert log.recovery == {"truncated_records": 0, "truncated_bytes": 0}
        assert list(log.iter_records()) == [(i, rec(i)) for i in range(4)]
        assert list(log.iter_records(3)) == [(3, rec(3))]
    assert [p.name for p in segments(tmp_path)] == ["segment-00000000000000000000.wal"]


def test_record_format_is_length_crc_compact_json(tmp_path):
    with WriteAheadLog(tmp_path) as log:
        log.append([{"a": 1, "b": "é"}])
    data = segments(tmp_path)[0].read_bytes()
    payload = '{"a":1,"b":"é"}'.encode()
    assert data == len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload


def test_bad_records_are_refused_before_anything_is_written(tmp_path):
    with WriteAheadLog(tmp_path) as log:
        with pytest.raises(TypeError):
            log.append([rec(0), ["not", "a", "dict"]])
        with pytest.raises(ValueError):
            log.append([rec(0), {"x": float("nan")}])
        assert log.end_offset == 0 and log.size_bytes == 0
        with pytest.raises(ValueError):
            log.read(1, 1)
        with pytest.raises(ValueError):
            log.read(0, -1)


def test_rollover_and_reads_across_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(wal_segments, "INDEX_EVERY", 4)  # exercise the sparse index with few records
    fill(tmp_path, 300, batch=7, segment_bytes=600)
    names = [p.name for p in segments(tmp_path)]
    assert len(names) > 5
    with WriteAheadLog(tmp_path, segment_bytes=600) as log:
        assert log.segment_count == len(names)
        assert log.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))
        firsts = [int(n[len("segment-"):-len(".wal")]) for n in names]
        assert firsts[0] == 0 and firsts == sorted(firsts)
        for first in firsts[1:]:  # a segment is named after its first record
            assert log.read(first, 1)[0][1] == rec(first)
        rng = random.Random(0)
        for _ in range(200):
            offset, limit = rng.randrange(0, 301), rng.randrange(0, 80)
            expected = [(i, rec(i)) for i in range(offset, min(300, offset + limit))]
            assert log.read(offset, limit) == expected
        assert list(log.iter_records(5, batch=13)) == [(i, rec(i)) for i in range(5, 300)]


def test_segment_is_rolled_only_once_full(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=10_000) as log:
        log.append([rec(i) for i in range(400)])  # one batch may overshoot
        assert log.segment_count == 1
        log.append([rec(400)])
        assert log.segment_count == 2
        assert segments(tmp_path)[1].name == "segment-00000000000000000400.wal"


def test_reader_thread_sees_a_consistent_prefix_while_appending(tmp_path):
    errors = []
    with WriteAheadLog(tmp_path, segment_bytes=2000) as log:
        def reader():
            try:
                for _ in range(200):
                    got = log.read(0, 10_000)
                    assert [r["i"] for _, r in got] == list(range(len(got)))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        for start in range(0, 500, 5):
            log.append([rec(i) for i in range(start, start + 5)])
        thread.join()
    assert errors == []


def test_a_failed_write_stops_appends_until_reopened(tmp_path, monkeypatch):
    log = WriteAheadLog(tmp_path)
    log.append([rec(0)])

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        log.append([rec(1)])
    monkeypatch.undo()
    with pytest.raises(WalError, match="reopen"):
        log.append([rec(2)])
    log.close()
    with WriteAheadLog(tmp_path) as log:
        assert [r["i"] for _, r in log.iter_records()] == [0, 1]  # the write landed; only its fsync failed


def test_one_writer_per_log(tmp_path, monkeypatch):
    monkeypatch.setattr(wal, "LOCK_WAIT_S", 0.1)
    with WriteAheadLog(tmp_path):
        with pytest.raises(WalError, match="one writer"):
            WriteAheadLog(tmp_path)
    WriteAheadLog(tmp_path).close()


# ---- recovery ------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [1, 4, 7, 8, 9, 20, -1])
def test_torn_last_record_is_truncated(tmp_path, keep):
    fill(tmp_path, 25, segment_bytes=600)
    last = segments(tmp_path)[-1]
    bounds = record_bounds(last)
    cut = bounds[-2] + keep if keep > 0 else bounds[-1] + keep  # keep bytes of the last record
    data = last.read_bytes()
    last.write_bytes(data[:cut])
    with WriteAheadLog(tmp_path) as log:
        assert log.recovery == {"truncated_records": 1, "truncated_bytes": cut - bounds[-2]}
        assert log.end_offset == 24
        assert last.stat().st_size == bounds[-2]
        assert log.append([rec(24)]) == (24, 25)
    with WriteAheadLog(tmp_path) as log:
        assert log.recovery["truncated_records"] == 0
        assert list(log.iter_records()) == [(i, rec(i)) for i in range(25)]


@pytest.mark.parametrize("tail", [b"\x00" * 4096, bytes(random.Random(1).randrange(256) for _ in range(3000)),
                                  b"\x00\x00\x00\x05\x00\x00\x00\x00hello"])
def test_garbage_after_the_last_record_is_truncated(tmp_path, tail):
    fill(tmp_path, 12)
    last = segments(tmp_path)[-1]
    size = last.stat().st_size
    with open(last, "ab") as f:
        f.write(tail)
    with WriteAheadLog(tmp_path) as log:
        assert log.recovery["truncated_bytes"] == len(tail) and log.recovery["truncated_records"] >= 1
        assert log.end_offset == 12 and last.stat().st_size == size


def test_bad_crc_and_bad_json_at_the_tail_are_torn_writes(tmp_path):
    fill(tmp_path, 3)
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-2] ^= 0x01  # payload byte of the last record: CRC mismatch
    payload = b"{not json"
    data += HEADER.pack(len(payload), zlib.crc32(payload)) + payload  # CRC fine, JSON not
    last.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as log:
        assert log.recovery["truncated_records"] == 2
        assert log.end_offset == 2


def test_corruption_followed_by_a_valid_record_raises(tmp_path):
    fill(tmp_path, 10)
    last = segments(tmp_path)[-1]
    bounds = record_bounds(last)
    data = bytearray(last.read_bytes())
    data[bounds[4] + HEADER.size + 3] ^= 0x20  # inside record 4's payload
    last.write_bytes(bytes(data))
    with pytest.raises(WalCorruptionError, match=rf"{last.name}.*byte {bounds[4]}") as info:
        WriteAheadLog(tmp_path)
    assert isinstance(info.value, AisleError)
    assert last.read_bytes() == bytes(data)  # nothing "repaired"
    WriteAheadLog(tmp_path.parent / "other").close()  # the lock was released on the error


def test_damage_in_an_earlier_segment_raises_even_at_its_end(tmp_path):
    fill(tmp_path, 60, segment_bytes=600)
    first = segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-3])
    with pytest.raises(WalCorruptionError, match=first.name):
        WriteAheadLog(tmp_path)


def test_a_missing_segment_raises(tmp_path):
    fill(tmp_path, 60, segment_bytes=600)
    segments(tmp_path)[1].unlink()
    with pytest.raises(WalCorruptionError, match="missing"):
        WriteAheadLog(tmp_path)


def test_an_empty_trailing_segment_is_fine(tmp_path):
    fill(tmp_path, 5)
    (tmp_path / "segment-00000000000000000005.wal").touch()  # created by a roll, then a crash
    with WriteAheadLog(tmp_path) as log:
        assert log.end_offset == 5 and log.segment_count == 2
        assert log.append([rec(5)]) == (5, 6)
        assert log.read(4, 5) == [(4, rec(4)), (5, rec(5))]


# ---- consumer offsets ----------------------------------------------------------------------------

def test_offset_store_commits_atomically_and_persists(tmp_path):
    store = OffsetStore(tmp_path)
    assert store.get("trainer") == 0 and store.all() == {}
    store.commit("trainer", 42)
    store.commit("audit.v2-x", 7)
    store.commit("trainer", 50)
    (tmp_path / ".tmp-crashed").write_text("half")
    reopened = OffsetStore(tmp_path)
    assert reopened.all() == {"trainer": 50, "audit.v2-x": 7}
    assert sorted(os.listdir(tmp_path)) == ["audit.v2-x.offset", "trainer.offset"]
    assert json.loads((tmp_path / "trainer.offset").read_text())["offset"] == 50


@pytest.mark.parametrize("name", ["", "a/b", "..\x00", "x" * 65, "sp ace", 3])
def test_offset_store_rejects_bad_consumer_names(tmp_path, name):
    with pytest.raises(ValueError, match="consumer"):
        OffsetStore(tmp_path).commit(name, 1)


def test_offset_store_rejects_bad_offsets_and_unreadable_files(tmp_path):
    store = OffsetStore(tmp_path)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            store.commit("c", bad)
    (tmp_path / "c.offset").write_text("garbage")
    with pytest.raises(WalCorruptionError, match="c.offset"):
        OffsetStore(tmp_path)
