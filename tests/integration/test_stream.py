"""The stream loop end to end on a tiny model: events over HTTP with tokens, recommendations that
follow a click at once, admin promote/rollback, an update decided and audited, a bot flood that
trains nothing, a held window released by hand and gated, and the coordinator killed mid-update
(CURRENT keeps serving, the next update runs);
the fast path: search answers name the click layer's snapshot, its admin routes, and the layer
killed ten times mid-stream.
"""

from __future__ import annotations

import re

import time
from pathlib import Path

import httpx
import pytest
import torch

from core import audit, modeling
from core.config import load_config
from core.registry import ADAPTER_DIR, AdapterRegistry
from core.stream_config import StreamConfig
from data_pipelines.simulator import ShopperSimulator
from tests.integration.serve_helpers import (free_port, prepare_relevance, register_offline_relevance, small_catalog,
                                             wait_for)

INGEST, ADMIN = "ingest-secret", "admin-secret"
_RESTARTED: list = []
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stream(ray_session, tmp_path_factory):
    from aisle.streaming import start_stream, stop_stream

    tmp = tmp_path_factory.mktemp("stream")
    catalog = small_catalog(tmp)
    prepare_relevance(tmp / "prepared", catalog)
    register_offline_relevance(AdapterRegistry(tmp / "registry"))
    cfg = load_config(StreamConfig, None, [
        f"log_dir={tmp / 'log'}", f"updates_dir={tmp / 'updates'}", f"audit_log={tmp / 'audit.jsonl'}",
        f"registry={tmp / 'registry'}", f"data_dir={tmp / 'prepared'}", f"catalog_dir={tmp / 'catalog'}",
        "policy.min_examples=12", "policy.cooldown_s=0", "policy.poll_s=0.2", "policy.watch_s=0",
        "update.epochs=1", "update.batch_size=8", "update.replay_examples=40", "update.threads_per_worker=1",
        "update.top_layers=1", "gate.original_queries=3",
        "update.trainer=ray_train",  # the fault tests stop and kill an update mid-training: a warm one on the tiny model ends in 0.3 s
        f"serve.registry={tmp / 'registry'}", f"serve.embeddings={tmp / 'emb'}", f"serve.catalog_dir={tmp / 'catalog'}",
        "serve.backbone=tiny-random-bert", "serve.threads_per_replica=1", "serve.current_ttl_s=0.2",
        f"serve.ingest_token={INGEST}", f"serve.admin_token={ADMIN}", f"serve.port={free_port()}"])
    from actors.update_coordinator import get_coordinator

    url = start_stream(cfg)
    get_coordinator().pause.remote(True)  # tests decide when updates may run
    sim = ShopperSimulator(catalog, seed=3)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, cfg, sim
    stop_stream()


def _lora_tensors(info) -> dict:
    from safetensors.torch import load_file

    return load_file(str(info.path / ADAPTER_DIR / "lora" / "adapter_model.safetensors"))


def post_events(client, events, token=INGEST):
    return client.post("/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"})


def shopper_events(sim, n_sessions, behaviour="shopper"):
    return sim.sessions(n_sessions, lambda text, qid: sim.pool(qid), start_ts=time.time() - 600, behaviour=behaviour)


def coordinator_state():
    import ray
    from actors.update_coordinator import get_coordinator

    from ray.util import placement_group_table

    groups = {g: (pg["state"], pg["bundles"]) for g, pg in placement_group_table().items() if pg["state"] != "REMOVED"}
    return (f"coordinator status: {ray.get(get_coordinator().status.remote(), timeout=30)}; "
            f"free CPU {ray.available_resources().get('CPU')}; placement groups not removed: {groups}")


