"""The Redis Streams source against a real redis-server on a free loopback port and a real FeedbackStore.

What must hold: every entry ends up in the log exactly once and acknowledged, bad entries are rejected
and counted (never silently dropped), and an entry is acknowledged only after the log made it durable,
so a consumer killed between append and ack loses nothing: its entries are delivered again (to itself
after a restart, or claimed by another consumer) and deduplicated.

The crash test runs the real CLI in subprocesses. To land a SIGKILL deterministically between append
and ack, some rounds run it through `HANG_AFTER_APPEND`, which wraps FeedbackStore.append so that it
touches a marker file after the append returned (events fsynced) and then sleeps; the test kills the
process as soon as the marker appears.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
from parts import INSTALL_SYSTEM_PACKAGES, require

from actors.redis_source import RedisStreamConsumer, connect, parse_args
from core.feedback_store import FeedbackStore
from ops.runtime import free_port

REPO = Path(__file__).resolve().parents[2]
SALT = "test-salt"
GROUP = "aisle"
CLI = [sys.executable, "-m", "actors.redis_source"]
HANG_AFTER_APPEND = """
import os, sys, time
from pathlib import Path
from core.feedback_store import FeedbackStore
from actors import redis_source
append = FeedbackStore.append
def append_then_hang(self, events):
    result = append(self, events)
    Path(os.environ["AISLE_TEST_MARKER"]).touch()
    time.sleep(120)
    return result
