"""The Serve app on a tiny random BERT: every endpoint, the error cases, and a promotion picked up
without a restart. Real deployments, real HTTP on 127.0.0.1."""

from __future__ import annotations

import time

import torch

import pytest

from serve_helpers import APP_NAME, SENTIMENT_LABELS, register_adapter, running_app
from core.registry import ADAPTER_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    # the blend is on, but applies only once an offline version exists (the ensemble test makes one);
    # rerank_budget_ms 0: a search waits for its scores, so under the suite's load no answer comes in
    # first-stage order (the budget has its own tests: test_search_budget, test_serve_overload)
    tmp = tmp_path_factory.mktemp("serve")
    with running_app(tmp, serve_args={"ensemble_offline_weight": 0.3, "lm_cache_dir": str(tmp / "lm"),
                                      "rerank_budget_ms": 0}) as app:
        yield app


def test_healthz_and_adapters(server):
    client, registry, _ = server
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["current"]["sentiment"] == "v1"
    assert r.headers["X-Request-ID"]
    adapters = client.get("/v1/adapters").json()
    assert {a["task"] for a in adapters} == {"sentiment", "relevance"}
    one = client.get("/v1/adapters/sentiment").json()
    assert one["current"] == "v1" and one["versions"][0]["model_id"] == "sentiment@v1"
    assert one["versions"][0]["lineage"]["trigger"] == "test"
    assert client.get("/v1/adapters/pricing").status_code == 404


