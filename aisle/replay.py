"""`aisle replay <events file> --rate R`: stream a Parquet/JSONL event file into a running Aisle.

It is an HTTP client of `POST /v1/events` (bearer ingest token from --token or AISLE_INGEST_TOKEN),
so it feeds any running server, embedded or on a cluster. Each record is validated locally first
(`core.events.normalize_event`, the log's own rules): an unusable record is counted with its reason
and line, never sent and never silently dropped. Batches are retried on connection errors and 503s;
the event_id makes a retried batch exactly-once in the log.

    aisle replay events.jsonl --rate 200 [--url http://127.0.0.1:8000] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

from core.errors import AisleError, InputError
from core.events import normalize_event, rejection_field

RETRIES = 5


def read_events(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"events file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return [{k: v for k, v in row.items() if not _missing(v)} for row in frame.to_dict("records")]
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise InputError(f"{path}: expected a .jsonl or .parquet file")
    events = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"_line": lineno, "_bad_json": True})
    return events


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(event: dict) -> dict:
    """JSON-ready: numpy scalars from Parquet become Python numbers."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in event.items()}


def replay(events: list[dict], url: str, token: str, rate: float, batch: int = 100) -> dict:
    import httpx

    report = {"read": len(events), "sent": 0, "new": 0, "duplicate": 0, "flagged": 0, "invalid": 0,
              "invalid_by_field": Counter()}
    valid = []
    now = time.time()
    for event in events:
        try:
            if event.get("_bad_json"):
                raise ValueError("event: not valid JSON")
            normalize_event(event, salt="", now=now)
            valid.append(_plain(event))
        except ValueError as e:
            report["invalid"] += 1
            report["invalid_by_field"][rejection_field(str(e))] += 1
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(0, len(valid), batch):
            chunk = valid[i:i + batch]
            if rate > 0:  # pace by the schedule, not by sleeps, so request time does not slow the rate
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            answer = _post(client, chunk)
            report["sent"] += len(chunk)
            for key in ("new", "duplicate", "flagged"):
                report[key] += answer[key]
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["invalid_by_field"] = dict(report["invalid_by_field"])
    return report


def _post(client, chunk: list[dict]) -> dict:
    import httpx

    for attempt in range(RETRIES):
        try:
            r = client.post("/v1/events", json={"events": chunk})
        except httpx.TransportError as e:
            error = f"cannot reach {client.base_url}: {e}"
        else:
            if r.status_code == 200:
                return r.json()
            error = f"POST /v1/events -> {r.status_code}: {r.text[:300]}"
            if r.status_code != 503:
                raise AisleError(error)
        time.sleep(0.5 * 2 ** attempt)
    raise AisleError(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aisle replay", description=__doc__.splitlines()[0])
    parser.add_argument("events", help="a .jsonl or .parquet file of raw events")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (0: as fast as possible)")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("AISLE_INGEST_TOKEN"), help="default: $AISLE_INGEST_TOKEN")
    parser.add_argument("--batch", type=int, default=100, help="events per request (at most 500)")
    args = parser.parse_args(argv)
    try:
        if not args.token:
            raise InputError("no ingest token: pass --token or set AISLE_INGEST_TOKEN")
        if args.rate < 0 or not 1 <= args.batch <= 500:
            raise InputError("--rate must be >= 0 and --batch within 1..500")
        report = replay(read_events(args.events), args.url, args.token, args.rate, args.batch)
    except AisleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
