"""Where `aisle status` and `aisle report` get their numbers; every source is read, never written.

- the adapter registry (`core.registry`): per task CURRENT, its metrics, pointer history;
- the audit log (`core.audit`): one line per update decision with the gate's numbers;
- the feedback log (`core.wal` observer reads: no lock, no repair, so a running stream is fine):
  events, their screening flags, the log's depth and the consumers' committed offsets;
- a running server's `GET /v1/status` and a Prometheus endpoint or saved text file (`ops.prom`).
A source that is missing or unreachable becomes a note ("no server at ..."), not an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from core import audit, storage
from core.registry import AdapterRegistry, RegistryError
from core.tasks import all_tasks
from core.consumer_offsets import read_only_offsets
from core.wal import read_only_end_offset, read_only_records
from ops.config import OpsConfig
from ops.prom import Exposition, PromParseError, parse

__all__ = ["TaskSummary", "LogState", "tasks", "key_metric", "gate_pairs", "decisions", "log_state",
           "read_events", "rate_series", "auto_bucket_s", "flag_counts", "server_status", "metrics", "to_epoch"]

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")


@dataclass
class TaskSummary:
    task: str
    current: str | None
    versions: int
    metric: tuple[str, float] | None  # the task's primary metric of CURRENT, e.g. ("val_ndcg@10", 0.87)
    created_at: str
    history: list[dict] = field(default_factory=list)  # pointer moves, oldest first


@dataclass
class LogState:
    exists: bool
    end_offset: int
    consumers: dict[str, dict[str, int]]  # name -> {"offset", "lag"}
    source: str  # "files" or the server's URL


def to_epoch(ts) -> float | None:
    """Unix seconds from a number or an ISO-8601 string (registry history); None if neither."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts)
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- registry and audit


def key_metric(task: str, metrics: dict) -> tuple[str, float] | None:
    """The task's primary metric (core.tasks) as measured on validation, else the gate's original-set score."""
    tasks = all_tasks()
    primary = tasks[task].primary_metric if task in tasks else None
    for name in ([f"val_{primary}", primary] if primary else []) + ["gate_original_ndcg_candidate"]:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, float(value)
    return None


def tasks(registry_root: str) -> list[TaskSummary]:
    """One summary per registered task; [] when the registry directory does not exist."""
    if not storage.is_remote(registry_root) and not Path(registry_root).is_dir():
        return []
    registry = AdapterRegistry(registry_root)
    out = []
    for task in registry.tasks():
        versions = registry.versions(task)
        current = registry.current(task)
        info = next((v for v in versions if v.version == current), None)
        try:
            history = registry.history(task)
        except RegistryError:
            history = []
        out.append(TaskSummary(task, current, len(versions), key_metric(task, info.metrics) if info else None,
                               info.created_at if info else "", history))
    return out


def gate_pairs(metrics: dict) -> list[tuple[str, float, float]]:
    """(gate set, CURRENT's score, the candidate's score) for each `<set>_current`/`<set>_candidate` pair."""
    out = []
    for key, before in sorted(metrics.items()):
        if key.endswith("_current"):
            stem = key[: -len("_current")]
            after = metrics.get(stem + "_candidate")
            if isinstance(before, (int, float)) and isinstance(after, (int, float)):
                out.append((stem, float(before), float(after)))
    return out


def decisions(audit_log: str) -> list[dict]:
    return audit.read(audit_log)


# --------------------------------------------------------------------------- the feedback log


def log_state(log_dir: str, live: dict | None = None) -> LogState:
    """Depth and consumer lag: from a live server's /v1/status when it has them, else from the files."""
    stream = (live or {}).get("stream")
    if isinstance(stream, dict) and "log_end_offset" in stream:
        end = int(stream["log_end_offset"])
        committed = (stream.get("consumers") or {}).items()
        consumers = {name: {"offset": int(o), "lag": end - int(o)} for name, o in committed}
        return LogState(True, end, consumers, "server")
    wal, offsets = Path(log_dir) / "wal", Path(log_dir) / "offsets"
    end = read_only_end_offset(wal)
    consumers = {name: {"offset": o, "lag": end - o} for name, o in read_only_offsets(offsets).items()}
    return LogState(wal.is_dir(), end, consumers, "files")


def read_events(log_dir: str) -> pd.DataFrame:
    """One row per logged event: t (when the log received it, unix s), type, session, flagged, flags."""
    rows = []
    for _, record in read_only_records(Path(log_dir) / "wal"):
        flags = record.get("flags") or []
        t = record.get("ingested_at", record.get("ts"))
        rows.append((float(t), record.get("type"), record.get("session"), bool(flags), ",".join(flags)))
    return pd.DataFrame(rows, columns=["t", "type", "session", "flagged", "flags"])


_NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def auto_bucket_s(span_s: float, target: int = 40) -> float:
    """A round bucket width giving about `target` buckets over `span_s` seconds."""
    want = max(span_s, 1.0) / target
    return float(next((b for b in _NICE_BUCKETS_S if b >= want), _NICE_BUCKETS_S[-1]))


MIN_IMPRESSIONS = 30
"""A bucket with fewer clean impressions shows no CTR (a handful of sessions is noise, not a rate)."""
MIN_SESSIONS = 5
"""A bucket with fewer search sessions shows no conversion."""


def rate_series(events: pd.DataFrame, bucket_s: float) -> pd.DataFrame:
    """Per time bucket: events received (clean, flagged), and CTR and conversion of the sessions started.

    CTR = clicks / impressions; conversion = sessions with a purchase / sessions with an impression
    (search sessions). Both count screened-clean events only, attributed to the bucket their session
    started in, so a purchase minutes after its click counts with it. Below MIN_IMPRESSIONS /
    MIN_SESSIONS a bucket has no rate (NaN), not 0. `clean` and `flagged` count events by the time
    the log received them.
    """
    columns = ["clean", "flagged", *EVENT_TYPES, "sessions", "buying_sessions", "ctr", "conversion"]
    if events.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="start", dtype=float))
    received = (events["t"] // bucket_s) * bucket_s
    first = received.min()
    full = pd.Index(first + bucket_s * pd.RangeIndex(0, int(round((received.max() - first) / bucket_s)) + 1),
                    name="start")
    series = pd.DataFrame(index=full)
    flagged = events["flagged"]
    series["clean"] = received[~flagged].value_counts().reindex(full, fill_value=0)
    series["flagged"] = received[flagged].value_counts().reindex(full, fill_value=0)
    clean = events[~flagged]
    started = (clean.groupby("session")["t"].transform("min") // bucket_s) * bucket_s
    counts = clean.groupby([started, clean["type"]]).size().unstack(fill_value=0)
    for kind in EVENT_TYPES:
        series[kind] = counts[kind].reindex(full, fill_value=0) if kind in counts else 0
    for column, kind in (("sessions", "impression"), ("buying_sessions", "purchase")):
        mask = clean["type"] == kind
        series[column] = clean[mask].groupby(started[mask])["session"].nunique().reindex(full, fill_value=0)
    impressions, sessions = series["impression"].astype(float), series["sessions"].astype(float)
    series["ctr"] = series["click"] / impressions.where(impressions >= MIN_IMPRESSIONS)
    series["conversion"] = series["buying_sessions"] / sessions.where(sessions >= MIN_SESSIONS)
    return series


# --------------------------------------------------------------------------- live sources


def _get(url: str, timeout_s: float):
    import httpx

    return httpx.get(url, timeout=timeout_s, follow_redirects=False)


def server_status(cfg: OpsConfig) -> tuple[dict | None, str]:
    """(GET /v1/status answer, note); (None, "no server at <url>") when nothing answers."""
    url = cfg.server.rstrip("/") + "/v1/status"
    try:
        r = _get(url, cfg.timeout_s)
    except Exception:  # noqa: BLE001 - refused, timed out, bad URL: all mean "no server"
        return None, f"no server at {cfg.server}"
    if r.status_code != 200:
        return None, f"{url} answered {r.status_code}"
    try:
        return r.json(), f"server at {cfg.server}"
    except ValueError:
        return None, f"{url} answered something that is not JSON"


def metrics(cfg: OpsConfig) -> tuple[Exposition | None, str]:
    """(parsed Prometheus samples, where they came from) from metrics_file, else metrics_url."""
    if cfg.metrics_file:
        path = Path(cfg.metrics_file)
        try:
            return parse(path.read_text(encoding="utf-8")), f"saved metrics {path}"
        except FileNotFoundError:
            return None, f"no metrics file {path}"
        except PromParseError as e:
            return None, f"metrics file {path} is not Prometheus text: {e}"
    if not cfg.metrics_url:
        return None, "no metrics source configured"
    try:
        r = _get(cfg.metrics_url, cfg.timeout_s)
        r.raise_for_status()
    except Exception:  # noqa: BLE001 - nothing scrapeable there
        return None, f"no metrics at {cfg.metrics_url}"
    try:
        return parse(r.text), f"metrics from {cfg.metrics_url}"
    except PromParseError as e:
        return None, f"{cfg.metrics_url} is not Prometheus text: {e}"


def flag_counts(events: pd.DataFrame) -> Counter:
    """Flagged events by screening reason (an event with two reasons counts under both)."""
    out: Counter = Counter()
    for flags in events.loc[events["flagged"], "flags"] if not events.empty else []:
        out.update(f for f in flags.split(",") if f)
    return out
