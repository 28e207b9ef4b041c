"""Redis Streams -> FeedbackLog: the stream source for a shop that already runs a Redis broker.

Producers add one event per stream entry, as a JSON object (the raw event of `core.events`) in the
entry's field `event`:

    XADD aisle:events * event '{"event_id": "5f0c...", "ts": 1718000000, "user_id": "u1", ...}'

Consumers read through a consumer group, so several of them split one stream, and the entries of a
consumer that died are taken over by the others.

Delivery is at least once, storage exactly once: an entry is acknowledged (XACK) only after the
sink has returned, and the sink (FeedbackLog.append) fsyncs before it returns. A consumer killed
between append and ack leaves its entries pending; they are delivered again, to the same consumer
when it restarts under the same name (it reads its own pending entries first), or to another one
that claims entries idle for longer than `claim_idle_ms` (XAUTOCLAIM), and the log's event_id dedupe
counts them as duplicates. `claim_idle_ms` must exceed the slowest append, or a live consumer's
entries are claimed too (harmless: duplicates, not losses).

Nothing is dropped silently: an entry that is not JSON reaches the sink as
{"undecodable": <first 200 characters>}, which the log rejects and counts; an entry deleted or
trimmed from the stream before it was acknowledged is counted as `trimmed` and logged. A broker
that lost the group (restarted without persistence) gets it back, reading from the stream's start:
what the log already holds comes back as duplicates.

Three ways to run it:
- `RedisStreamConsumer`: plain Python, any sink `list[dict] -> {"new", "duplicate", "rejected", ...}`;
- `RedisSource`: a Ray actor whose sink is the FeedbackLog actor;
- `python -m actors.redis_source --url redis://127.0.0.1:6379/0 --log-dir DIR --salt S`: one process
  appending to a local FeedbackStore, no Ray cluster needed; SIGTERM or Ctrl-C stops it and it
  prints its counts as one JSON line.
Needs Redis >= 6.2 (XAUTOCLAIM); `scripts/install_system_packages.sh` installs one.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any, Callable, NoReturn

import ray
import redis

from actors.feedback_log import get_feedback_log
from core.errors import AisleError
from core.feedback_store import FeedbackStore

log = logging.getLogger(__name__)

EVENT_FIELD = "event"
UNDECODABLE_PREVIEW_CHARS = 200
SINK_COUNTS = ("new", "duplicate", "rejected")
COUNTS = ("read", "claimed", *SINK_COUNTS, "acked", "trimmed")
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0

Sink = Callable[[list[Any]], dict]
Entry = tuple[Any, dict]  # (entry id, fields) as redis-py returns them


def decode_entry(fields: dict) -> Any:
    """The event an entry carries, or {"undecodable": <text>} for the sink to reject and count."""
    raw = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
    if raw is None:
        names = sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in fields)
        return {"undecodable": f"no '{EVENT_FIELD}' field, only {names}"[:UNDECODABLE_PREVIEW_CHARS]}
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        return {"undecodable": text[:UNDECODABLE_PREVIEW_CHARS]}


def connect(url: str, block_ms: int) -> redis.Redis:
    """A client whose read timeout outlasts a blocking read of `block_ms`; ValueError on a bad url."""
    return redis.Redis.from_url(url, socket_timeout=block_ms / 1000 + 5, socket_connect_timeout=5)


class RedisStreamConsumer:
    """One consumer of a consumer group feeding `sink`; see the module docstring for the guarantees."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str, sink: Sink,
                 batch: int = 256, block_ms: int = 500, claim_idle_ms: int = 10_000) -> None:
        if batch < 1 or block_ms < 1 or claim_idle_ms < 0:
            raise ValueError("batch and block_ms must be >= 1, claim_idle_ms >= 0")
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.sink, self.batch, self.block_ms, self.claim_idle_ms = sink, batch, block_ms, claim_idle_ms
        self._own_pending_first = True  # after a (re)start or a failed step: our unacked entries first
        self._claim_cursor: Any = "0-0"
        self._counts = dict.fromkeys(COUNTS, 0)
        self._errors = 0
        self._last_error: str | None = None

    def ensure_group(self) -> None:
        """Create the group (and the stream) reading from the stream's start, unless it exists."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def step(self) -> dict:
        """Process at most one batch: own pending entries, else claimed ones, else new ones."""
        counts = dict.fromkeys(COUNTS, 0)
        try:
            entries = self._next_entries(counts)
            if entries:
                self._deliver(entries, counts)
        except BaseException:
            self._own_pending_first = True  # unacked entries stay in our pending list: retry them
            raise
        finally:
            for key, value in counts.items():
                self._counts[key] += value
        return counts

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; on any error log it, back off (0.1 s doubling to 5 s) and retry."""
        backoff = 0.0
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    self.ensure_group()  # again after errors: a restarted server may have lost it
                    group_ready = True
                self.step()
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - a source must outlive any broker or sink outage
                backoff = min(max(2 * backoff, FIRST_BACKOFF_S), MAX_BACKOFF_S)
                self._record_error(exc, backoff)
                group_ready = False
                stop.wait(backoff)

    def stats(self) -> dict:
        """Counts since construction, plus errors and the last one."""
        return {**self._counts, "errors": self._errors, "last_error": self._last_error}

    def _next_entries(self, counts: dict) -> list[Entry]:
        if self._own_pending_first:
            entries = self._read("0", block_ms=None)
            if entries:
                return entries
            self._own_pending_first = False
        entries = self._claim(counts)
        return entries or self._read(">", block_ms=self.block_ms)

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start},
                                       count=self.batch, block=block_ms)
        return reply[0][1] if reply else []

    def _claim(self, counts: dict) -> list[Entry]:
        reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                       start_id=self._claim_cursor, count=self.batch)
        self._claim_cursor, entries = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []  # Redis >= 7 drops deleted entries itself
        if deleted:
            counts["trimmed"] += len(deleted)
            log.warning("%d pending entries of %s were deleted before delivery", len(deleted), self.stream)
        counts["claimed"] += len(entries)
        return entries

    def _deliver(self, entries: list[Entry], counts: dict) -> None:
        events = [decode_entry(fields) for _, fields in entries if fields]
        trimmed = len(entries) - len(events)  # a pending entry deleted from the stream has no fields
        if trimmed:
            counts["trimmed"] += trimmed
            log.warning("%d pending entries of %s were deleted before delivery", trimmed, self.stream)
        if events:
            counts["read"] += len(events)
            result = self.sink(events)
            for key in SINK_COUNTS:
                counts[key] += int(result.get(key, 0))
        counts["acked"] += self.client.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))

    def _record_error(self, exc: Exception, backoff: float) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        unexpected = not isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
        log.warning("redis source %s/%s: %s; retrying in %.1f s", self.stream, self.consumer,
                    self._last_error, backoff, exc_info=unexpected)