FeedbackStore.append = append_then_hang
sys.exit(redis_source.main(sys.argv[1:]))
"""


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def start_redis_server(workdir: Path, port: int) -> subprocess.Popen:
    """A throwaway redis-server on 127.0.0.1:`port` without persistence, answering when this returns."""
    binary = shutil.which("redis-server")
    require("redis-server (Redis >= 6.2)", binary is not None, f"{INSTALL_SYSTEM_PACKAGES} (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "server.log", "wb") as server_log:
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)],
                                  stdout=server_log, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")  # from_url: no built-in retries
    wait_until(lambda: server.poll() is not None or _pings(client), 10, "redis-server to answer")
    assert server.poll() is None, (workdir / "server.log").read_text()
    return server


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def stop_redis_server(server: subprocess.Popen) -> None:
    server.kill()
    server.wait(10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    server = start_redis_server(tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}/0"
    stop_redis_server(server)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def make_events(start: int, count: int) -> list[dict]:
    return [{"event_id": f"evt-{i}", "ts": 1_718_000_000 + i, "user_id": f"user-{i % 97}",
             "session_id": f"session-{i % 211}", "type": "impression", "product_id": f"p{i % 50}",
             "query": "red running shoes", "position": i % 10} for i in range(start, start + count)]


def xadd_events(client: redis.Redis, stream: str, events: list[dict]) -> None:
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(stream, {"event": json.dumps(event)})
    pipe.execute()


def drain(consumer: RedisStreamConsumer) -> None:
    """Step until a step finds nothing to read or claim."""
    while True:
        counts = consumer.step()
        if counts["read"] + counts["claimed"] + counts["trimmed"] == 0:
            return


def logged_ids(log_dir: Path) -> list[str]:
    """Every event_id in the log, in order (opens the store, so no other process may hold it)."""
    store = FeedbackStore(log_dir, SALT)
    try:
        ids, offset = [], 0
        while True:
            page = store.read(offset, 10_000)
            ids += [event["event_id"] for event in page["events"]]
            if page["next_offset"] >= page["end_offset"]:
                return ids
            offset = page["next_offset"]
    finally:
        store.close()


def pending(client: redis.Redis, stream: str) -> int:
    return client.xpending(stream, GROUP)["pending"]


@pytest.mark.timeout(30)
def test_events_are_appended_once_and_acked(client: redis.Redis, tmp_path: Path) -> None:
    stream, events = "t:basic", make_events(0, 3000)
    store = FeedbackStore(tmp_path / "log", SALT)
    consumer = RedisStreamConsumer(client, stream, GROUP, "c1", store.append, batch=256, block_ms=20)
    consumer.ensure_group()
    consumer.ensure_group()  # idempotent: BUSYGROUP is not an error
    xadd_events(client, stream, events)
    drain(consumer)
    xadd_events(client, stream, events[:100])  # a producer retrying: stored once, counted as duplicates
    drain(consumer)
    store.close()
    stats = consumer.stats()
    assert (stats["read"], stats["new"], stats["duplicate"], stats["acked"]) == (3100, 3000, 100, 3100)
    assert (stats["rejected"], stats["claimed"], stats["trimmed"], stats["errors"]) == (0, 0, 0, 0)
    assert pending(client, stream) == 0
    assert logged_ids(tmp_path / "log") == [event["event_id"] for event in events]


@pytest.mark.timeout(30)
def test_bad_entries_are_rejected_counted_and_acked(client: redis.Redis, tmp_path: Path) -> None:
    stream = "t:bad"
    good = make_events(0, 5)
    bad_fields = [{"event": "{not json"}, {"event": b"\xff\xfe"}, {"event": "[1, 2]"}, {"payload": "{}"},
                  {"event": json.dumps({**good[0], "event_id": "x-1", "type": "hover"})},
                  {"event": json.dumps({**good[0], "event_id": "x-2", "ts": None})}]
    xadd_events(client, stream, good)
    for fields in bad_fields:
        client.xadd(stream, fields)
    store = FeedbackStore(tmp_path / "log", SALT)
    results: list[dict] = []

    def append_and_keep_result(events: list) -> dict:
        results.append(store.append(events))
        return results[-1]

    consumer = RedisStreamConsumer(client, stream, GROUP, "c1", append_and_keep_result, block_ms=20)
    consumer.ensure_group()
    drain(consumer)
    store.close()
    stats = consumer.stats()
    assert (stats["read"], stats["new"], stats["rejected"], stats["acked"]) == (11, 5, 6, 11)
    assert pending(client, stream) == 0
    assert len(logged_ids(tmp_path / "log")) == 5
    fields = [r["field"] for result in results for r in result["rejections"]]
    assert fields == ["type", "type", "event", "type", "type", "ts"]  # undecodable entries miss "type"


@pytest.mark.timeout(30)
def test_a_failing_sink_leaves_entries_pending_until_a_retry_succeeds(client: redis.Redis, tmp_path: Path) -> None:
    stream = "t:retry"
    xadd_events(client, stream, make_events(0, 50))
    store = FeedbackStore(tmp_path / "log", SALT)
    failures = [RuntimeError("log unavailable")]

    def flaky_append(events: list) -> dict:
        if failures:
            raise failures.pop()
        return store.append(events)

    consumer = RedisStreamConsumer(client, stream, GROUP, "c1", flaky_append, batch=20, block_ms=20)
    consumer.ensure_group()
    with pytest.raises(RuntimeError):
        consumer.step()
    assert pending(client, stream) == 20  # read, not appended: nothing acked
    assert consumer.step()["acked"] == 20  # the same 20 again, from this consumer's pending list
    drain(consumer)
    store.close()
    assert (consumer.stats()["new"], consumer.stats()["acked"], pending(client, stream)) == (50, 50, 0)
    assert len(set(logged_ids(tmp_path / "log"))) == 50


@pytest.mark.timeout(30)
def test_the_loop_rides_out_a_broker_restart_that_lost_the_group(tmp_path: Path) -> None:
    port, stream, events = free_port(), "t:restart", make_events(0, 200)
    server = start_redis_server(tmp_path / "redis-1", port)
    client = connect(f"redis://127.0.0.1:{port}/0", block_ms=50)
    store = FeedbackStore(tmp_path / "log", SALT)
    consumer = RedisStreamConsumer(client, stream, GROUP, "c1", store.append, block_ms=50)
    stop = threading.Event()
    loop = threading.Thread(target=consumer.run, args=(stop,))
    loop.start()
    try:
        xadd_events(client, stream, events[:100])
        wait_until(lambda: consumer.stats()["acked"] == 100, 10, "the first 100 acked")
        stop_redis_server(server)
        wait_until(lambda: consumer.stats()["errors"] >= 2, 10, "the loop to notice the broker is gone")
        server = start_redis_server(tmp_path / "redis-2", port)  # empty: stream and group are gone
        xadd_events(client, stream, events[100:])
        wait_until(lambda: consumer.stats()["acked"] == 200, 15, "the loop to reconnect and ack 100 more")
    finally:
        stop.set()
        loop.join(5)
        stop_redis_server(server)
        store.close()
    stats = consumer.stats()
    assert not loop.is_alive()
    assert (stats["new"], stats["duplicate"], stats["rejected"]) == (200, 0, 0)
    assert "ConnectionError" in stats["last_error"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bad, message", [(["--batch", "0"], "--batch: '0' is not an integer >= 1"),
                                          (["--url", "http://127.0.0.1"], "--url: Redis URL must specify"),
                                          (["--salt", " "], "--salt: must not be empty")])
def test_the_cli_refuses_bad_arguments_in_one_line(bad: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--consumer", "c1", "--log-dir", "log", "--salt", SALT, *bad])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and message in error, error


@pytest.fixture
def cli(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts `python -m actors.redis_source` (or it under HANG_AFTER_APPEND) on tmp_path/log; kills leftovers."""
    procs: list[subprocess.Popen] = []

    def start(consumer: str, stream: str, *extra: str, hang_marker: Path | None = None) -> subprocess.Popen:
        argv = ["--url", redis_url, "--stream", stream, "--group", GROUP, "--consumer", consumer,
                "--log-dir", str(tmp_path / "log"), "--salt", SALT, "--batch", "100", "--block-ms", "50", *extra]
        env = {**os.environ, "AISLE_TEST_MARKER": str(hang_marker)}
        command = [sys.executable, "-c", HANG_AFTER_APPEND, *argv] if hang_marker else [*CLI, *argv]
        with open(tmp_path / f"{consumer}-{len(procs)}.stderr", "wb") as stderr:
            procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def pending_event_ids(client: redis.Redis, stream: str, consumer: str) -> list[str]:
    rows = client.xpending_range(stream, GROUP, min="-", max="+", count=10_000, consumername=consumer)
    entries = [client.xrange(stream, row["message_id"], row["message_id"])[0] for row in rows]
    return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]


