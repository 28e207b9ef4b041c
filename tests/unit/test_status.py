"""`aisle status`: the one screen, rendered from a small stream world (tests/ops_world.py), no Ray.

Also the observer reads it relies on (core.wal read_only_*): they work while a writer holds the
log, never repair a torn tail, and a running server's /v1/status and metrics take precedence.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ops_world import World, build_world

from aisle.cli import main as cli_main
from core.feedback_store import FeedbackStore
from core.consumer_offsets import read_only_offsets
from core.wal import read_only_end_offset, read_only_records
from ops import status
from ops.config import load_ops_config


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("stream"))


def screen(world: World, **extra: str) -> str:
    cfg = load_ops_config(None, world.overrides(**extra))
    return status.render(status.gather(cfg))


def test_screen_shows_current_versions_updates_log_and_adapters(world):
    text = screen(world)
    lines = text.splitlines()
    assert lines[0].startswith("aisle status")
    relevance = next(line for line in lines if line.strip().startswith("relevance "))
    assert relevance.split()[:3] == ["relevance", "v4", "4"]
    assert "val_ndcg@10 0.9012" in relevance and "promote v2 -> v4" in relevance
    sentiment = next(line for line in lines if line.strip().startswith("sentiment "))
    assert sentiment.split()[:3] == ["sentiment", "v2", "2"] and "val_macro_f1 0.5790" in sentiment
    # the update decisions, newest last, with the gate's numbers and reasons
    assert "4 decisions: 2 promoted, 1 rejected, 1 failed" in text
    assert "original 0.8699 -> 0.8370" in text and "original-set nDCG@10 0.8370 < CURRENT 0.8699 - 0.02" in text
    assert "FileNotFoundError: artifacts/prepared/relevance/val" in text
    assert text.index("UPDATES") < text.index("00:20:30") < text.index("00:41:00")
    # log depth and lag
    assert f"depth {world.end_offset} events" in text
    assert "consumer coordinator    committed" in text and "lag      400 events" in text
    # serving: no server, adapters from the saved metrics
    assert "no server at http://127.0.0.1:9" in text
    assert "aisle_TaskModel#kq3x                        2  relevance@v4, sentiment@v2" in text
    assert "relevance@v2" not in text.split("SERVING")[1]  # resident 0: evicted
    assert max(len(line) for line in lines) <= 120


def test_last_updates_limits_the_list(world):
    text = screen(world, last_updates="1")
    assert "4 decisions" in text and "00:41:00" in text and "00:20:30" not in text


def test_missing_sources_are_said_not_raised(tmp_path):
    cfg = load_ops_config(None, [f"log_dir={tmp_path}/log", f"audit_log={tmp_path}/a.jsonl",
                                 f"registry={tmp_path}/registry", "server=http://127.0.0.1:9", "metrics_url="])
    text = status.render(status.gather(cfg))
    assert "no adapters registered" in text and "no update decisions" in text
    assert "no feedback log at" in text and "no server at http://127.0.0.1:9" in text
    assert "adapters: no metrics source configured" in text
    assert not (tmp_path / "log").exists()  # an observer creates nothing


def test_stream_dir_points_at_a_demo_style_layout(world):
    cfg = load_ops_config(None, [f"stream_dir={world.root}", f"registry={world.registry}"])
    assert (cfg.log_dir, cfg.audit_log, cfg.metrics_file) == (
        str(world.log_dir), str(world.audit_log), str(world.metrics_file))
    explicit = load_ops_config(None, [f"stream_dir={world.root}", "audit_log=/elsewhere.jsonl"])
    assert explicit.audit_log == "/elsewhere.jsonl" and explicit.log_dir == str(world.log_dir)


def test_cli_prints_the_screen_and_rejects_unknown_keys(world, capsys):
    assert cli_main(["status", *world.overrides()]) == 0
    assert "FEEDBACK LOG" in capsys.readouterr().out
    assert cli_main(["status", "no_such_key=1"]) == 2
    assert "unknown config key 'no_such_key'" in capsys.readouterr().err


class _FakeServer(BaseHTTPRequestHandler):
    answers: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        content_type, body = self.answers.get(self.path, ("text/plain", b""))
        self.send_response(200 if body else 404)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_running_server_gives_replicas_live_versions_and_log_depth(world):
    live = {"request_id": "r1", "replicas": {"Ingress": {"RUNNING": 1}, "TaskModel": {"RUNNING": 2, "STARTING": 1}},
            "current": {"relevance": "v5", "sentiment": "v2"},
            "stream": {"log_end_offset": world.end_offset + 50, "consumers": {"coordinator": world.end_offset}}}
    _FakeServer.answers = {"/v1/status": ("application/json", json.dumps(live).encode()),
                           "/metrics": ("text/plain", world.metrics_file.read_bytes())}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        text = screen(world, server=url, metrics_file="", metrics_url=f"{url}/metrics")
    finally:
        server.shutdown()
    assert f"server at {url}" in text
    assert "replicas  TaskModel             2 RUNNING, 1 STARTING" in text
    assert "serving   relevance@v5, sentiment@v2" in text
    assert "v4 (server: v5)" in text  # the registry moved on, or the server's cache has not yet
    assert f"depth {world.end_offset + 50} events (from the server)" in text and "lag       50 events" in text
    assert f"adapters loaded (metrics from {url}/metrics)" in text


# --------------------------------------------------------------------------- observer reads of the log


def test_observer_reads_while_the_writer_holds_the_log(world, tmp_path):
    store = FeedbackStore(tmp_path / "log", salt="s")  # holds the log's lock
    try:
        event = {"event_id": "e1", "ts": 1_767_225_600.0, "user_id": "u", "session_id": "s", "type": "click",
                 "product_id": "P1"}
        store.append([event, {**event, "event_id": "e2"}])
        store.commit("c", 1)
        assert [o for o, _ in read_only_records(tmp_path / "log" / "wal")] == [0, 1]
        assert [r["event_id"] for _, r in read_only_records(tmp_path / "log" / "wal", start=1)] == ["e2"]
        assert read_only_end_offset(tmp_path / "log" / "wal") == 2
        assert read_only_offsets(tmp_path / "log" / "offsets") == {"c": 1}
    finally:
        store.close()


def test_observer_stops_at_a_torn_tail_and_leaves_it(world, tmp_path):
    wal = tmp_path / "wal"
    wal.mkdir()
    segment = sorted((world.log_dir / "wal").glob("segment-*.wal"))[0]
    data = segment.read_bytes()
    torn = data + data[:20]  # the start of one more record: a crash mid-append
    (wal / segment.name).write_bytes(torn)
    assert read_only_end_offset(wal) == world.end_offset
    assert sum(1 for _ in read_only_records(wal)) == world.end_offset
    assert (wal / segment.name).read_bytes() == torn