@ray.remote(num_cpus=0, max_restarts=-1)
class RedisSource:
    """Feeds the FeedbackLog actor from a Redis stream, in a thread started on construction.

    A restarted actor keeps its consumer name, so it first re-delivers its own unacked entries."""

    def __init__(self, url: str, stream: str, group: str, consumer: str, batch: int = 256,
                 block_ms: int = 500, claim_idle_ms: int = 10_000) -> None:
        self._log: Any = None
        self._consumer = RedisStreamConsumer(connect(url, block_ms), stream, group, consumer, self._append,
                                             batch=batch, block_ms=block_ms, claim_idle_ms=claim_idle_ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consumer.run, args=(self._stop,),
                                        name=f"redis-source-{consumer}", daemon=True)
        self._thread.start()

    def stats(self) -> dict:
        return {**self._consumer.stats(), "running": self._thread.is_alive()}

    def stop(self, timeout_s: float = 10.0) -> dict:
        """Finish the batch in hand, stop reading, and return the final counts."""
        self._stop.set()
        self._thread.join(timeout_s)
        return self.stats()

    def _append(self, events: list[Any]) -> dict:
        if self._log is None:
            self._log = get_feedback_log()
        try:
            return ray.get(self._log.append.remote(events))
        except Exception:
            self._log = None  # look the log up again: it may have been replaced
            raise


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return int(text)
    return parse


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m actors.redis_source",
                            description="Append the events of a Redis stream to a local FeedbackStore.")
    parser.add_argument("--url", type=_non_empty, default="redis://127.0.0.1:6379/0", help="Redis url")
    parser.add_argument("--stream", type=_non_empty, default="aisle:events", help="stream key")
    parser.add_argument("--group", type=_non_empty, default="aisle", help="consumer group")
    parser.add_argument("--consumer", type=_non_empty, required=True,
                        help="consumer name; restart under the same name to resume its pending entries")
    parser.add_argument("--log-dir", type=_non_empty, required=True, help="FeedbackStore directory")
    parser.add_argument("--salt", type=_non_empty, required=True, help="salt for user and session hashes")
    parser.add_argument("--batch", type=_at_least(1), default=256, help="entries per read")
    parser.add_argument("--block-ms", type=_at_least(1), default=500, help="longest wait for new entries")
    parser.add_argument("--claim-idle-ms", type=_at_least(0), default=10_000,
                        help="claim other consumers' entries pending longer than this")
    args = parser.parse_args(argv)
    try:
        connect(args.url, args.block_ms)
    except ValueError as exc:
        parser.error(f"--url: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        store = FeedbackStore(args.log_dir, args.salt)
    except (OSError, AisleError) as exc:
        print(f"cannot open the feedback log at {args.log_dir}: {exc}", file=sys.stderr)
        return 1
    consumer = RedisStreamConsumer(connect(args.url, args.block_ms), args.stream, args.group, args.consumer,
                                   store.append, batch=args.batch, block_ms=args.block_ms,
                                   claim_idle_ms=args.claim_idle_ms)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        consumer.run(stop)
    finally:
        store.close()
    print(json.dumps(consumer.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