def test_events_need_the_ingest_token_and_are_validated_and_deduped(stream):
    client, _, sim = stream
    events = shopper_events(sim, 2)
    assert client.post("/v1/events", json={"events": events}).status_code == 401
    wrong = post_events(client, events, token="nope")
    assert wrong.status_code == 403 and wrong.json()["field"] == "authorization"
    # The token is checked before the body: without it, a malformed batch is a 401, not a 422 naming a field.
    for body in ({"events": []}, {"events": [{"event_id": "x"}]}):
        assert client.post("/v1/events", json=body).status_code == 401
        assert post_events(client, body["events"], token="nope").status_code == 403
    assert client.post("/v1/adapters/relevance/promote", json={"nope": 1}).status_code == 401
    empty = post_events(client, [])
    assert empty.status_code == 422 and empty.json()["field"] == "events"
    bad = post_events(client, [{**events[0], "ts": "yesterday"}])
    assert bad.status_code == 422 and bad.json()["field"] == "events.0.ts"
    bad = post_events(client, [{**events[0], "type": "hover"}])
    assert bad.status_code == 422 and bad.json()["field"].startswith("events.0.type")
    first = post_events(client, events).json()
    assert (first["new"], first["duplicate"]) == (len(events), 0)
    again = post_events(client, events).json()
    assert (again["new"], again["duplicate"], again["end_offset"]) == (0, len(events), first["end_offset"])


def test_a_click_changes_the_next_recommendation_at_once(stream):
    client, _, sim = stream
    products = sim.pool(sim.affected_queries()[0] if sim.affected_queries() else "Q0001")
    now = time.time()

    def click(pid, i):  # shown, then clicked (a click without an impression is flagged and ignored)
        return [{"event_id": f"rec-{pid}-{i}-{kind}", "ts": now + i, "user_id": "shopper-42", "session_id": "rec-s",
                 "type": kind, "product_id": pid} for kind in ("impression", "click")]

    assert post_events(client, click(products[0], 0)).status_code == 200
    first = client.post("/v1/recommend", json={"user_id": "shopper-42", "k": 5}).json()
    assert "model" in first, first
    assert first["model"].startswith("sessions+") and products[0] not in [p["product_id"] for p in first["products"]]
    assert post_events(client, click(products[5], 1)).status_code == 200
    second = client.post("/v1/recommend", json={"user_id": "shopper-42", "k": 5}).json()
    assert [p["product_id"] for p in second["products"]] != [p["product_id"] for p in first["products"]]
    unknown = client.post("/v1/recommend", json={"user_id": "nobody-yet", "k": 3})
    assert unknown.status_code == 200 and unknown.json()["model"] == "sessions:popular"
    both = client.post("/v1/recommend", json={"user_id": "x", "product_ids": ["P1"]})
    assert both.status_code == 422


def test_admin_promote_and_rollback_need_the_admin_token(stream):
    client, cfg, _ = stream
    registry = AdapterRegistry(cfg.registry)
    before = registry.current("relevance")
    assert client.post("/v1/adapters/relevance/rollback", json={}).status_code == 401
    assert client.post("/v1/adapters/relevance/rollback", json={}, headers={"Authorization": f"Bearer {INGEST}"}).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    missing = client.post("/v1/adapters/relevance/promote", json={"version": "v99"}, headers=admin)
    assert missing.status_code == 404 and missing.json()["field"] == "version"
    ok = client.post("/v1/adapters/relevance/promote", json={"version": before, "reason": "no-op"}, headers=admin)
    assert ok.status_code == 200 and ok.json()["current"] == before


def test_bot_flood_is_flagged_and_trains_nothing(stream):
    from actors.update_coordinator import get_coordinator
    import ray

    client, cfg, sim = stream
    current = AdapterRegistry(cfg.registry).current("relevance")
    events = shopper_events(sim, 40, behaviour="random_bot")
    for i in range(0, len(events), 400):
        assert post_events(client, events[i:i + 400]).status_code == 200
    n_before = len(audit.read(cfg.audit_log))
    coordinator = get_coordinator()
    ray.get(coordinator.pause.remote(False))
    ray.get(coordinator.trigger.remote())
    decided = wait_for(lambda: audit.read(cfg.audit_log)[n_before:], 120, "an audit line", coordinator_state)
    ray.get(coordinator.pause.remote(True))
    line = decided[0]
    if line["reason"].startswith("flagged traffic"):  # the screen flagged most of the window: held, nothing trains
        assert line["decision"] == "rejected" and AdapterRegistry(cfg.registry).current("relevance") == current
        flagged = int(re.search(r"flagged (\d+) of \d+ events", line["reason"]).group(1))
    else:  # the unflagged rest may train; flagged events never do
        assert AdapterRegistry(cfg.registry).current("relevance") == current or line["decision"] == "promoted"
        flagged = line["examples"]["flagged"]
    # How many of the bots' positives the screen flags depends on what the shared simulator served
    # them before (run alone: 46 of 188, no_impression and rate caps; after the suite's earlier
    # tests: more than half); that some are, and that none trains, is what holds in both.
    assert flagged > 0