def group_info(client: redis.Redis, stream: str) -> dict:
    return next(g for g in client.xinfo_groups(stream) if g["name"] == GROUP.encode())


def kill_after_append(cli: Callable[..., subprocess.Popen], client: redis.Redis, stream: str, consumer: str,
                      marker: Path) -> list[str]:
    """Run `consumer` until its first append has returned, SIGKILL it; the event_ids it left pending."""
    marker.unlink(missing_ok=True)
    proc = cli(consumer, stream, hang_marker=marker)
    wait_until(lambda: marker.exists() or proc.poll() is not None, 30, f"{consumer} to append a batch")
    proc.kill()
    proc.wait()
    assert marker.exists(), f"{consumer} exited with {proc.returncode} before appending"
    return pending_event_ids(client, stream, consumer)


@pytest.mark.timeout(60)
def test_consumer_killed_before_xack_events_are_redelivered_and_deduped(
        client: redis.Redis, cli: Callable[..., subprocess.Popen], tmp_path: Path) -> None:
    """Redis consumer killed before XACK -> events re-delivered and deduped."""
    stream, events, log_dir, marker = "t:crash", make_events(0, 4000), tmp_path / "log", tmp_path / "appended"
    xadd_events(client, stream, events[:1000])

    # 1. killed after an append returned and before its XACK: a whole batch is in the log and pending.
    abandoned = kill_after_append(cli, client, stream, "c1", marker)
    assert len(abandoned) == 100 and set(abandoned) <= set(logged_ids(log_dir))

    # 2. restarted under the same name, it re-delivers its pending batch first; killed while streaming.
    proc = cli("c1", stream)
    xadd_events(client, stream, events[1000:3000])
    wait_until(lambda: group_info(client, stream)["entries-read"] >= 1500, 30, "c1 to stream 1500 entries")
    proc.kill()
    proc.wait()
    assert not set(abandoned) & set(pending_event_ids(client, stream, "c1"))

    # 3. killed between append and ack once more, so c1 dies leaving entries for another consumer.
    abandoned = kill_after_append(cli, client, stream, "c1", marker)
    assert abandoned and set(abandoned) <= set(logged_ids(log_dir))

    # 4. a consumer under another name claims them once idle for 200 ms, and drains the rest.
    xadd_events(client, stream, events[3000:])
    proc = cli("c2", stream, "--claim-idle-ms", "200")
    wait_until(lambda: group_info(client, stream)["lag"] == 0 and pending(client, stream) == 0, 30,
               "c2 to drain the stream")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, next(tmp_path.glob("c2-*.stderr")).read_text()
    stats = json.loads(out.decode().splitlines()[-1])
    assert stats["claimed"] == stats["duplicate"] == len(abandoned) > 0  # re-delivered, stored before
    assert stats["errors"] == 0 and stats["rejected"] == 0

    times_logged = Counter(logged_ids(log_dir))
    assert set(times_logged) == {event["event_id"] for event in events}
    assert set(times_logged.values()) == {1}
    assert pending(client, stream) == 0


