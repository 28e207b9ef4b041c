"""ops/metrics.py: every metric declared once and documented; recording outside Ray is a no-op that
never raises; the demo's compact lines drop Ray's bookkeeping labels and histogram buckets."""

from __future__ import annotations

from pathlib import Path

from ops import metrics

SCRAPE = """# HELP ray_aisle_requests_total HTTP requests answered
# TYPE ray_aisle_requests_total counter
ray_aisle_requests_total{Component="core_worker",NodeAddress="127.0.0.1",SessionName="s",Version="2.60.0",WorkerId="w1",code="200",route="/v1/search",task="relevance"} 12.0
# TYPE ray_aisle_request_latency_ms histogram
ray_aisle_request_latency_ms_bucket{WorkerId="w1",le="10.0",route="/v1/search",task="relevance"} 4.0
ray_aisle_request_latency_ms_bucket{WorkerId="w1",le="+Inf",route="/v1/search",task="relevance"} 12.0
ray_aisle_request_latency_ms_count{WorkerId="w1",route="/v1/search",task="relevance"} 12.0
ray_aisle_request_latency_ms_sum{WorkerId="w1",route="/v1/search",task="relevance"} 301.5
# TYPE ray_node_cpu_utilization gauge
ray_node_cpu_utilization{NodeAddress="127.0.0.1"} 37.0
"""


def test_exported_names_follow_rays_prefix_and_counter_suffix():
    assert metrics.exported_name("aisle_requests") == "ray_aisle_requests_total"
    assert metrics.exported_name("aisle_request_latency_ms") == "ray_aisle_request_latency_ms"
    assert metrics.exported_name("aisle_feedback_log_depth") == "ray_aisle_feedback_log_depth"


def test_every_metric_is_prefixed_declared_well_and_documented():
    readme = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    for name, spec in metrics.SPECS.items():
        assert name.startswith("aisle_") and not name.endswith("_total"), name
        assert spec.kind in ("counter", "gauge", "histogram")
        assert (spec.kind == "histogram") == bool(spec.boundaries), name
        assert list(spec.boundaries) == sorted(spec.boundaries)
        assert f"| `{name}` | {spec.kind} |" in readme, f"{name} missing from docs/operations.md's metrics table"


def test_recording_outside_ray_does_nothing_and_never_raises(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the suite's own Ray may be running
    monkeypatch.setattr(metrics, "_objects", {})
    metrics.inc("aisle_requests", route="/v1/search", task="relevance", code=200)
    metrics.set_gauge("aisle_feedback_log_depth", 5)
    metrics.observe("aisle_batch_size", 8, task="relevance")
    assert metrics._objects == {}


def test_version_number():
    assert metrics.version_number("v12") == 12
    assert metrics.version_number(None) == 0 and metrics.version_number("weird") == 0


def test_aisle_lines_drop_ray_labels_and_buckets():
    lines = metrics.aisle_lines(SCRAPE)
    assert lines == [
        'ray_aisle_request_latency_ms_count{route="/v1/search",task="relevance"} 12',
        'ray_aisle_request_latency_ms_sum{route="/v1/search",task="relevance"} 301.5',
        'ray_aisle_requests_total{code="200",route="/v1/search",task="relevance"} 12',
    ]


def test_a_gauge_set_once_is_set_again_until_the_process_ends(monkeypatch):
    """Ray 2.60 drops a gauge series not set within ~20 s: the last value of each gauge is re-set."""
    import time

    class FakeGauge:
        def __init__(self):
            self.calls = []

        def set(self, value, tags=None):
            self.calls.append((value, tags))

    gauge = FakeGauge()
    monkeypatch.setattr(metrics, "_metric", lambda name: gauge)
    monkeypatch.setattr(metrics, "_gauges", {})
    monkeypatch.setattr(metrics, "_refresher", None)
    monkeypatch.setattr(metrics, "GAUGE_REFRESH_S", 0.05)
    metrics.set_gauge("aisle_adapters_loaded", 3, replica="r1")
    metrics.set_gauge("aisle_adapters_loaded", 2, replica="r1")  # the last value is the one kept
    deadline = time.time() + 5
    while time.time() < deadline and len(gauge.calls) < 5:
        time.sleep(0.05)
    assert gauge.calls[:2] == [(3, {"replica": "r1"}), (2, {"replica": "r1"})]
    assert len(gauge.calls) >= 5 and all(call == (2, {"replica": "r1"}) for call in gauge.calls[2:])