def test_update_is_gated_and_audited_then_survives_a_coordinator_kill(stream):
    import ray
    from actors.update_coordinator import get_coordinator

    client, cfg, sim = stream
    registry = AdapterRegistry(cfg.registry)
    events = shopper_events(sim, 30)
    assert post_events(client, events).status_code == 200
    coordinator = get_coordinator()
    n_before = len(audit.read(cfg.audit_log))
    current = registry.current("relevance")
    ray.get(coordinator.pause.remote(False))
    wait_for(lambda: ray.get(coordinator.status.remote())["running"], 60, "an update to start")
    ray.kill(coordinator, no_restart=False)
    # CURRENT keeps serving while the coordinator is down and restarting.
    search = client.post("/v1/search", json={"query": "shoes", "k": 3})
    assert search.status_code == 200 and search.json()["model"] == f"relevance@{current}"
    lines = wait_for(lambda: [d for d in audit.read(cfg.audit_log)[n_before:]
                              if d["decision"] in ("promoted", "rejected", "failed")], 240, "the next update's decision",
                     coordinator_state)
    trail = audit.read(cfg.audit_log)[n_before:]
    assert trail[0]["decision"] == "interrupted"
    decided = lines[0]
    assert decided["decision"] in ("promoted", "rejected"), decided
    assert decided["examples"]["examples"] >= 12 and decided["candidate"]
    assert {"original_ndcg_current", "original_ndcg_candidate"} <= set(decided["metrics"])
    version = decided["candidate"].split("@")[1]
    info = registry.get("relevance", version)
    assert info.lineage["trigger"] == "stream" and info.lineage["parent"] == current
    # update.top_layers=1: the candidate's layer-0 LoRA is its parent's bit for bit (so the gate could
    # reuse the parent's layer-0 states); layer 1 was trained
    cand, par = _lora_tensors(info), _lora_tensors(registry.get("relevance", current))
    assert cand.keys() == par.keys()
    for key in cand:
        assert torch.equal(cand[key], par[key]) == (modeling.layer_index(key) == 0), key
    assert (registry.current("relevance") == version) == (decided["decision"] == "promoted")
    if decided["decision"] == "promoted":
        wait_for(lambda: client.post("/v1/search", json={"query": "shoes", "k": 3}).json()["model"]
                 == f"relevance@{version}", 10, "search to answer with the promoted version")


