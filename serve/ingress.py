"""HTTP ingress (FastAPI through `@serve.ingress`): routing and validation only.

It resolves `<task>` to the CURRENT version from the registry (cached for `current_ttl_s`, so a
promotion is served within a second, without a restart), checks that task and version exist
before anything reaches a replica (an unknown multiplexed id would otherwise surface as a 500),
and calls the task-model and retriever deployments through their handles. Every response names
the model that produced it and carries a request id (also in the X-Request-ID header).

Search applies the stream's online click layer (serve.online: the newest snapshot of the ClickLayer
actor, fetched in the background) to the reranked scores; the answer names the snapshot it used.
Admin routes freeze or clear a key of it and turn it off (/v1/online/...); the slow path's admin routes
(promote, rollback, release a held window) live in serve.update_routes.

Overload is refused, not queued: past `max_inflight_search` searches in flight (`max_inflight` on
predict and recommend), or when a downstream queue is full (`max_queued_requests`), the
answer is 503 with Retry-After and the error body, in milliseconds (core.admission). Search scores
come from a cache when the same (version, query, product text) was scored before (core.search).
"""


import asyncio
import os
import time

# No `from __future__ import annotations` here: FastAPI must see real types on the route methods
# that @serve.ingress re-wraps, or request bodies turn into query parameters.
from fastapi import Depends, Request
from ray import serve
from ray.serve.handle import DeploymentHandle

from core.admission import InflightLimit, PaceBudget, answer_within
from core.events import normalize_event, rejection_field
from core.gen_tasks import GEN_TASKS
from core.registry import AdapterRegistry, RegistryError, offline_anchor
from core.registry import model_id as to_model_id
from core.search import FirstStageCache, ScoreCache, blend_scores, pair_text, rerank_candidates, rerank_weights
from core.tasks import all_tasks
from ops import http_front, metrics
from serve.http_api import (OVERLOADED, RETRIEVAL_ONLY, SHED_ROUTES, STREAM_DOWN, ApiError, admin_auth, ingest_auth,
                           request_id_of, api)
from serve.generate_routes import ExemplarBanks, GenerateRoutes
from serve.online import OnlineSnapshots
from serve.update_routes import UpdateRoutes
from serve.schemas import (MAX_GENERATED_TOKENS, AdapterVersion, ErrorBody, EventsRequest, EventsResponse, OnlineEnableRequest,
                           OnlineKeyRequest, OnlineStatus, PredictRequest, PredictResponse, Product,
                           ProductsRequest, ProductsResponse, RecommendRequest, RecommendResponse, SearchRequest,
                           SearchResponse, StatusResponse, TaskAdapters)

STUDENT = "relevance_student"
"""The task of the smaller search rerankers distilled from relevance (`aisle distill`)."""


def student_for(registry: AdapterRegistry, mode: str, version: str) -> str | None:
    """The relevance_student model id that reranks search when relevance@`version` is what search
    would serve, by `mode` (ServeConfig.search_reranker; see Ingress._student), or None."""
    if mode == "relevance":
        return None
    try:
        current = registry.current(STUDENT)
        info = registry.get(STUDENT, current) if current else None
    except RegistryError:
        return None
    if info is None or (mode == "auto" and info.lineage.get("teacher") != to_model_id("relevance", version)):
        return None
    return info.model_id


def _replica_states() -> dict[str, dict[str, int]]:
    """{deployment: {replica state: count}} for every Serve application, from the Serve controller."""
    out: dict[str, dict[str, int]] = {}
    for app in serve.status().applications.values():
        for name, deployment in app.deployments.items():
            out[name] = {str(getattr(state, "value", state)): n for state, n in deployment.replica_states.items()}
    return out


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256,
                  max_queued_requests=512)
