"""The FeedbackLog actor on a local Ray: its API through handles, a corrupt log stopping it (instead of a
restart loop), and exactly-once delivery while the actor is killed again and again mid-stream."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections import Counter

import pytest
import ray

from actors.feedback_log import (FEEDBACK_LOG_NAME, NAMESPACE, get_feedback_log,
                                 get_or_create_feedback_log)
from core.errors import AisleError
from core.wal import WriteAheadLog

pytestmark = [pytest.mark.integration]

SALT = "integration-salt"
NOW = time.time()
CALL_TIMEOUT_S = 60


def event(event_id: str, **overrides) -> dict:
    raw = {"event_id": event_id, "ts": NOW - 60, "user_id": "u1", "session_id": "s1", "type": "click",
           "product_id": "p1"}
    raw.update(overrides)
    return raw


def call(method, *args):
    return ray.get(method.remote(*args), timeout=CALL_TIMEOUT_S)


def remove(handle) -> None:
    """Kill the actor for good and wait until its name is free for the next test."""
    ray.kill(handle, no_restart=True)
    wait_until_name_is_free()


def wait_until_name_is_free() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(FEEDBACK_LOG_NAME, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{FEEDBACK_LOG_NAME} still registered after 30 s")


def restarted(handle, old_pid: int) -> int:
    """Wait until the actor answers from a new process (ray.kill returns before the old one is gone)."""
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = call(handle.ping)
        if pid != old_pid:
            return pid
        time.sleep(0.02)
    raise AssertionError("the FeedbackLog actor did not restart")


@pytest.mark.timeout(120)
def test_actor_api_through_named_handles(ray_session, tmp_path):
    with pytest.raises(AisleError, match="get_or_create_feedback_log"):
        get_feedback_log()

    class ProductScreen:  # defined here so Ray pickles it by value
        def screen(self, ev):
            return ["bot_product"] if ev["product_id"] == "bot" else []

    handle = get_or_create_feedback_log(tmp_path / "log", SALT, segment_bytes=4096, screen_factory=ProductScreen)
    try:
        result = call(handle.append, [event("a"), event("b", product_id="bot"), event("a"), {"type": "click"}])
        assert {k: result[k] for k in ("new", "duplicate", "rejected", "flagged")} == {
            "new": 2, "duplicate": 1, "rejected": 1, "flagged": 1}
        assert result["rejections"][0]["field"] == "event_id"
        page = call(get_feedback_log().read, 0, 10)
        assert [(e["event_id"], e["offset"], e["flags"]) for e in page["events"]] == [
            ("a", 0, []), ("b", 1, ["bot_product"])]
        call(handle.commit, "trainer", 1)
        assert call(handle.committed, "trainer") == 1
        same = get_or_create_feedback_log(tmp_path / "log", SALT)
        assert call(same.ping) == call(handle.ping)
        with pytest.raises(AisleError, match="logs to"):
            get_or_create_feedback_log(tmp_path / "elsewhere", SALT)
        stats = call(handle.stats)
        assert stats["consumers"] == {"trainer": {"offset": 1, "lag": 1}}
        assert stats["events"]["flagged_by_reason"] == {"bot_product": 1}
        with pytest.raises(ValueError, match="list"):
            call(handle.append, {"event_id": "x"})  # an application error is raised, not retried
    finally:
        remove(handle)


@pytest.mark.timeout(60)
def test_a_corrupt_log_stops_the_actor_with_the_reason_instead_of_restarting_forever(ray_session, tmp_path):
    with WriteAheadLog(tmp_path / "log" / "wal") as log:
        log.append([{"event_id": str(i), "flags": []} for i in range(5)])
    segment = next((tmp_path / "log" / "wal").glob("segment-*.wal"))
    data = bytearray(segment.read_bytes())
    data[12] ^= 0x01  # inside the first record, with valid records after it
    segment.write_bytes(bytes(data))
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        get_or_create_feedback_log(tmp_path / "log", SALT)
    message = str(info.value)
    del info
    gc.collect()  # the error's reference cycles hold the dead actor's handle, and so its name
    wait_until_name_is_free()
    assert "a crash cannot cause this" in message and segment.name in message
    assert segment.read_bytes() == bytes(data)


def send_plan(batches: int, resend_every: int) -> list[int]:
    """Batch indices in sending order: every batch once, and every `resend_every`-th an earlier one again."""
    plan = []
    for b in range(batches):
        plan.append(b)
        if b % resend_every == resend_every - 1:
            plan.append(b - 3)
    return plan


@pytest.mark.timeout(180)
def test_every_acknowledged_event_survives_repeated_kills_exactly_once(ray_session, tmp_path):
    kills, batch_size = 10, 20
    batches = [[event(f"b{b}-e{j}", product_id=f"p{j}") for j in range(batch_size)] for b in range(100)]
    plan = send_plan(len(batches), resend_every=5)
    handle = get_or_create_feedback_log(tmp_path / "log", SALT, segment_bytes=16_384)
    results: list[dict] = []
    acked: list[str] = []
    pids = [call(handle.ping)]
    errors: list[BaseException] = []

    marks = [(k + 1) * len(plan) // (kills + 2) for k in range(kills)] + [len(plan)]
    allowed = [marks[1]]  # the client runs at most to the mark after the next kill's: it cannot end first

    def client() -> None:
        try:
            for b in plan:
                while len(results) >= allowed[0]:
                    time.sleep(0.001)
                results.append(call(handle.append, batches[b]))  # the ack
                acked.extend(e["event_id"] for e in batches[b])
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=client)
    thread.start()
    rng = random.Random(3)
    try:
        for k in range(kills):  # a kill every ~10 acks, at a random moment within a call or between two
            while len(results) < marks[k] and thread.is_alive():
                time.sleep(0.002)
            assert thread.is_alive(), "the stream ended before every kill was made"
            time.sleep(rng.uniform(0, 0.02))
            ray.kill(handle, no_restart=False)
            pids.append(restarted(handle, pids[-1]))
            allowed[0] = marks[min(k + 2, kills)]
        thread.join(CALL_TIMEOUT_S * 2)
        assert not thread.is_alive() and not errors, errors
        elapsed = time.monotonic() - started

        logged: Counter[str] = Counter()
        offset = 0
        while True:
            page = call(handle.read, offset, 1000)
            logged.update(e["event_id"] for e in page["events"])
            offset = page["next_offset"]
            if offset == page["end_offset"]:
                break
        stats = call(handle.stats)
    finally:
        allowed[0] = len(plan)  # never leave the client waiting
        remove(handle)

    distinct = set(acked)
    resent_events = (len(plan) - len(batches)) * batch_size
    new, duplicate = sum(r["new"] for r in results), sum(r["duplicate"] for r in results)
    print(f"{len(plan)} appends, {kills} kills in {elapsed:.1f} s; {duplicate - resent_events} events "
          f"acknowledged as duplicates because Ray retried a call that had already written them")
    assert len(set(pids)) == kills + 1
    assert len(results) == len(plan) and len(acked) == len(plan) * batch_size
    assert len(distinct) == len(batches) * batch_size
    assert set(logged) == distinct and max(logged.values()) == 1  # every acknowledged event exactly once
    assert stats["end_offset"] == len(distinct)  # log depth
    assert new + duplicate == len(acked) and sum(r["rejected"] for r in results) == 0
    assert duplicate >= resent_events  # the resends were reported as duplicates
    assert new == len(distinct) - (duplicate - resent_events)
