"""The Serve app under hostile input and under failure, on a tiny random BERT over real HTTP on 127.0.0.1.

* Fuzzing: schemathesis generates requests for every operation in the app's own OpenAPI document
  (valid and invalid bodies, boundary values, wrong types, unexpected methods); no response may be a 5xx.
* Replica loss: the TaskModel replica is killed while a client streams predictions; Serve must start
  a new replica, and every request sent once it is RUNNING must succeed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from serve_helpers import APP_NAME, SENTIMENT_LABELS, register_generation_adapter, running_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

OPERATIONS = {"GET /healthz", "POST /v1/predict/{task}", "POST /v1/search", "POST /v1/recommend",
              "GET /v1/adapters", "GET /v1/adapters/{task}", "POST /v1/events", "POST /v1/adapters/{task}/promote",
              "POST /v1/adapters/{task}/rollback", "GET /v1/status", "GET /v1/online", "POST /v1/online/freeze",
              "POST /v1/online/clear", "POST /v1/online/enabled", "POST /v1/products", "DELETE /v1/products/{product_id}",
              "POST /v1/generate/{task}", "POST /v1/updates/{update_id}/release"}
FUZZ_EXAMPLES = 40
"""Hypothesis examples per operation, generation mode (and real task, for predict), on top of the
deterministic coverage cases: ~600 requests, ~25 s on 2 cores."""
REQUEST_TIMEOUT_S = 30.0
"""No request may take longer: more is a hang, not an error."""


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_resilience")
    with running_app(tmp, client_timeout=REQUEST_TIMEOUT_S, serve_args={"lm_cache_dir": str(tmp / "lm")}) as app:
        register_generation_adapter(app[1], "describe", tmp / "lm")  # fuzzed bodies reach the LM too
        yield app


# ---- fuzzing -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_schema(server):
    client, _, _ = server
    schema = schemathesis.openapi.from_url(f"{client.base_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    documented = {op.ok().label for op in schema.get_all_operations()}
    assert documented == OPERATIONS, "the fuzz test must cover every route; update OPERATIONS"
    return schema


@pytest.mark.timeout(300)
def test_fuzz_every_operation_never_gets_a_5xx(api_schema):
    """Every operation gets schemathesis' deterministic coverage cases (boundary values, missing and
    wrong-typed fields, unexpected methods), then FUZZ_EXAMPLES derandomized Hypothesis cases in each
    of the positive and negative generation modes. Every response is checked: no 5xx, and its body
    conforms to the schema the OpenAPI document declares for its status (so a generated client
    parses every answer, errors included); all failures are reported at once, each as a curl command.

    Driven through schemathesis' Python API (`iter_coverage_cases`, `APIOperation.as_strategy`) rather
    than `schemathesis.pytest.from_fixture`: that loader sets `node._nodeid`, which pytest 9.2 lacks."""
    calls: Counter = Counter()
    failures: list[str] = []
    no_negative_cases: set[str] = set()

    def check(case) -> None:
        response = case.call(timeout=REQUEST_TIMEOUT_S)
        calls[case.operation.label] += 1
        if response.status_code >= 500:
            failures.append(f"{response.status_code} from {case.as_curl_command()}\n    {response.content[:500]!r}")
        elif response.status_code == 422:  # our validation errors: a JSON ErrorBody naming the problem
            body = response.json()
            if not (isinstance(body, dict) and body.get("error") and body.get("request_id")):
                failures.append(f"422 without an error body from {case.as_curl_command()}: {body!r}")
        if response.status_code < 500:
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except Exception as e:  # noqa: BLE001 - schemathesis' failure group: reported with the rest
                failures.append(f"{response.status_code} body does not conform to the declared schema, from "
                                f"{case.as_curl_command()}: {str(e)[:300]}")

    for result in api_schema.get_all_operations():
        operation = result.ok()
        generation = api_schema.config.generation_for(operation=operation)
        for case in api_schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                                   generation_config=generation):
            check(case)
        # A random {task} is almost always unknown (404 before the model is reached): also fuzz the
        # bodies of the real tasks, so the inputs go all the way to the tokenizer.
        path_variants = [None]
        if operation.path == "/v1/predict/{task}":
            path_variants += [{"task": "sentiment"}, {"task": "relevance"}]
        if operation.path == "/v1/generate/{task}":
            path_variants += [{"task": "describe"}]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in path_variants:
                @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
                @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
                def fuzz(case):
                    check(case)

                try:
                    fuzz()
                except Unsatisfiable:
                    # Nothing to break: no body, and only free-form string parameters (any value is valid).
                    if mode is not GenerationMode.NEGATIVE or list(operation.body):
                        raise
                    no_negative_cases.add(operation.label)

    print(f"\nschemathesis {schemathesis.__version__}: {sum(calls.values())} requests: {dict(calls)}; "
          f"no negative cases exist for {sorted(no_negative_cases)}")
    assert set(calls) == OPERATIONS, calls
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:20])


# ---- a replica dies mid-traffic ------------------------------------------------------------------

REPLICA_PREFIX = f"SERVE_REPLICA::{APP_NAME}#TaskModel#"
STREAM_TIMEOUT_S = 60.0
"""Client timeout while a replica is down: a request Serve holds until the new replica is up may take
that long; one that times out hung."""
RECOVERY_LIMIT_S = 90.0


def _task_model_replicas(ray) -> set[str]:
    """Names of the live TaskModel replica actors, `SERVE_REPLICA::aisle#TaskModel#<replica id>`."""
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith(REPLICA_PREFIX)}


def _task_model_status():
    from ray import serve

    return serve.status().applications[APP_NAME].deployments["TaskModel"]


def _task_model_running() -> int:
    status = _task_model_status()
    return status.replica_states.get("RUNNING", 0) if status.status == "HEALTHY" else 0


@dataclass
class Outcome:
    sent: float
    elapsed: float
    status: int | None = None
    error: Exception | None = None
    body: dict | None = None

    @property
    def done(self) -> float:
        return self.sent + self.elapsed


def _send(client: httpx.Client, inputs: list[str]) -> Outcome:
    sent = time.monotonic()
    try:
        r = client.post("/v1/predict/sentiment", json={"inputs": inputs}, timeout=STREAM_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Outcome(sent, time.monotonic() - sent, error=exc)
    try:
        body = r.json()
    except ValueError:
        body = None
    return Outcome(sent, time.monotonic() - sent, status=r.status_code, body=body if isinstance(body, dict) else None)


def _valid_prediction(outcome: Outcome, n_inputs: int) -> bool:
    if outcome.status != 200 or not outcome.body:
        return False
    preds = outcome.body.get("predictions", [])
    return (outcome.body.get("model") == "sentiment@v1" and len(preds) == n_inputs
            and all(p["label"] in SENTIMENT_LABELS and 0.0 <= p["confidence"] <= 1.0 for p in preds))


@pytest.mark.timeout(300)
def test_replica_killed_mid_traffic_is_replaced(server, ray_session):
    ray = ray_session
    client, _, _ = server
    inputs = ["love it", "runs small, sent it back"]
    assert _valid_prediction(_send(client, inputs), len(inputs)), "the app is not healthy before the kill"
    before = _task_model_replicas(ray)
    assert len(before) == 1 and _task_model_running() == 1, (before, _task_model_status())
    (old_name,) = before

    outcomes: list[Outcome] = []
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            outcomes.append(_send(client, inputs))
            time.sleep(0.05)

    sender = threading.Thread(target=stream, name="predict-stream", daemon=True)
    sender.start()
    try:
        time.sleep(1.0)  # steady traffic before the kill
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(old_name, namespace="serve"), no_restart=True)
        recovered_at = None
        while time.monotonic() - killed_at < RECOVERY_LIMIT_S:
            names = _task_model_replicas(ray)
            if names and old_name not in names and _task_model_running() == 1:
                recovered_at = time.monotonic()
                break
            time.sleep(0.1)
        assert recovered_at is not None, (f"no new TaskModel replica RUNNING {RECOVERY_LIMIT_S:.0f} s after the kill: "
                                          f"{_task_model_status()}")
        (new_name,) = _task_model_replicas(ray)
        time.sleep(3.0)  # steady traffic after recovery
    finally:
        stop.set()
        sender.join(timeout=STREAM_TIMEOUT_S + 10)
    assert not sender.is_alive(), "the client thread hung"

    before_kill = [o for o in outcomes if o.done < killed_at]
    during = [o for o in outcomes if o.done >= killed_at and o.sent < recovered_at]  # in flight at the kill, or sent before recovery
    after = [o for o in outcomes if o.sent >= recovered_at]
    failed = [o for o in during if not _valid_prediction(o, len(inputs))]
    print(f"\nTaskModel replica {old_name.rsplit('#', 1)[-1]} killed; replica {new_name.rsplit('#', 1)[-1]} RUNNING "
          f"{recovered_at - killed_at:.1f} s later; requests: {len(before_kill)} before the kill, {len(during)} during the "
          f"outage ({len(failed)} failed: {dict(Counter(o.status or type(o.error).__name__ for o in failed))}; "
          f"slowest {max((o.elapsed for o in during), default=0):.1f} s), {len(after)} after recovery")

    assert len(before_kill) >= 5 and all(_valid_prediction(o, len(inputs)) for o in before_kill)
    for o in during:  # failures are prompt HTTP errors or refused connections, never hangs
        assert not isinstance(o.error, httpx.TimeoutException), f"request hung for {o.elapsed:.1f} s"
        assert o.done <= recovered_at + 15, f"request still pending {o.done - recovered_at:.1f} s after recovery"
        if o.error is not None:
            assert isinstance(o.error, httpx.TransportError), repr(o.error)
        elif not _valid_prediction(o, len(inputs)):
            assert o.status >= 500 or o.status == 429, (o.status, o.body)
    assert len(after) >= 10, f"only {len(after)} requests after recovery"
    bad_after = [(o.status, o.error, o.body) for o in after if not _valid_prediction(o, len(inputs))]
    assert not bad_after, bad_after[:5]

    # Serve is whole again for whoever comes next.
    assert _task_model_running() == 1
    assert _valid_prediction(_send(client, inputs), len(inputs))
    assert client.get("/healthz").status_code == 200
