"""What `aisle status` and `aisle report` look at: one typed config for both.

The paths come from a stream config (`--config`, default configs/stream.yaml), so the commands read
the stream that preset runs; dotted overrides then set any key below. `stream_dir=DIR` points both
at a stream laid out like the demo's (DIR/log, DIR/audit.jsonl, DIR/metrics.prom):

    aisle status                                      # the stream of configs/stream.yaml
    aisle report stream_dir=artifacts/demo_stream     # the demo's stream, its saved metrics
    aisle report log_dir=/data/log audit_log=/data/audit.jsonl metrics_url=http://10.0.0.5:8080/metrics
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from core.config import apply_overrides, doc, from_dict, load_config
from core.stream_config import StreamConfig
from core.workspace import path_field, resolve_paths, root_field

__all__ = ["OpsConfig", "load_ops_config"]


@dataclass
class OpsConfig:
    workspace: str | None = root_field()
    log_dir: str = path_field("stream_log", "the feedback log (write-ahead log and consumer offsets), read only")
    audit_log: str = path_field("stream_audit", "update decisions, one JSON line each")
    registry: str = path_field("registry", "adapter registry root")
    task: str = doc("relevance", "the task the stream's updates train (its audit log names no task)")
    stream_dir: str = doc("", "a stream laid out like the demo's: sets log_dir, audit_log and metrics_file "
                              "to DIR/log, DIR/audit.jsonl, DIR/metrics.prom unless they are given")
    server: str = doc("http://127.0.0.1:8000", "the running API (GET /v1/status); nothing there is fine")
    metrics_url: str = doc("http://127.0.0.1:8080/metrics", "Prometheus endpoint of the Ray node ('' skips it)")
    metrics_file: str = doc("", "a saved Prometheus text file, read instead of metrics_url")
    timeout_s: float = doc(2.0, "HTTP timeout for the server and the metrics endpoint")
    last_updates: int = doc(5, "aisle status: how many of the latest update decisions to list")
    out: str = path_field("report", "aisle report: where the HTML file goes")
    bucket_s: float = doc(0.0, "aisle report: time bucket of the CTR and conversion curves in seconds "
                               "(0: about 40 buckets over the log's span)")

    def __post_init__(self):
        resolve_paths(self)
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.last_updates < 0 or self.bucket_s < 0:
            raise ValueError("last_updates and bucket_s must be >= 0")


def load_ops_config(stream_config: str | Path | None, overrides: list[str]) -> OpsConfig:
    """Paths and server address from the stream config, then the overrides (OpsConfig keys)."""
    stream = load_config(StreamConfig, stream_config) if stream_config else StreamConfig()
    host = "127.0.0.1" if stream.serve.host in ("0.0.0.0", "") else stream.serve.host
    data: dict = {"workspace": stream.workspace, "log_dir": stream.log_dir, "audit_log": stream.audit_log, "registry": stream.registry,
                  "task": stream.task, "server": f"http://{host}:{stream.serve.port}"}
    apply_overrides(data, list(overrides))
    cfg = from_dict(OpsConfig, data)
    if not cfg.stream_dir:
        return cfg
    given = {item.split("=", 1)[0].strip() for item in overrides}
    root = Path(cfg.stream_dir)
    derived = {"log_dir": root / "log", "audit_log": root / "audit.jsonl", "metrics_file": root / "metrics.prom"}
    changes = {k: str(v) for k, v in derived.items() if k not in given}
    if "metrics_file" in changes and not Path(changes["metrics_file"]).is_file():
        del changes["metrics_file"]  # no saved metrics: the live endpoint, if any
    return dataclasses.replace(cfg, **changes)