def test_a_held_window_is_released_by_admin_trained_from_its_clicks_and_gated(stream):
    """The operator's answer to a held window ("review it, then release it by hand"): the release
    trains it from its clicks and the gate decides; only held windows, and each once."""
    import ray
    from actors.update_coordinator import get_coordinator

    client, cfg, _ = stream
    coordinator = get_coordinator()
    ray.get(coordinator.pause.remote(True))
    wait_for(lambda: not ray.get(coordinator.status.remote())["running"], 240, "the update in flight to end", coordinator_state)
    route, admin = "/v1/updates/{}/release", {"Authorization": f"Bearer {ADMIN}"}
    assert client.post(route.format("update-00001"), json={}).status_code == 401
    assert client.post(route.format("update-00001"), json={}, headers={"Authorization": f"Bearer {INGEST}"}).status_code == 403
    bad = client.post(route.format("window-1"), json={}, headers=admin)
    assert bad.status_code == 422 and bad.json()["field"] == "update_id"
    unknown = client.post(route.format("update-09999"), json={}, headers=admin)
    assert unknown.status_code == 404 and unknown.json()["field"] == "update_id"
    trained = [d for d in audit.read(cfg.audit_log) if d.get("candidate")][-1]  # its events are in the log
    refused = client.post(route.format(trained["update_id"]), json={}, headers=admin)
    assert refused.status_code == 409 and "was not held" in refused.json()["error"]
    # A held window over the same events, as the surge guard writes one (this test writes it, so
    # that the release does not wait for a surge; the holds themselves are tested in test_feedback).
    span = trained["examples"]["span"]
    audit.append(cfg.audit_log, {"trigger": "test", "update_id": "update-09990", "decision": "rejected", "held": True,
                                 "reason": "traffic surge: written by the test", "parent": trained["parent"],
                                 "candidate": None, "examples": {"span": span, "events": span["events"]},
                                 "metrics": {}, "seconds": 0.0})
    n_before = len(audit.read(cfg.audit_log))
    ok = client.post(route.format("update-09990"), json={"reason": "a flash sale"}, headers=admin)
    assert ok.status_code == 202 and ok.json()["queued"] == 1, ok.text
    again = client.post(route.format("update-09990"), json={}, headers=admin)
    assert again.status_code == 409 and "already released" in again.json()["error"]
    ray.get(coordinator.pause.remote(False))
    line = wait_for(lambda: next((d for d in audit.read(cfg.audit_log)[n_before:] if d.get("released") == "update-09990"),
                                 None), 240, "the released window's decision", coordinator_state)
    ray.get(coordinator.pause.remote(True))
    wait_for(lambda: not ray.get(coordinator.status.remote())["running"], 240, "the coordinator to be idle", coordinator_state)
    assert line["trigger"] == "released update-09990 by admin: a flash sale"
    assert line["decision"] in ("promoted", "rejected") and line["candidate"], line
    assert line["examples"]["span"] == span and {"original_ndcg_current", "original_ndcg_candidate"} <= set(line["metrics"])
    info = AdapterRegistry(cfg.registry).get("relevance", line["candidate"].split("@")[1])
    assert info.lineage["targets"] == "clicks" and info.lineage["events"]["first_offset"] == span["first_offset"]
    twice = client.post(route.format("update-09990"), json={}, headers=admin)
    assert twice.status_code == 409 and f"({line['update_id']}: {line['decision']})" in twice.json()["error"]


def test_stop_leaves_the_update_in_flight_undecided_and_the_next_start_audits_it(stream):
    """stop_stream stops the coordinator this way before it kills it: the update in flight ends
    without a decision (no audit line, no committed offset, no CPU left reserved by its training
    run); the next coordinator audits it as interrupted and retries the window."""
    import ray
    from ray.util import placement_group_table

    from actors.update_coordinator import get_coordinator, get_or_create_coordinator

    from actors.feedback_log import get_feedback_log

    client, cfg, sim = stream
    n_before, groups_before = len(audit.read(cfg.audit_log)), set(placement_group_table())
    committed = ray.get(get_feedback_log().committed.remote("coordinator"))
    events = shopper_events(sim, 30)
    assert post_events(client, events).status_code == 200
    coordinator = get_coordinator()
    ray.get(coordinator.pause.remote(False))
    ray.get(coordinator.trigger.remote())
    wait_for(lambda: ray.get(coordinator.status.remote())["running"], 60, "an update to start", coordinator_state)
    assert ray.get(coordinator.stop.remote(60), timeout=90) is True
    assert audit.read(cfg.audit_log)[n_before:] == []
    assert ray.get(get_feedback_log().committed.remote("coordinator")) == committed
    assert (Path(cfg.updates_dir) / "inflight.json").is_file()
    wait_for(lambda: all(placement_group_table()[g]["state"] == "REMOVED"
                         for g in set(placement_group_table()) - groups_before), 30, "the run's placement group to go")

    ray.kill(coordinator, no_restart=True)

    def gone():
        try:
            get_coordinator()
        except ValueError:
            return True
        return False

    wait_for(gone, 30, "the stopped coordinator to exit")
    _RESTARTED.append(get_or_create_coordinator(cfg))  # a non-detached actor lives while a handle does
    restarted = _RESTARTED[-1]
    ray.get(restarted.pause.remote(True))
    assert audit.read(cfg.audit_log)[n_before]["decision"] == "interrupted"
    # It reads again from the committed offset: the stopped window's events are pending once more.
    wait_for(lambda: ray.get(restarted.status.remote())["pending_events"] >= len(events), 30, "the window to be re-read")


