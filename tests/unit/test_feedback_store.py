"""core.feedback_store: validation, dedupe (within a batch, across batches, across reopen), flags,
screen warm-up, offsets, and exactly-once under SIGKILL of a real writer process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core.events import pseudonym
from core.feedback_store import MAX_REJECTIONS, FeedbackStore

SALT = "test-salt"
NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def event(event_id: str, **overrides) -> dict:
    raw = {"event_id": event_id, "ts": NOW - 5, "user_id": "u1", "session_id": "s1", "type": "click",
           "product_id": "p1", "query": "Red  Shoes", "position": 3}
    raw.update(overrides)
    return raw


class FakeScreen:
    """Flags purchases of product 'bot'; remembers every event it was shown."""

    def __init__(self):
        self.seen: list[dict] = []

    def screen(self, ev: dict) -> list[str]:
        self.seen.append(ev)
        return ["bot_product", "purchase"] if ev["product_id"] == "bot" and ev["type"] == "purchase" else []


@pytest.fixture
def open_store(tmp_path):
    opened: list[FeedbackStore] = []

    def _open(**kwargs) -> FeedbackStore:
        for store in opened:
            store.close()
        kwargs.setdefault("clock", lambda: NOW)
        store = FeedbackStore(tmp_path, SALT, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def test_append_stores_normal_form_and_reads_back_with_offsets(open_store, tmp_path):
    store = open_store()
    result = store.append([event("a"), event("b", type="purchase", position=None)])
    assert result == {"new": 2, "duplicate": 0, "rejected": 0, "flagged": 0, "rejections": [],
                      "first_offset": 0, "end_offset": 2}
    page = store.read(0)
    assert page["next_offset"] == 2 and page["end_offset"] == 2
    first = page["events"][0]
    assert first == {"event_id": "a", "ts": NOW - 5, "user": pseudonym("u1", SALT), "session": pseudonym("s1", SALT),
                     "type": "click", "product_id": "p1", "query": "Red Shoes", "position": 3,
                     "ingested_at": NOW, "flags": [], "offset": 0}
    assert store.read(1, limit=5)["events"][0]["event_id"] == "b"
    assert store.read(2)["events"] == []
    assert b"u1" not in b"".join(p.read_bytes() for p in (tmp_path / "wal").glob("*.wal"))  # no raw user id


def test_dedupe_within_a_batch_across_batches_and_across_reopen(open_store):
    store = open_store()
    assert store.append([event("a"), event("b"), event("a")])["duplicate"] == 1
    result = store.append([event("b"), event("c")])
    assert (result["new"], result["duplicate"], result["first_offset"]) == (1, 1, 2)
    store = open_store()
    result = store.append([event("a"), event("c"), event("d")])
    assert (result["new"], result["duplicate"]) == (1, 2)
    assert [e["event_id"] for e in store.read(0)["events"]] == ["a", "b", "c", "d"]
    assert store.stats()["events"]["duplicate_since_start"] == 2


def test_rejections_name_the_field_and_are_counted(open_store):
    store = open_store()
    batch = [event("ok"), {"event_id": "x"}, event("p", position=1.5), event("t", ts=NOW + 2 * 86_400),
             "not a dict", event("", type="click")]
    result = store.append(batch)
    assert (result["new"], result["rejected"]) == (1, 5)
    assert [(r["index"], r["field"]) for r in result["rejections"]] == [
        (1, "type"), (2, "position"), (3, "ts"), (4, "event"), (5, "event_id")]
    assert result["rejections"][1]["reason"] == "position: not an integer"
    many = store.append([{"type": "bogus"}] * (MAX_REJECTIONS + 10))
    assert many["rejected"] == MAX_REJECTIONS + 10 and len(many["rejections"]) == MAX_REJECTIONS
    assert store.stats()["events"]["rejected_since_start"] == 5 + MAX_REJECTIONS + 10
    with pytest.raises(ValueError, match="list"):
        store.append({"event_id": "a"})


def test_the_served_score_is_kept_when_sent_and_refused_when_not_a_finite_number(open_store):
    store = open_store()
    result = store.append([event("s", type="impression", score=1.25), event("n", type="impression"),
                           event("bad", score=float("nan")), event("big", score=1e9), event("str", score="1")])
    assert (result["new"], result["rejected"]) == (2, 3)
    assert {r["field"] for r in result["rejections"]} == {"score"}
    stored = store.read(0)["events"]
    assert stored[0]["score"] == 1.25 and "score" not in stored[1]


def test_flags_from_the_screen_are_stored_and_counted_from_the_log(open_store):
    screen = FakeScreen()
    store = open_store(screen=screen)
    result = store.append([event("a"), event("b", product_id="bot", type="purchase"), event("b")])
    assert (result["new"], result["flagged"]) == (2, 1)
    assert [e["event_id"] for e in screen.seen] == ["a", "b"]  # duplicates are not screened
    assert store.read(1)["events"][0]["flags"] == ["bot_product", "purchase"]
    expected = {"new": 2, "flagged": 1, "flagged_by_reason": {"bot_product": 1, "purchase": 1}}
    assert {k: store.stats()["events"][k] for k in expected} == expected
    store = open_store()  # counters come back from the log, not from memory
    assert {k: store.stats()["events"][k] for k in expected} == expected


def test_a_screen_that_returns_garbage_fails_the_batch_and_writes_nothing(open_store):
    class Broken:
        def screen(self, ev):
            return "bot"

    store = open_store(screen=Broken())
    with pytest.raises(TypeError, match="Broken.screen"):
        store.append([event("a")])
    assert store.stats()["end_offset"] == 0
    assert store.append([]) == {"new": 0, "duplicate": 0, "rejected": 0, "flagged": 0, "rejections": [],
                                "first_offset": 0, "end_offset": 0}


def test_reopen_warms_the_screen_with_the_last_records_in_order(open_store):
    store = open_store()
    store.append([event(f"e{i}", product_id=f"p{i}") for i in range(10)])
    screen = FakeScreen()
    store = open_store(screen=screen, warm_records=4)
    assert [e["event_id"] for e in screen.seen] == ["e6", "e7", "e8", "e9"]
    assert screen.seen[0] == {k: v for k, v in store.read(6)["events"][0].items()
                              if k not in ("ingested_at", "flags", "offset")}


def test_commit_offsets_and_lag(open_store):
    store = open_store()
    store.append([event(f"e{i}") for i in range(5)])
    assert store.committed("trainer") == 0
    store.commit("trainer", 3)
    with pytest.raises(ValueError, match="outside"):
        store.commit("trainer", 6)
    with pytest.raises(ValueError):
        store.read(6)
    with pytest.raises(ValueError, match="limit"):
        store.read(0, limit=10**6)
    store = open_store()
    assert store.committed("trainer") == 3
    stats = store.stats()
    assert stats["consumers"] == {"trainer": {"offset": 3, "lag": 2}}
    assert (stats["end_offset"], stats["segments"]) == (5, 1) and stats["bytes"] > 0


def test_a_torn_tail_is_reported_in_stats(open_store, tmp_path):
    store = open_store()
    store.append([event("a"), event("b")])
    store.close()
    segment = next((tmp_path / "wal").glob("segment-*.wal"))
    torn_size = segment.stat().st_size - 10
    segment.write_bytes(segment.read_bytes()[:torn_size])
    store = open_store()
    stats = store.stats()
    assert stats["recovery"] == {"truncated_records": 1, "truncated_bytes": torn_size - segment.stat().st_size}
    assert stats["end_offset"] == 1
    assert store.append([event("a"), event("b")])["new"] == 1  # the torn event was never acknowledged


# ---- a real crash: SIGKILL of a writer process mid-stream --------------------------------------------

WRITER = """
import json, sys
from core.feedback_store import FeedbackStore
log_dir, run = sys.argv[1], int(sys.argv[2])
store = FeedbackStore(log_dir, "salt", segment_bytes=4096)
batch = 0
while True:
    ids = [f"shared-{batch}-{j}" for j in range(5)] + [f"run{run}-{batch}-{j}" for j in range(15)]
    store.append([{"event_id": i, "ts": 1.7e9, "user_id": "u", "session_id": "s", "type": "click",
                   "product_id": "p"} for i in ids])
    print(json.dumps(ids), flush=True)
    batch += 1
