"""The HTTP surface of the ingress: the FastAPI app, its error body, request ids, body-size limit,
request metrics, bearer-token checks and load shedding (a bounded number of requests in flight per
model route: past it, 503 with Retry-After and the error body at once; a full downstream queue,
Serve's BackPressureError, and a replica lost mid-request answer the same). serve/ingress.py holds the routes.
"""


import hmac
import time
import uuid

# No `from __future__ import annotations`: FastAPI reads these types at run time.
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from core.gen_tasks import GEN_TASKS
from core.tasks import all_tasks
from ops import metrics
from serve.schemas import MAX_BODY_BYTES, ErrorBody

api = FastAPI(title="Aisle", version="0.1.0",
              description="Search, recommendations and predictions from LoRA adapters on one backbone.")
RETRIEVAL_ONLY = "retrieval-only"
ROUTE_TASKS = {"/v1/search": "relevance", "/v1/recommend": "retrieval"}
STREAM_DOWN = "the stream is not running (start it with `aisle stream`)"
SHED_ROUTES = {"/v1/search": "search", "/v1/recommend": "recommend", "/v1/predict/": "predict",
               "/v1/generate/": "generate"}
"""Model routes whose requests count against the in-flight limit (path prefix -> limit key)."""
OVERLOADED = {503: {"model": ErrorBody, "description": "overloaded: retry after the Retry-After header's seconds",
                    "headers": {"Retry-After": {"description": "seconds to wait before retrying",
                                                "schema": {"type": "integer"}}}}}


ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
BODY_ERRORS = {"400": "Content-Length is not a number, or the body cannot be decoded",
               "411": "a Content-Length header is required", "413": f"request body over {MAX_BODY_BYTES} bytes",
               "422": "invalid request: `field` names the first problem"}