def test_replay_streams_a_file_counts_bad_records_and_is_idempotent(stream, tmp_path):
    import json

    from aisle.replay import read_events, replay

    client, _, sim = stream
    events = shopper_events(sim, 5)
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events] + ["{not json", json.dumps({**events[0], "event_id": "x", "position": -1})]
    path.write_text("\n".join(lines) + "\n")
    url = str(client.base_url)
    first = replay(read_events(path), url, INGEST, rate=0, batch=7)
    assert (first["read"], first["invalid"], first["sent"], first["new"]) == (len(events) + 2, 2, len(events), len(events))
    assert first["invalid_by_field"] == {"event": 1, "position": 1}
    again = replay(read_events(path), url, INGEST, rate=0)
    assert (again["new"], again["duplicate"]) == (0, len(events))


# ---------------------------------------------------------------------- the fast path: the click layer
def search_online(client, query="running shoes"):
    r = client.post("/v1/search", json={"query": query, "k": 5})
    assert r.status_code == 200, r.text
    return r.json()


def test_search_names_the_online_snapshot_that_covers_acknowledged_events(stream):
    client, _, sim = stream
    acked = post_events(client, shopper_events(sim, 6)).json()["end_offset"]
    answer = wait_for(lambda: (a := search_online(client))["online"] and a["online"]["offset"] >= acked and a,
                      60, "a search answer whose snapshot covers the acknowledged events")
    assert answer["online"]["snapshot"].startswith(f"{answer['online']['offset']}.")
    assert all(p["model_score"] is not None for p in answer["products"])
    plain = client.post("/v1/search", json={"query": "running shoes", "k": 5, "online": False}).json()
    assert plain["online"] is None
    assert client.post("/v1/search", json={"query": "x", "version": "v999"}).json()["field"] == "version"


