"""Every `aisle_` metric, declared once, recorded through `ray.util.metrics`.

Ray exports them in Prometheus format on each node's metrics port (`ensure_ray` picks it: 8080,
or a free one) and the Ray dashboard charts them. Ray prefixes every custom metric with `ray_` and
counters get a `_total` suffix, so `aisle_requests` is scraped as `ray_aisle_requests_total`.
They reach the endpoint about 10 s after they are recorded.

Recording is process-local and cheap (the Ray metric object is made on first use); it never raises
into the caller: a metrics failure is logged once and that sample is lost, the request is not.
Outside a Ray worker (unit tests of core code, a plain script) recording does nothing.

Gauges are kept alive: Ray 2.60 exports a gauge series only while it is set again within two
export intervals (~20 s), so a value set once (the adapters a quiet replica holds) would vanish
from the scrape. Each process sets its gauges' last values again every GAUGE_REFRESH_S from one
daemon thread; a series goes away with the process that set it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

LATENCY_MS = [1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000, 10000]
BATCH_INPUTS = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256]
UPDATE_S = [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200]


@dataclass(frozen=True)
class Spec:
    kind: str  # counter | gauge | histogram
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


SPECS: dict[str, Spec] = {
    # serving: the ingress
    "aisle_requests": Spec("counter", "HTTP requests answered, by route template, task and status code",
                           ("route", "task", "code")),
    "aisle_request_errors": Spec("counter", "HTTP requests answered with a 4xx or 5xx status", ("route", "task", "code")),
    "aisle_request_latency_ms": Spec("histogram", "time from request to response at the ingress, in ms",
                                     ("route", "task"), tuple(LATENCY_MS)),
    "aisle_current_version": Spec("gauge", "number of the CURRENT adapter version (v7 -> 7) the ingress serves",
                                  ("task",)),
    # serving: the task-model replicas
    "aisle_batch_size": Spec("histogram", "inputs per forward pass (dynamic batching)", ("task",), tuple(BATCH_INPUTS)),
    "aisle_batch_adapters": Spec("histogram", "adapters whose rows share one forward pass (mixed-adapter batching)",
                                 (), (1, 2, 4, 8, 16, 32)),
    "aisle_adapter_loads": Spec("counter", "adapters loaded into a replica (first use or after eviction)", ("task",)),
    "aisle_adapter_evictions": Spec("counter", "adapters evicted from a replica (least recently used)", ("task",)),
    "aisle_adapters_loaded": Spec("gauge", "adapters resident in a task-model replica", ("replica",)),
    "aisle_adapter_resident": Spec("gauge", "1 while the adapter is loaded in the replica, 0 after eviction",
                                   ("replica", "model_id")),
    # the stream
    "aisle_events": Spec("counter", "events offered to the feedback log, by outcome "
                                    "(accepted, duplicate, rejected; flagged is a subset of accepted)", ("outcome",)),
    "aisle_feedback_log_depth": Spec("gauge", "events stored in the feedback log (its end offset)"),
    "aisle_consumer_lag": Spec("gauge", "events in the log past a consumer's committed offset", ("consumer",)),
    "aisle_updates": Spec("counter", "incremental updates, by decision (started, promoted, rejected, failed, "
                                     "interrupted)", ("task", "decision")),
    "aisle_update_duration_s": Spec("histogram", "wall time of an incremental update, training and gate",
                                    ("task", "decision"), tuple(UPDATE_S)),
}

EXPORTED_PREFIX = "ray_"


def exported_name(name: str) -> str:
    """How Prometheus sees a metric: `aisle_requests` -> `ray_aisle_requests_total`."""
    return EXPORTED_PREFIX + name + ("_total" if SPECS[name].kind == "counter" else "")


GAUGE_REFRESH_S = 5.0

_objects: dict[str, object] = {}
_lock = threading.Lock()
_warned: set[str] = set()
_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
"""(name, tags) -> the last value set in this process, set again every GAUGE_REFRESH_S."""
_refresher: threading.Thread | None = None


def _metric(name: str):
    obj = _objects.get(name)
    if obj is not None:
        return obj
    import ray
    from ray.util import metrics

    if not ray.is_initialized():
        return None
    spec = SPECS[name]
    with _lock:
        if name not in _objects:
            if spec.kind == "counter":
                _objects[name] = metrics.Counter(name, description=spec.description, tag_keys=spec.tags)
            elif spec.kind == "gauge":
                _objects[name] = metrics.Gauge(name, description=spec.description, tag_keys=spec.tags)
            else:
                _objects[name] = metrics.Histogram(name, description=spec.description,
                                                   boundaries=list(spec.boundaries), tag_keys=spec.tags)
    return _objects[name]


def _record(name: str, method: str, value: float, tags: dict) -> bool:
    """True if Ray took the sample (False outside Ray, or when recording failed)."""
    try:
        obj = _metric(name)
        if obj is not None:
            getattr(obj, method)(value, tags={k: str(v) for k, v in tags.items()} or None)
            return True
    except Exception:  # noqa: BLE001 - metrics must never fail the work they measure
        if name not in _warned:
            _warned.add(name)
            log.exception("recording metric %s failed; later failures of it are not logged", name)
    return False


def _refresh_gauges() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        with _lock:
            last = list(_gauges.items())
        for (name, tags), value in last:
            _record(name, "set", value, dict(tags))


def inc(name: str, value: float = 1.0, **tags) -> None:
    if value:
        _record(name, "inc", value, tags)


def set_gauge(name: str, value: float, **tags) -> None:
    global _refresher
    if not _record(name, "set", value, tags):
        return
    with _lock:
        _gauges[(name, tuple(sorted((k, str(v)) for k, v in tags.items())))] = value
        if _refresher is None:
            _refresher = threading.Thread(target=_refresh_gauges, name="aisle-gauge-refresh", daemon=True)
            _refresher.start()


def observe(name: str, value: float, **tags) -> None:
    _record(name, "observe", value, tags)


def version_number(version: str | None) -> int:
    """'v7' -> 7; no version -> 0 (the gauge's "nothing live")."""
    return int(version[1:]) if version and version[1:].isdigit() else 0


RAY_LABELS = ("Component", "NodeAddress", "SessionName", "Version", "WorkerId", "otel_scope_name",
              "otel_scope_schema_url", "otel_scope_version")


def aisle_lines(text: str) -> list[str]:
    """The `aisle_` samples of a scrape, one line each without Ray's bookkeeping labels (node, worker,
    session); a histogram shows as its _count and _sum, not every bucket."""
    from ops.prom import parse

    out = []
    for sample in parse(text).samples:
        if not sample.name.startswith(EXPORTED_PREFIX + "aisle_") or sample.name.endswith("_bucket"):
            continue
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k not in RAY_LABELS)
        out.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    return sorted(out)