def _openapi() -> dict:
    """FastAPI's document, told the truth about errors: every 4xx/5xx the server sends carries
    ErrorBody (FastAPI declares its own HTTPValidationError for 422, which this server never sends),
    and every POST may answer 400, 411, 413 and 422 (the body-size middleware and the validator)."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    for ops in schema["paths"].values():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            if method == "post":
                for code, what in BODY_ERRORS.items():
                    responses.setdefault(code, {"description": what})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = ERROR_REF
                    if code == "422":
                        response["description"] = BODY_ERRORS["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    api.openapi_schema = schema
    return schema


api.openapi = _openapi


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        self.status, self.message, self.field = status, message, field


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex


def _error(request: Request, status: int, message: str, field: str | None = None,
           retry_after_s: int | None = None) -> JSONResponse:
    rid = request_id_of(request)
    body = ErrorBody(request_id=rid, error=message, field=field).model_dump()
    headers = {"X-Request-ID": rid}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(body, status_code=status, headers=headers)


def _shed_key(request: Request) -> str | None:
    if request.method != "POST":
        return None
    path = request.url.path
    return next((k for prefix, k in SHED_ROUTES.items() if path == prefix or (prefix.endswith("/") and path.startswith(prefix))), None)


class RequestMiddleware:
    """Request id, body-size limit, load shedding, Server-Timing and request metrics, as plain ASGI
    (Starlette's `@app.middleware("http")` wraps every request in a task group and a response
    stream: CPU the ingress's one event loop spends on every request, refused ones included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)   # shares scope["state"] with the route's own Request
        request.state.request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        start = time.perf_counter()
        response = _refuse_body(request)
        limit, key = request.app.state.inflight, _shed_key(request)
        if response is None and key is not None and not limit.try_enter(key):
            response = _error(request, 503, f"overloaded: {limit.limit(key)} {key} requests in flight; retry shortly",
                              retry_after_s=request.app.state.retry_after_s)
        if response is not None:
            _record_request(request, response.status_code, (time.perf_counter() - start) * 1000)
            await response(scope, receive, send)
            return
        status = 500   # what the client sees if the app ends without starting a response

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request.state.request_id
                headers["Server-Timing"] = server_timing(getattr(request.state, "timings", None),
                                                         (time.perf_counter() - start) * 1000)
            await send(message)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if key is not None:
                limit.leave(key)
            _record_request(request, status, (time.perf_counter() - start) * 1000)


api.add_middleware(RequestMiddleware)


def server_timing(stages: dict[str, float] | None, app_ms: float) -> str:
    """The W3C Server-Timing header: each stage a route noted in `request.state.timings` (ms), then
    `app`, the whole time in this process (the proxy's and the network's time are the client's
    latency less it)."""
    return ", ".join([*(f"{name};dur={ms:.1f}" for name, ms in (stages or {}).items()), f"app;dur={app_ms:.1f}"])


def _refuse_body(request: Request) -> JSONResponse | None:
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None:
            return _error(request, 411, "a Content-Length header is required")
        if not length.isdigit():
            return _error(request, 400, "Content-Length must be a number of bytes")
        if int(length) > MAX_BODY_BYTES:
            return _error(request, 413, f"request body over {MAX_BODY_BYTES} bytes")
    return None


def _record_request(request: Request, code: int, latency_ms: float) -> None:
    """aisle_requests / _errors / _request_latency_ms, tagged by route template (not the raw path,
    which would make one time series per typo) and by the task the route serves."""
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    task = request.path_params.get("task") if "{task}" in route else ROUTE_TASKS.get(route, "-")
    task = task if task in all_tasks() or task in GEN_TASKS or task in ("-", "retrieval") else "unknown"
    metrics.inc("aisle_requests", route=route, task=task, code=code)
    if code >= 400:
        metrics.inc("aisle_request_errors", route=route, task=task, code=code)
    metrics.observe("aisle_request_latency_ms", latency_ms, route=route, task=task)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
        return _error(request, 422, f"body: {first.get('msg')}", "body")
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path")) or None
    return _error(request, 422, f"{field or 'body'}: {first.get('msg')}", field)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    """Unknown route (404), wrong method (405), undecodable body (400): the same error body as the rest."""
    return _error(request, exc.status_code, str(exc.detail))


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return _error(request, exc.status, exc.message, exc.field)


@api.exception_handler(BackPressureError)
async def _backpressure(request: Request, exc: BackPressureError):
    """A downstream deployment's queue (max_queued_requests) is full: refused at once, not queued."""
    return _error(request, 503, "overloaded: the model's queue is full; retry shortly",
                  retry_after_s=request.app.state.retry_after_s)


@api.exception_handler(RayActorError)  # ActorDiedError, ActorUnavailableError
async def _replica_lost(request: Request, exc: Exception):
    """The replica answering this request died or became unreachable (its node lost): the request
    cannot be finished there; Serve routes the next ones to the replicas left and replaces it."""
    return _error(request, 503, "a model replica was lost while answering; retry shortly",
                  retry_after_s=request.app.state.retry_after_s)


def _authorize(request: Request, expected: str | None, what: str) -> None:
    """Bearer token check: 401 without one, 403 for a wrong one (compared in constant time)."""
    header = request.headers.get("authorization", "")
    if not header:
        raise ApiError(401, f"{what} needs 'Authorization: Bearer <token>'", "authorization")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "the Authorization header must be 'Bearer <token>'", "authorization")
    if expected is None:
        raise ApiError(403, f"{what} is disabled on this server (no token configured)", "authorization")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(403, f"wrong token for {what}", "authorization")


def ingest_auth(request: Request) -> None:
    """A route dependency, so FastAPI checks the token before it validates the body: a caller without
    the token learns nothing of the schema (401/403, never a 422 naming a field)."""
    _authorize(request, request.app.state.ingest_token, "event ingest")


def admin_auth(request: Request) -> None:
    _authorize(request, request.app.state.admin_token, "admin")