"""


def run_writer_until_killed(log_dir: Path, run: int, rng: random.Random, work: Path) -> list[str]:
    """Start the writer, SIGKILL it at a random moment after its first ack; the ids it acknowledged."""
    out_path = work / f"run{run}.out"
    with open(out_path, "w") as out, open(work / f"run{run}.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(log_dir), str(run)], cwd=ROOT,
                                stdout=out, stderr=err)
        deadline = time.monotonic() + 30
        while out_path.stat().st_size == 0:
            assert proc.poll() is None, (work / f"run{run}.err").read_text()
            assert time.monotonic() < deadline, "writer never acknowledged a batch"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    acked = []
    for line in out_path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            acked.extend(json.loads(line))
    return acked


def test_every_acknowledged_event_survives_sigkill_exactly_once(tmp_path):
    rng = random.Random(7)
    log_dir, work = tmp_path / "log", tmp_path / "work"
    work.mkdir()
    acked: set[str] = set()
    for run in range(5):
        acked.update(run_writer_until_killed(log_dir, run, rng, work))
    store = FeedbackStore(log_dir, "salt")
    try:
        # Page through the whole log: five runs can write more than one read returns (a fixed
        # read(0, 10_000) once cut off the last run's tail and failed this test on a fast machine).
        counts, offset = Counter(), 0
        while True:
            page = store.read(offset, 1000)
            counts.update(e["event_id"] for e in page["events"])
            if not page["events"] or page["next_offset"] >= page["end_offset"]:
                break
            offset = page["next_offset"]
        stats = store.stats()
    finally:
        store.close()
    assert acked and len(acked) > 100
    assert set(counts) >= acked
    assert max(counts.values()) == 1
    assert stats["end_offset"] == len(counts) and stats["segments"] > 1