def test_predict(server):
    client, _, _ = server
    r = client.post("/v1/predict/sentiment", json={"inputs": ["love it", "runs small, sent it back"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "sentiment@v1" and len(body["predictions"]) == 2 and body["request_id"]
    assert body["predictions"][0]["label"] in {"negative", "neutral", "positive"}
    pair = client.post("/v1/predict/relevance", json={"inputs": [["navy sneakers", "Acme Running Shoes - Blue"]]}).json()
    assert 0.0 <= pair["predictions"][0]["score"] <= 2.0


def test_search_reranks_with_current_relevance_and_recommend(server):
    client, _, _ = server
    r = client.post("/v1/search", json={"query": "blue running shoes", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "relevance@v1" and len(body["products"]) == 5
    scores = [p["score"] for p in body["products"]]
    assert scores == sorted(scores, reverse=True)
    # where the time went (W3C Server-Timing): the first stage and the reranking within the whole
    stages = dict(part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(","))
    assert {"first_stage", "rerank", "app"} <= set(stages) <= {"first_stage", "budget", "rerank", "app"}
    assert float(stages["first_stage"]) + float(stages["rerank"]) <= float(stages["app"])
    given = [body["products"][0]["product_id"]]
    rec = client.post("/v1/recommend", json={"product_ids": given, "k": 4}).json()
    assert len(rec["products"]) == 4 and given[0] not in {p["product_id"] for p in rec["products"]}


@pytest.mark.parametrize("path,payload,status,field", [
    ("/v1/predict/sentiment", {"inputs": []}, 422, "inputs"),
    ("/v1/predict/sentiment", {"inputs": ["  "]}, 422, "inputs"),
    ("/v1/predict/sentiment", {"inputs": "not a list"}, 422, "inputs"),
    ("/v1/predict/sentiment", {"inputs": ["x"] * 65}, 422, "inputs"),
    ("/v1/predict/sentiment", {"inputs": ["ok"], "colour": "red"}, 422, "colour"),
    ("/v1/predict/sentiment", {"inputs": ["ok"], "version": "v9"}, 404, "version"),
    ("/v1/predict/sentiment", {"inputs": ["ok"], "version": "latest"}, 422, "version"),
    ("/v1/predict/pricing", {"inputs": ["ok"]}, 404, "task"),
    ("/v1/predict/intent", {"inputs": ["ok"]}, 404, "task"),
    ("/v1/predict/relevance", {"inputs": ["not a pair"]}, 422, "inputs"),
    ("/v1/predict/sentiment", {"inputs": [["a pair", "in a text task"], "text"]}, 422, "inputs"),
    ("/v1/search", {"query": "", "k": 5}, 422, "query"),
    ("/v1/search", {"query": "shoes", "k": 0}, 422, "k"),
    ("/v1/search", {"query": "shoes", "k": 51}, 422, "k"),
    ("/v1/search", {"query": "shoes", "k": "ten"}, 422, "k"),
    ("/v1/recommend", {"product_ids": ["nope"], "k": 3}, 404, "product_ids"),
    ("/v1/recommend", {"user_id": "u1", "k": 3}, 404, "user_id"),  # no stream running: no shopper history
    ("/v1/recommend", {"k": 3}, 422, None),  # neither product_ids nor user_id
    ("/v1/events", {"events": []}, 401, "authorization"),  # the token is checked before the body
    ("/v1/events", {"events": [{"event_id": "e", "ts": 1.8e9, "user_id": "u", "session_id": "s", "type": "click",
                                "product_id": "P1"}]}, 401, "authorization"),
    ("/v1/adapters/sentiment/rollback", {}, 401, "authorization"),
])
def test_bad_requests_get_4xx_naming_the_field(server, path, payload, status, field):
    client, _, _ = server
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and body["error"] and body["request_id"]


@pytest.mark.parametrize("path,raw,field", [
    ("/v1/predict/sentiment", rb'{"inputs": ["ok", "half an emoji \ud83d"]}', "inputs"),
    ("/v1/predict/relevance", rb'{"inputs": [["shoes", "\udfff"]]}', "inputs"),
    ("/v1/search", rb'{"query": "\ud800"}', "query"),
    ("/v1/recommend", rb'{"product_ids": ["\ud800"]}', "product_ids"),
])
def test_lone_surrogates_get_422_naming_the_field(server, path, raw, field):
    """Valid JSON, but no tokenizer or JSON response can encode an unpaired UTF-16 surrogate (was a 500)."""
    client, _, _ = server
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_malformed_json_and_oversized_body(server):
    client, _, _ = server
    r = client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] and r.json()["field"] == "body"
    r = client.post("/v1/predict/sentiment", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/search", json={"query": "navy sneakers", "k": True})
    assert r.status_code == 422 and r.json()["field"] == "k"


def test_wrong_method_and_unknown_route_get_the_error_body(server):
    client, _, _ = server
    for r, status in ((client.get("/v1/search"), 405), (client.get("/v1/nothing-here"), 404)):
        assert r.status_code == status
        assert r.json()["error"] and r.json()["request_id"]


def test_requests_for_several_adapters_share_forwards_and_get_their_own_answers(server):
    """Concurrent requests for three versions get batched together into mixed-adapter forwards
    (the replica says so), and each answer equals the one its version gives to a lone request."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    client, registry, _ = server
    versions = ["v1"] + [register_adapter(registry, "sentiment", SENTIMENT_LABELS, seed=s) for s in (7, 8)]
    texts = ["love it", "runs small", "fine", "the zip broke", "gorgeous colour", "meh"]

    def ask(version, inputs):
        r = client.post("/v1/predict/sentiment", json={"inputs": inputs, "version": version})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == f"sentiment@{version}"
        return r.json()["predictions"]

    alone = {v: ask(v, texts) for v in versions}  # also loads every version into the replica
    assert alone[versions[1]] != alone[versions[2]]
    handle = serve.get_deployment_handle("TaskModel", APP_NAME)
    before = handle.batching.remote().result()
    jobs = [(versions[i % 3], texts[i % len(texts):i % len(texts) + 1]) for i in range(90)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda job: ask(*job), jobs))
    for (version, inputs), got in zip(jobs, answers):
        want = alone[version][texts.index(inputs[0])]
        assert got[0]["label"] == want["label"] and abs(got[0]["confidence"] - want["confidence"]) < 1e-4
    after = handle.batching.remote().result()
    assert after["mix_adapters"] and after["mixed_calls"] > before["mixed_calls"]


def test_a_task_declared_in_yaml_is_served_like_a_built_in_one(server):
    """tests/conftest.py declares ticket_topic (core.declared_tasks); its adapter, once registered,
    answers on /v1/predict/ticket_topic with its declared labels, with no code or restart."""
    client, registry, _ = server
    assert client.post("/v1/predict/ticket_topic", json={"inputs": ["where is my parcel"]}).status_code == 404
    labels = ["shipping", "returns", "billing"]
    registry.promote("ticket_topic", register_adapter(registry, "ticket_topic", labels, seed=4))
    deadline = time.time() + 10  # the ingress re-reads CURRENT after serve.current_ttl_s
    while (r := client.post("/v1/predict/ticket_topic", json={"inputs": ["where is my parcel", "refund please"]})
           ).status_code == 404 and time.time() < deadline:
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "ticket_topic@v1" and {p["label"] for p in r.json()["predictions"]} <= set(labels)
    pairs = client.post("/v1/predict/ticket_topic", json={"inputs": [["a", "b"]]})
    assert pairs.status_code == 422 and pairs.json()["field"] == "inputs"  # a single-text task
    assert client.get("/healthz").json()["current"]["ticket_topic"] == "v1"


def test_promotion_is_served_without_restart(server):
    client, registry, _ = server
    v2 = register_adapter(registry, "sentiment", SENTIMENT_LABELS, seed=2)
    registry.promote("sentiment", v2)
    deadline = time.time() + 10
    while time.time() < deadline:
        if client.post("/v1/predict/sentiment", json={"inputs": ["fine"]}).json()["model"] == f"sentiment@{v2}":
            break
        time.sleep(0.2)
    assert client.post("/v1/predict/sentiment", json={"inputs": ["fine"]}).json()["model"] == f"sentiment@{v2}"
    registry.rollback("sentiment")
    time.sleep(0.5)
    assert client.post("/v1/predict/sentiment", json={"inputs": ["fine"]}).json()["model"] == "sentiment@v1"


def test_the_served_blend_mixes_the_offline_adapter_into_search_scores(server):
    """`ensemble_offline_weight: 0.3`: with a stream version CURRENT, /v1/search scores each reranked
    product 0.7 x CURRENT + 0.3 x the newest offline version, and says so."""
    from core import modeling
    from core.modeling import AdapterMeta, LoraSpec
    from serve_helpers import RELEVANCE_LABELS

    client, registry, _ = server
    meta = AdapterMeta(task="relevance", labels=RELEVANCE_LABELS, backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8))
    versions = {}
    for trigger, seed in (("offline", 11), ("stream", 12)):
        model = modeling.build_task_model(meta, seed=seed)
        torch.manual_seed(seed)
        with torch.no_grad():
            model.head[1].weight.normal_(0, 0.5)  # two visibly different scorers
        versions[trigger] = registry.create_version(
            "relevance", lambda d, m=model: modeling.save_adapter(m, meta, d / ADAPTER_DIR), config={"labels": RELEVANCE_LABELS},
            metrics={}, lineage={"trigger": trigger}).version
    registry.promote("relevance", versions["stream"])
    query = {"query": "navy running shoes", "online": False}
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            blended = client.post("/v1/search", json={**query, "k": 5}).json()
            if blended.get("ensemble"):
                break
            time.sleep(0.3)
        assert blended["ensemble"] == {f"relevance@{versions['stream']}": 0.7, f"relevance@{versions['offline']}": 0.3}
        alone = {t: {p["product_id"]: p["score"] for p in client.post(
            "/v1/search", json={**query, "k": 20, "version": v}).json()["products"]} for t, v in versions.items()}
        for p in blended["products"]:
            expected = 0.7 * alone["stream"][p["product_id"]] + 0.3 * alone["offline"][p["product_id"]]
            assert p["score"] == pytest.approx(expected, abs=1e-4)
        assert alone["stream"] != alone["offline"]
    finally:
        registry.promote("relevance", "v1", reason="test cleanup")


@pytest.fixture(scope="module")
def describer(server):
    """describe@v1, a random LoRA on the tiny Llama, CURRENT in the served registry."""
    from serve_helpers import register_generation_adapter, wait_for

    client, registry, tmp = server
    version = register_generation_adapter(registry, "describe", tmp / "lm")
    wait_for(lambda: client.post("/v1/generate/describe", json={"input": {"title": "x"}, "max_tokens": 1}).status_code == 200,
             60, "describe served")
    return version


def test_generate_answers_with_the_current_adapter_within_max_tokens(server, describer):
    client, _, _ = server
    r = client.post("/v1/generate/describe", json={"input": {"title": "Acme Trail Boot", "brand": "Acme",
                                                             "colour": "brown"}, "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == f"describe@{describer}" and body["tokens"] <= 5 and body["request_id"]
    assert body["finish_reason"] in ("stop", "length") and isinstance(body["text"], str)
    same = client.post("/v1/generate/describe", json={"input": {"title": "Acme Trail Boot", "brand": "Acme",
                                                                "colour": "brown"}, "max_tokens": 5}).json()
    assert same["text"] == body["text"]  # greedy: the same input, the same answer


def test_concurrent_generate_requests_share_the_decode_and_get_their_own_answers(server, describer):
    """Continuous batching: requests sent together are decoded as rows of one decode (Generator's
    batch_stats counts more rows than steps) and each gets what it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve
    from serve_helpers import APP_NAME

    client, _, _ = server
    payloads = [{"input": {"title": f"Acme Trail Boot {i}", "colour": c}, "max_tokens": 3 + 2 * i}
                for i, c in enumerate(("brown", "black", "tan", "olive", "navy", "grey"))]
    alone = [client.post("/v1/generate/describe", json=p).json() for p in payloads]
    stats = serve.get_deployment_handle("Generator", app_name=APP_NAME).batch_stats
    before = stats.remote().result()
    with ThreadPoolExecutor(len(payloads)) as pool:
        together = list(pool.map(lambda p: client.post("/v1/generate/describe", json=p).json(), payloads))
    after = stats.remote().result()
    assert [(t["text"], t["tokens"]) for t in together] == [(a["text"], a["tokens"]) for a in alone]
    assert after["rows"] - before["rows"] > after["steps"] - before["steps"]


def test_generate_streams_server_sent_events_that_add_up_to_the_answer(server, describer):
    import json

    client, _, _ = server
    payload = {"input": {"title": "Oak & Co Mug", "material": "stoneware"}, "max_tokens": 6}
    whole = client.post("/v1/generate/describe", json=payload).json()
    with client.stream("POST", "/v1/generate/describe", json={**payload, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["done"] is True and events[-1]["model"] == f"describe@{describer}"
    assert "".join(e["text"] for e in events[:-1]).strip() == whole["text"]


@pytest.mark.parametrize("payload,status,field", [
    ({"input": {"title": "Boot", "size": "42"}}, 422, "input.size"),       # not a field of describe
    ({"input": {"brand": "Acme"}}, 422, "input.title"),                    # its first field is required
    ({"input": {"title": "Boot"}, "max_tokens": 0}, 422, "max_tokens"),
    ({"input": {"title": "Boot"}, "max_tokens": 100000}, 413, "max_tokens"),  # past the server's limit
    ({"input": {k: "x" * 3000 for k in ("title", "category", "brand")}}, 413, "input"),  # the prompt is too long
    ({"input": {"title": "Boot"}, "version": "v9"}, 404, "version"),
    ({"input": {}}, 422, "input"),
])
def test_bad_generate_requests_get_4xx_naming_the_field(server, describer, payload, status, field):
    client, _, _ = server
    r = client.post("/v1/generate/describe", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


def test_generate_for_unknown_or_untrained_tasks_is_404(server, describer):
    client, _, _ = server
    assert client.post("/v1/generate/translate", json={"input": {"text": "x"}}).json()["field"] == "task"
    r = client.post("/v1/generate/summarize", json={"input": {"text": "Lovely dress."}})
    assert r.status_code == 404 and "no CURRENT version" in r.json()["error"]
    doc = client.get("/openapi.json").json()["paths"]["/v1/generate/{task}"]["post"]["responses"]
    assert {"200", "404", "413", "422", "503"} <= set(doc)