def test_online_admin_routes_need_the_admin_token_and_are_audited(stream):
    client, cfg, _ = stream
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/v1/online").status_code == 401
    assert client.post("/v1/online/enabled", json={"enabled": False}, headers={"Authorization": "Bearer x"}).status_code == 403
    bad = client.post("/v1/online/freeze", json={"key": "no key here"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["field"] == "key"
    key = "footwear|brand=Acme"
    frozen = client.post("/v1/online/freeze", json={"key": key, "reason": "test"}, headers=admin).json()
    assert key in frozen["frozen_keys"] and frozen["serving"] == frozen["snapshot"]
    off = client.post("/v1/online/enabled", json={"enabled": False}, headers=admin).json()
    assert off["enabled"] is False and search_online(client)["online"]["enabled"] is False
    client.post("/v1/online/enabled", json={"enabled": True}, headers=admin)
    cleared = client.post("/v1/online/clear", json={"key": key}, headers=admin).json()
    assert key not in cleared["frozen_keys"] and cleared["enabled"] is True
    lines = audit.read(Path(cfg.click_state_dir) / "audit.jsonl")
    assert [(r["decision"], r["key"]) for r in lines[-4:]] == [
        ("frozen", key), ("disabled", "*"), ("enabled", "*"), ("cleared", key)]
    assert lines[-4]["reason"] == "admin: test"


def test_click_layer_killed_ten_times_mid_stream_serving_never_fails_and_resumes_from_its_offset(stream, tmp_path):
    import threading

    import ray
    from actors.click_layer import get_click_layer
    from actors.feedback_log import get_feedback_log
    from core.click_layer import OnlineLayer, read_product_catalog

    client, cfg, sim = stream
    failures, answers, stop = [], [], threading.Event()

    def searcher():
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/search", json={"query": "blue running shoes", "k": 5})
                (answers if r.status_code == 200 else failures).append(r.status_code)

    thread = threading.Thread(target=searcher, daemon=True)
    thread.start()
    try:
        for _ in range(10):
            assert post_events(client, shopper_events(sim, 3)).status_code == 200
            ray.get(get_click_layer().status.remote(), timeout=60)  # up again before the next kill
            ray.kill(get_click_layer(), no_restart=False)
            time.sleep(0.5)
        end = ray.get(get_feedback_log().stats.remote())["end_offset"]
        status = wait_for(lambda: (s := ray.get(get_click_layer().status.remote(), timeout=60))["offset"] == end and s,
                          60, "the restarted click layer to read the whole log")
    finally:
        stop.set()
        thread.join(60)
    assert not failures and len(answers) > 10
    assert status["restored_offset"] <= status["offset"]
    # the restarted layer's snapshot is what one uninterrupted layer makes of the same log
    straight = OnlineLayer(cfg.click_model, read_product_catalog(cfg.catalog_dir, cfg.click_model), tmp_path / "straight")
    log, offset = get_feedback_log(), 0
    while offset < end:
        page = ray.get(log.read.remote(offset, 2000))
        straight.observe(page["events"])
        offset = page["next_offset"]
    admin = {"Authorization": f"Bearer {ADMIN}"}
    served = client.get("/v1/online", headers=admin).json()
    assert served["offset"] == end and served["snapshot"].split(".")[0] == straight.publish().version.split(".")[0]
    assert [e["key"] for e in served["largest_effects"]] == [
        e["key"] for e in straight.status()["largest_effects"]]
    wait_for(lambda: search_online(client)["online"]["offset"] == end, 30, "serving to use the resumed snapshot")


def test_status_and_every_aisle_metric_reach_the_prometheus_endpoint(stream):
    """Runs last: by now the module has sent searches, recommendations, events (new, duplicate,
    flagged, refused) and decided updates; every metric that saw traffic is exported, non-zero."""
    from ops.runtime import metrics_url
    from ops.metrics import exported_name
    from ops.prom import parse

    client, cfg, _ = stream
    status = client.get("/v1/status").json()
    assert status["replicas"]["TaskModel"].get("RUNNING", 0) >= 1 and status["replicas"]["Ingress"]["RUNNING"] >= 1
    assert status["current"]["relevance"] == AdapterRegistry(cfg.registry).current("relevance")
    assert status["stream"]["log_end_offset"] > 0 and "coordinator" in status["stream"]["consumers"]
    url = metrics_url()
    assert url is not None
    expected = {"aisle_requests", "aisle_request_errors", "aisle_request_latency_ms", "aisle_current_version",
                "aisle_batch_size", "aisle_adapter_loads", "aisle_adapters_loaded", "aisle_adapter_resident",
                "aisle_events", "aisle_feedback_log_depth", "aisle_consumer_lag", "aisle_updates",
                "aisle_update_duration_s"}

    def scraped():
        text = httpx.get(url, timeout=10).text
        totals = {}
        for line in text.splitlines():
            for name in expected:
                exported = exported_name(name)
                if line.startswith((exported + "{", exported + "_count{")):
                    totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return totals if set(totals) == expected else None

    totals = wait_for(scraped, 60, "every aisle_ metric on the Prometheus endpoint")
    for name in expected - {"aisle_consumer_lag"}:  # a consumer that caught up has lag 0
        assert totals[name] > 0, name
    expo = parse(httpx.get(url, timeout=10).text)
    assert expo.total("aisle_requests", route="/v1/search", task="relevance", code="200") > 0
    assert expo.total("aisle_request_errors", route="/v1/events", code="401") > 0  # no token
    for outcome in ("accepted", "duplicate", "rejected", "flagged"):
        assert expo.total("aisle_events", outcome=outcome) > 0, outcome
    assert expo.total("aisle_updates", task="relevance", decision="started") > 0
    # The gauge is exported ~10 s after it is set: wait for the last append to show.
    wait_for(lambda: parse(httpx.get(url, timeout=10).text).total("aisle_feedback_log_depth")
             == status["stream"]["log_end_offset"], 60, "the log depth gauge to reach the log's end offset")