@pytest.mark.timeout(60)
def test_ray_source_feeds_the_feedback_log_actor_and_resumes_after_a_restart(
        ray_session, redis_url: str, client: redis.Redis, tmp_path: Path) -> None:
    from actors.feedback_log import get_or_create_feedback_log
    from actors.redis_source import RedisSource

    ray, stream, events = ray_session, "t:ray", make_events(0, 1500)
    feedback_log = get_or_create_feedback_log(str(tmp_path / "log"), SALT)
    source = RedisSource.remote(redis_url, stream, GROUP, "ray-c1", batch=100, block_ms=50)
    try:
        xadd_events(client, stream, events[:1000])
        wait_until(lambda: ray.get(source.stats.remote())["acked"] == 1000, 30, "the source to ack 1000")
        stats = ray.get(source.stats.remote())
        assert (stats["new"], stats["duplicate"], stats["errors"], stats["running"]) == (1000, 0, 0, True)

        ray.kill(source, no_restart=False)  # Ray restarts it under the same consumer name
        # ray.kill returns at once: events added before the old instance is gone could be read and logged
        # by it, then counted as duplicates by the new one (exactly once in the log, but not in these
        # counts; seen once as (499, 101)). Ray starts the new instance (its count back at 0) only after
        # the old one died.
        wait_until(lambda: _acked_after_restart(ray, source) == 0, 30, "the restarted source to answer")
        xadd_events(client, stream, events[1000:] + events[:100])
        wait_until(lambda: _acked_after_restart(ray, source) == 600, 30, "the restarted source to ack 600")
        stats = ray.get(source.stop.remote())
        assert (stats["new"], stats["duplicate"], stats["running"]) == (500, 100, False)
        assert ray.get(feedback_log.stats.remote())["end_offset"] == 1500
        assert pending(client, stream) == 0
    finally:
        ray.kill(source, no_restart=True)
        ray.kill(feedback_log, no_restart=True)


def _acked_after_restart(ray, source) -> int | None:
    try:
        return ray.get(source.stats.remote(), timeout=5)["acked"]
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None  # still restarting
