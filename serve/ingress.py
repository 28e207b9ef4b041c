"""HTTP ingress (FastAPI through `@serve.ingress`): routing and validation only.

It resolves `<task>` to the CURRENT version from the registry (cached for `current_ttl_s`, so a
promotion is served within a second, without a restart), checks that task and version exist
before anything reaches a replica (an unknown multiplexed id would otherwise surface as a 500),
and calls the task-model and retriever deployments through their handles. Every response names
the model that produced it and carries a request id (also in the X-Request-ID header).
"""


import time
import uuid

# No `from __future__ import annotations` here: FastAPI must see real types on the route methods
# that @serve.ingress re-wraps, or request bodies turn into query parameters.
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray import serve
from ray.serve.handle import DeploymentHandle

from core.registry import AdapterRegistry, RegistryError
from core.tasks import TASKS
from serve.schemas import (MAX_BODY_BYTES, AdapterVersion, ErrorBody, PredictRequest, PredictResponse, Product,
                           RecommendRequest, RecommendResponse, SearchRequest, SearchResponse, TaskAdapters)

api = FastAPI(title="Aisle", version="0.1.0",
              description="Search, recommendations and predictions from LoRA adapters on one backbone.")
RETRIEVAL_ONLY = "retrieval-only"


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        self.status, self.message, self.field = status, message, field


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex


def _error(request: Request, status: int, message: str, field: str | None = None) -> JSONResponse:
    rid = _request_id(request)
    body = ErrorBody(request_id=rid, error=message, field=field).model_dump()
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": rid})


@api.middleware("http")
async def _request_id_and_size_limit(request: Request, call_next):
    request.state.request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None:
            return _error(request, 411, "a Content-Length header is required")
        if not length.isdigit():
            return _error(request, 400, "Content-Length must be a number of bytes")
        if int(length) > MAX_BODY_BYTES:
            return _error(request, 413, f"request body over {MAX_BODY_BYTES} bytes")
    response = await call_next(request)
    response.headers["X-Request-ID"] = request.state.request_id
    return response


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
        return _error(request, 422, f"body: {first.get('msg')}", "body")
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return _error(request, 422, f"{field or 'body'}: {first.get('msg')}", field)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    """Unknown route (404), wrong method (405), undecodable body (400): the same error body as the rest."""
    return _error(request, exc.status_code, str(exc.detail))


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return _error(request, exc.status, exc.message, exc.field)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, retriever: DeploymentHandle | None, registry: str,
                 current_ttl_s: float = 1.0, rerank_candidates: int = 50):
        self.model, self.retriever = model, retriever
        self.registry = AdapterRegistry(registry)
        self.current_ttl_s, self.rerank_candidates = current_ttl_s, rerank_candidates
        self._current: dict[str, tuple[str | None, float]] = {}

    # ---- version resolution ----------------------------------------------------------------
    def _resolve(self, task: str, version: str | None) -> str:
        if task not in TASKS:
            raise ApiError(404, f"unknown task '{task}' (known: {', '.join(sorted(TASKS))})", "task")
        if version is None:
            version = self._current_version(task)
            if version is None:
                raise ApiError(404, f"task '{task}' has no CURRENT version yet", "task")
            return f"{task}@{version}"
        try:
            self.registry.get(task, version)
        except (RegistryError, ValueError):
            raise ApiError(404, f"unknown version '{version}' of task '{task}'", "version") from None
        return f"{task}@{version}"

    def _current_version(self, task: str) -> str | None:
        cached = self._current.get(task)
        now = time.monotonic()
        if cached is None or cached[1] < now:
            cached = (self.registry.current(task), now + self.current_ttl_s)
            self._current[task] = cached
        return cached[0]

    # ---- routes -----------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "current": {t: self._current_version(t) for t in sorted(TASKS)}}

    @api.post("/v1/predict/{task}", response_model=PredictResponse, responses={404: {"model": ErrorBody}})
    async def predict(self, task: str, body: PredictRequest, request: Request) -> PredictResponse:
        model_id = self._resolve(task, body.version)
        pairs = TASKS[task].pair_input
        if any(isinstance(x, tuple) != pairs for x in body.inputs):  # a mixed list too: one shape per task
            shape = "[query, product text] pairs" if pairs else "plain texts"
            raise ApiError(422, f"inputs: task '{task}' takes {shape}", "inputs")
        preds = await self.model.options(multiplexed_model_id=model_id).predict.remote(list(body.inputs))
        return PredictResponse(request_id=_request_id(request), model=model_id, predictions=preds)

    @api.post("/v1/search", response_model=SearchResponse)
    async def search(self, body: SearchRequest, request: Request) -> SearchResponse:
        candidates = await self._retriever().search.remote(body.query, max(self.rerank_candidates, body.k))
        version = self._current_version("relevance")
        model_id = RETRIEVAL_ONLY
        if version is not None and candidates:
            model_id = f"relevance@{version}"
            pairs = [(body.query, c["text"]) for c in candidates]
            preds = await self.model.options(multiplexed_model_id=model_id).predict.remote(pairs)
            for c, p in zip(candidates, preds):
                c["score"] = p["score"]
            candidates.sort(key=lambda c: -c["score"])
        return SearchResponse(request_id=_request_id(request), model=model_id,
                              products=[Product(**{k: c[k] for k in Product.model_fields if k in c})
                                        for c in candidates[:body.k]])

    @api.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, request: Request) -> RecommendResponse:
        found = await self._retriever().similar.remote(body.product_ids, body.k)
        if "unknown" in found:
            raise ApiError(404, f"unknown product ids: {', '.join(found['unknown'][:5])}", "product_ids")
        return RecommendResponse(request_id=_request_id(request), model=found["model"],
                                 products=[Product(**p) for p in found["products"]])

    @api.get("/v1/adapters", response_model=list[TaskAdapters])
    async def adapters(self) -> list[TaskAdapters]:
        return [self._task_adapters(t) for t in self.registry.tasks()]

    @api.get("/v1/adapters/{task}", response_model=TaskAdapters, responses={404: {"model": ErrorBody}})
    async def task_adapters(self, task: str) -> TaskAdapters:
        if task not in self.registry.tasks():
            raise ApiError(404, f"no adapters registered for task '{task}'", "task")
        return self._task_adapters(task)

    def _task_adapters(self, task: str) -> TaskAdapters:
        current = self.registry.current(task)
        return TaskAdapters(task=task, current=current, versions=[
            AdapterVersion(model_id=v.model_id, version=v.version, current=v.version == current,
                           created_at=v.created_at, metrics=v.metrics, lineage=v.lineage)
            for v in self.registry.versions(task)])

    def _retriever(self) -> DeploymentHandle:
        if self.retriever is None:
            raise ApiError(503, "no catalog embeddings are deployed (run data_pipelines.embed_catalog)")
        return self.retriever