@serve.ingress(api)
class Ingress(GenerateRoutes, UpdateRoutes):
    def __init__(self, model: DeploymentHandle, retriever: DeploymentHandle | None, registry: str,
                 recommender: DeploymentHandle | None = None, current_ttl_s: float = 1.0, rerank_candidates: int = 50, ensemble_offline_weight: float = 0.0,
                 ingest_token: str | None = None, admin_token: str | None = None, first_stage_lexical_weight: float = 0.0,
                 rerank_words: int = 0, score_cache_entries: int = 0, first_stage_cache_entries: int = 0,
                 max_inflight_search: int = 0,
                 max_inflight: int = 0, retry_after_s: int = 1, online_refresh_s: float = 0.0,
                 search_reranker: str = "relevance", rerank_budget_ms: float = 0.0, rerank_budget_pace: float = 0.0,
                 generator: DeploymentHandle | None = None, max_generated_tokens: int = MAX_GENERATED_TOKENS,
                 max_prompt_chars: int = 8000):
        self.model, self.retriever, self.recommender = model, retriever, recommender
        self.generator, self.max_generated_tokens, self.max_prompt_chars = generator, max_generated_tokens, max_prompt_chars
        self.registry = AdapterRegistry(registry)
        self.exemplar_banks = ExemplarBanks(self.registry)
        self.current_ttl_s, self.rerank_candidates = current_ttl_s, rerank_candidates
        self.offline_weight = ensemble_offline_weight
        self.lexical_weight, self.rerank_words = first_stage_lexical_weight, rerank_words
        self.scores = ScoreCache(score_cache_entries)
        self.first_stage = FirstStageCache(first_stage_cache_entries)
        self.online = OnlineSnapshots(online_refresh_s)
        api.state.inflight = InflightLimit(max_inflight, {"search": max_inflight_search})
        api.state.retry_after_s = retry_after_s
        # The same limits at the HTTP front (HAProxy refuses there, before this event loop sees the request).
        http_front.publish_limits(SHED_ROUTES, {key: api.state.inflight.limit(key) for key in set(SHED_ROUTES.values())},
                                  retry_after_s)
        # Read by the auth dependencies (ingest_auth, admin_auth); one Ingress per replica process.
        api.state.ingest_token = os.environ.get("AISLE_INGEST_TOKEN") or ingest_token
        api.state.admin_token = os.environ.get("AISLE_ADMIN_TOKEN") or admin_token
        self._current: dict[str, tuple[str | None, float]] = {}
        self._offline: dict[str, tuple[str | None, float]] = {}
        self.search_reranker = search_reranker
        # no cache, no budget: a late scoring would fill nothing, its work would be lost
        self.budget = PaceBudget(rerank_budget_ms / 1000 if score_cache_entries else 0.0, factor=rerank_budget_pace)
        self.late = 0   # searches answered in the first stage's order: the reranker missed the budget or was behind
        self.late_pending, self.max_late = 0, max(1, max_inflight_search)   # late scorings still going on
        self._students: dict[str, tuple[str | None, float]] = {}
        self._known: dict[str, tuple[bool, float]] = {}  # model ids checked to exist on disk
        self._retriever_status: tuple[dict, float] | None = None
        self._status_poll: asyncio.Future | None = None

    # ---- version resolution ----------------------------------------------------------------
    def _resolve(self, task: str, version: str | None, tasks=None, hint: str = "") -> str:
        """`<task>@<version>` (CURRENT when `version` is None) of one of `tasks` (default: the
        encoder tasks), or a 404 naming the task or the version; `hint` follows "no CURRENT"."""
        tasks = all_tasks() if tasks is None else tasks
        if task not in tasks:
            raise ApiError(404, f"unknown task '{task}' (known: {', '.join(sorted(tasks))})", "task")
        if version is None:
            version = self._current_version(task)
            if version is None:
                raise ApiError(404, f"task '{task}' has no CURRENT version yet{hint}", "task")
            return to_model_id(task, version)
        wanted = to_model_id(task, version)
        self._cached(self._known, wanted, 10 * self.current_ttl_s, lambda: self._check_version(task, version))
        return wanted

    def _check_version(self, task: str, version: str) -> bool:
        try:
            self.registry.get(task, version)
        except (RegistryError, ValueError):
            raise ApiError(404, f"unknown version '{version}' of task '{task}'", "version") from None
        return True

    @staticmethod
    def _cached(cache: dict, key: str, ttl_s: float, load):
        """`load()`'s value for `key`, read again once it is `ttl_s` old (a load that raises caches nothing)."""
        cached = cache.get(key)
        now = time.monotonic()
        if cached is None or cached[1] < now:
            cached = cache[key] = (load(), now + ttl_s)
        return cached[0]

    def _current_version(self, task: str) -> str | None:
        return self._cached(self._current, task, self.current_ttl_s, lambda: self._read_current(task))

    def _read_current(self, task: str) -> str | None:
        version = self.registry.current(task)
        metrics.set_gauge("aisle_current_version", metrics.version_number(version), task=task)
        return version

    def _offline_version(self, task: str) -> str | None:
        """The newest version trained offline (lineage trigger 'offline'): the ensemble's anchor."""
        return self._cached(self._offline, task, 10 * self.current_ttl_s, lambda: self._read_offline(task))

    def _read_offline(self, task: str) -> str | None:
        try:
            anchor = offline_anchor(self.registry, task)
        except RegistryError:
            return None
        return anchor.version if anchor else None

    def _student(self, version: str) -> str | None:
        """The relevance_student model id search reranks with instead of relevance@`version`, or None.
        `search_reranker` auto: the student's CURRENT, when it was distilled from exactly that version
        (a student of an older version is not what the stream promoted); relevance_student: its
        CURRENT whatever its teacher; relevance: never."""
        if self.search_reranker == "relevance":
            return None
        return self._cached(self._students, version, self.current_ttl_s, lambda: self._read_student(version))

    def _read_student(self, version: str) -> str | None:
        return student_for(self.registry, self.search_reranker, version)

    def _actor(self, getter):
        try:
            return getter()
        except Exception:  # noqa: BLE001 - a missing named actor: the stream was not started
            raise ApiError(503, STREAM_DOWN) from None

    # ---- routes -----------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "current": {t: self._current_version(t) for t in sorted([*all_tasks(), *GEN_TASKS])}}

    @api.get("/v1/status", response_model=StatusResponse)
    async def status(self, request: Request) -> StatusResponse:
        """Replicas by deployment and state, CURRENT per task, the feedback log's depth and consumers."""
        replicas = await asyncio.to_thread(_replica_states)
        stream = None
        try:
            from actors.feedback_log import get_feedback_log

            stats = await get_feedback_log().stats.remote()
            stream = {"log_end_offset": stats["end_offset"],
                      "consumers": {n: c["offset"] for n, c in stats["consumers"].items()}}
        except Exception:  # noqa: BLE001 - no stream running: the status says so with null
            pass
        return StatusResponse(request_id=request_id_of(request), replicas=replicas, stream=stream,
                              current={t: self._current_version(t) for t in sorted([*all_tasks(), *GEN_TASKS])})

    @api.post("/v1/predict/{task}", response_model=PredictResponse, responses={404: {"model": ErrorBody}, **OVERLOADED})
    async def predict(self, task: str, body: PredictRequest, request: Request) -> PredictResponse:
        model_id = self._resolve(task, body.version)
        pairs = all_tasks()[task].pair_input
        if any(isinstance(x, tuple) != pairs for x in body.inputs):  # a mixed list too: one shape per task
            shape = "[query, product text] pairs" if pairs else "plain texts"
            raise ApiError(422, f"inputs: task '{task}' takes {shape}", "inputs")
        preds = await self.model.options(multiplexed_model_id=model_id).predict.remote(list(body.inputs))
        return PredictResponse(request_id=request_id_of(request), model=model_id, predictions=preds)

    @api.post("/v1/search", response_model=SearchResponse, responses={404: {"model": ErrorBody}, **OVERLOADED})
    async def search(self, body: SearchRequest, request: Request) -> SearchResponse:
        """The first stage's top max(k, rerank_candidates) (kept per query until the catalog changes),
        its top rerank_candidates reranked by the relevance adapter (scores cached per version, query
        and product text) and moved by the online click layer's snapshot, the rest after them. Its
        stages' times go to the Server-Timing header."""
        self.online.start()
        start = time.perf_counter()
        retriever, n = await self._retriever(), max(self.rerank_candidates, body.k)
        candidates = self.first_stage.get(body.query, n)
        if candidates is None:
            found = await retriever.first_stage.remote(body.query, n, self.lexical_weight)
            self.first_stage.put(body.query, n, found["catalog"], found["candidates"])
            candidates = found["candidates"]
        request.state.timings = {"first_stage": (time.perf_counter() - start) * 1000}
        version = self._current_version("relevance") if body.version is None else body.version
        if body.version is not None:
            self._resolve("relevance", body.version)
        model_id, ensemble, online, n_reranked = RETRIEVAL_ONLY, None, None, 0
        if version is not None and candidates:
            student = self._student(version) if body.version is None else None
            offline = self._offline_version("relevance") if self.offline_weight > 0 and body.version is None else None
            weights, ensemble = rerank_weights(to_model_id("relevance", version), student,
                                               to_model_id("relevance", offline) if offline else None, self.offline_weight)
            model_id = next(iter(weights))
            reranked = [(c["product_id"], pair_text(c["text"], self.rerank_words))
                        for c in candidates[:self.rerank_candidates]]
            start = time.perf_counter()
            scores = await self._scores_within_budget(weights, body.query, reranked, request.state.timings)
            request.state.timings["rerank"] = (time.perf_counter() - start) * 1000
            if scores is not None:
                served = scores
                if body.online:
                    served, online = self.online.apply(body.query, scores)
                candidates = rerank_candidates(candidates, served, scores)
                n_reranked = len(reranked)
        return SearchResponse(request_id=request_id_of(request), model=model_id, ensemble=ensemble, online=online,
                              reranked=n_reranked,
                              products=[Product(**{k: c[k] for k in Product.model_fields if k in c})
                                        for c in candidates[:body.k]])

    async def _scores_within_budget(self, weights: dict[str, float], query: str, pairs: list[tuple[str, str]],
                                    timings: dict[str, float] | None = None) -> dict[str, float] | None:
        """{product id: the weighted reranker score} of every pair; None when they are not all there
        within the budget (core.admission.PaceBudget: rerank_budget_ms, or `rerank_budget_pace` times
        the reranker's pace at its best if that is longer). Then the scoring goes on and fills the
        cache for the searches after it. While `max_late` late scorings go on the reranker is behind:
        a search whose scores are not all cached is answered in first-stage order at once and starts
        no scoring (it would only lengthen the queue), so an overload costs accepted searches their
        reranking, not their latency, and past the in-flight limit it meets 503s."""
        budget = self.budget.budget_s()
        if budget is not None and self.late_pending >= self.max_late \
                and not all(self.scores.holds(m, query, pairs) for m in weights):
            self.late += 1
            if timings is not None:
                timings["budget"] = 0.0
            return None
        work = asyncio.ensure_future(asyncio.gather(*(self._rerank_scores(m, query, pairs) for m in weights)))
        if budget is not None and timings is not None:
            timings["budget"] = budget * 1000   # absent from Server-Timing: the search waited without one
        finished, results = await answer_within(work, budget, self._late)
        return blend_scores(weights, results, [p for p, _ in pairs]) if finished else None

    def _late(self, work: asyncio.Future) -> None:
        """A search answered without its late scores: counted until they end (their error, if any, is
        retrieved: the search was answered; its scores are simply not cached)."""
        self.late += 1
        self.late_pending += 1

        def done(work: asyncio.Future) -> None:
            self.late_pending -= 1
            if not work.cancelled():
                work.exception()
        work.add_done_callback(done)

    async def _rerank_scores(self, model_id: str, query: str, products: list[tuple[str, str]]) -> dict[str, float]:
        """{product id: adapter `model_id`'s score} for (product id, pair text): cached ones from the
        cache, those another search is scoring awaited from it, the rest in one request to the task
        model (batched there with other searches')."""
        async def compute(missing: list[tuple[str, str]]) -> list[float]:
            start = time.perf_counter()
            preds = await self.model.options(multiplexed_model_id=model_id).predict.remote(
                [(query, text) for _, text in missing])
            if len(missing) >= self.rerank_candidates:   # a whole search's scoring: the pace it can keep
                self.budget.record(time.perf_counter() - start)
            return [p["score"] for p in preds]

        return await self.scores.scores(model_id, query, products, compute)

    def clear_caches(self) -> dict:
        """Empties the score cache (a handle method for benchmarks and operators, not a route); returns its stats."""
        stats = {**self.scores.stats(), "late": self.late, "first_stage_hits": self.first_stage.hits,
                 "first_stage_misses": self.first_stage.misses}
        self.scores.clear()
        self.first_stage.clear()
        self.late = 0
        return stats

    def cache_stats(self) -> dict:
        return {**self.scores.stats(), "late": self.late, "first_stage_hits": self.first_stage.hits,
                "first_stage_misses": self.first_stage.misses}

    @api.post("/v1/recommend", response_model=RecommendResponse, responses={404: {"model": ErrorBody}, **OVERLOADED})
    async def recommend(self, body: RecommendRequest, request: Request) -> RecommendResponse:
        """With the trained recommend adapter when there is one (stored history + live session, or
        its item tower for similar items); else the frozen catalog embeddings."""
        if body.user_id is not None:
            return await self._recommend_for_user(body.user_id, body.k, request_id_of(request))
        if self.recommender is not None:
            found = await self.recommender.similar.remote(body.product_ids, body.k)
            if "products" in found:
                return RecommendResponse(request_id=request_id_of(request), model=found["model"],
                                         products=[Product(**p) for p in found["products"]])
        found = await (await self._retriever()).similar.remote(body.product_ids, body.k)
        if "unknown" in found:
            raise ApiError(404, f"unknown product ids: {', '.join(found['unknown'][:5])}", "product_ids")
        return RecommendResponse(request_id=request_id_of(request), model=found["model"],
                                 products=[Product(**p) for p in found["products"]])

    async def _live_recent(self, user_id: str) -> list[str]:
        from actors.user_sessions import get_user_sessions

        try:
            sessions = get_user_sessions()
        except Exception:  # noqa: BLE001 - no stream: no live session
            return []
        return list(reversed(await sessions.recent.remote(user_id, 20)))   # newest last

    @api.post("/v1/products", response_model=ProductsResponse, dependencies=[Depends(admin_auth)],
              responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def upsert_products(self, body: ProductsRequest, request: Request) -> ProductsResponse:
        """Add products or change their text (admin token): embedded and returned by /v1/search and
        /v1/recommend when this answers. Logged durably by each catalog before it is applied."""
        items = [{"item_id": p.product_id, "title": p.title,
                  "text": " ".join(t for t in (p.title, p.description) if t.strip())} for p in body.products]
        done = await self._catalog_call("upsert", items)
        return ProductsResponse(request_id=request_id_of(request), catalogs={k: v["items"] for k, v in done.items()})

    @api.delete("/v1/products/{product_id}", response_model=ProductsResponse, dependencies=[Depends(admin_auth)],
                responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
                           503: {"model": ErrorBody}})
    async def delete_product(self, product_id: str, request: Request) -> ProductsResponse:
        """Remove a product from every catalog (admin token)."""
        done = await self._catalog_call("delete", [product_id])
        removed = sum(v["removed"] for v in done.values())
        if not removed:
            raise ApiError(404, f"unknown product id: {product_id[:80]}", "product_id")
        return ProductsResponse(request_id=request_id_of(request), catalogs={k: v["items"] for k, v in done.items()},
                                removed=removed)

    async def _catalog_call(self, method: str, arg) -> dict[str, dict]:
        """The change in every catalog that is up ({'search': ..., 'recommend': ...}); 503 when none is."""
        targets = {"search": self.retriever, "recommend": self.recommender}
        calls = {name: getattr(handle, method).remote(arg) for name, handle in targets.items() if handle is not None}
        done = {name: await call for name, call in calls.items()}
        done = {name: answer for name, answer in done.items() if "missing" not in answer}
        self.first_stage.observe(done.get("search", {}).get("catalog"))
        if not done:
            raise ApiError(503, "no catalog is served: run `aisle embed` (search) or train the recommend task", "products")
        return done

    async def _recommend_for_user(self, user_id: str, k: int, request_id: str) -> RecommendResponse:
        from actors.user_sessions import get_user_sessions

        if self.recommender is not None:
            found = await self.recommender.for_user.remote(user_id, await self._live_recent(user_id), k)
            if found.get("products"):
                return RecommendResponse(request_id=request_id, model=found["model"],
                                         products=[Product(**p) for p in found["products"]])
        try:
            sessions = get_user_sessions()
        except Exception:  # noqa: BLE001 - no stream, so no shopper history: nothing is known of them
            raise ApiError(404, f"no activity known for this user ({STREAM_DOWN})", "user_id") from None
        recent = await sessions.recent.remote(user_id, 20)
        if recent:
            found = await (await self._retriever()).similar.remote(recent, k, skip_unknown=True)
            if found["products"]:
                return RecommendResponse(request_id=request_id, model=f"sessions+{found['model']}",
                                         products=[Product(**p) for p in found["products"]])
        popular = await (await self._retriever()).lookup.remote(await sessions.popular.remote(k, recent))
        if not popular:
            raise ApiError(404, "no recent activity for this user and nothing popular yet", "user_id")
        return RecommendResponse(request_id=request_id, model="sessions:popular", products=[Product(**p) for p in popular])

    # ---- stream and admin (bearer tokens) ------------------------------------------------------
    @api.post("/v1/events", response_model=EventsResponse, dependencies=[Depends(ingest_auth)],
              responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def events(self, body: EventsRequest, request: Request) -> EventsResponse:
        from actors.feedback_log import get_feedback_log

        raw = [e.model_dump(exclude_none=True) for e in body.events]
        now = time.time()
        for i, event in enumerate(raw):  # the log's own validation, first: a bad batch is refused whole
            try:
                normalize_event(event, salt="", now=now)
            except ValueError as e:
                metrics.inc("aisle_events", len(raw), outcome="rejected")
                field = f"events.{i}.{rejection_field(str(e))}"
                raise ApiError(422, f"{field}: {str(e).split(': ', 1)[-1]}", field) from None
        result = await self._actor(get_feedback_log).append.remote(raw)
        return EventsResponse(request_id=request_id_of(request), new=result["new"], duplicate=result["duplicate"],
                              flagged=result["flagged"], end_offset=result["end_offset"])

    @api.get("/v1/online", response_model=OnlineStatus, dependencies=[Depends(admin_auth)],
             responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def online_status(self, request: Request) -> OnlineStatus:
        """The online click layer: the offset it has read, its snapshot, active and frozen keys; and the
        snapshot this replica serves."""
        status = await self._click_layer().status.remote()
        held = self.online.snapshot
        return OnlineStatus(request_id=request_id_of(request), serving=held.version if held else None, **status)

    @api.post("/v1/online/freeze", response_model=OnlineStatus, dependencies=[Depends(admin_auth)],
              responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody}})
    async def online_freeze(self, body: OnlineKeyRequest, request: Request) -> OnlineStatus:
        """Freezes a key (its effect leaves the next snapshot; audited)."""
        await self._click_layer().freeze.remote(body.key, body.reason)
        return await self._online_changed(request)

    @api.post("/v1/online/clear", response_model=OnlineStatus, dependencies=[Depends(admin_auth)],
              responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody}})
    async def online_clear(self, body: OnlineKeyRequest, request: Request) -> OnlineStatus:
        """Drops a key's evidence and status, frozen or not: it starts afresh (audited)."""
        await self._click_layer().clear.remote(body.key)
        return await self._online_changed(request)

    @api.post("/v1/online/enabled", response_model=OnlineStatus, dependencies=[Depends(admin_auth)],
              responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def online_enabled(self, body: OnlineEnableRequest, request: Request) -> OnlineStatus:
        """Turns the layer on or off at serving time (evidence keeps accruing; audited)."""
        await self._click_layer().set_enabled.remote(body.enabled)
        return await self._online_changed(request)

    async def _online_changed(self, request: Request) -> OnlineStatus:
        self.online.start()
        await self.online.refresh()  # this replica serves the change at once; others within refresh_s
        return await self.online_status(request)

    def _click_layer(self):
        from actors.click_layer import get_click_layer

        return self._actor(get_click_layer)

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

    async def _retriever(self) -> DeploymentHandle:
        """The retriever's handle; 503 naming the missing step while it has no catalog embeddings.
        Its status is asked once, then again in the background once per current_ttl_s, so `aisle
        embed` and a redeploy are seen, and a catalog changed through another ingress replica empties
        this one's first-stage cache within about that long."""
        if self.retriever is None:
            raise ApiError(503, "no catalog embeddings are deployed (run `aisle embed`)")
        cached = self._retriever_status
        if cached is None:
            await self._poll_retriever()
            cached = self._retriever_status
        elif cached[1] < time.monotonic() and self._status_poll is None:
            self._status_poll = asyncio.ensure_future(self._poll_retriever(background=True))
        if not cached[0]["ready"]:
            raise ApiError(503, cached[0]["missing"])
        return self.retriever

    async def _poll_retriever(self, background: bool = False) -> None:
        """The retriever's status, asked now; in the `background` a failure keeps the last one (the
        next request asks again)."""
        try:
            status = await self.retriever.status.remote()
            self.first_stage.observe(status.get("catalog"))
            self._retriever_status = (status, time.monotonic() + self.current_ttl_s)
        except Exception:  # noqa: BLE001 - a retriever restarting: its last status stands meanwhile
            if not background:
                raise
        finally:
            self._status_poll = None
