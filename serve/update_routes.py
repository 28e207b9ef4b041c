"""The slow path's admin routes of the ingress (a mixin `serve.ingress.Ingress` inherits; Serve finds
inherited routes through the class's MRO), each behind the admin token:

- `POST /v1/adapters/{task}/promote` and `/rollback`: move a task's CURRENT pointer by hand;
- `POST /v1/updates/{update_id}/release`: a window the stream held untrained (a traffic surge, the
  anomaly screen's share, accounts the click layer quarantined) goes to the UpdateCoordinator to be
  trained from its clicks and gated like any other window; the answer is 202, the decision an audit
  line (`released` names the held update) like every update's.
"""

# No `from __future__ import annotations`: FastAPI reads these types at run time.
from fastapi import Depends, Path, Request

from core.registry import RegistryError, UnknownTaskError, UnknownVersionError
from serve.http_api import STREAM_DOWN, ApiError, admin_auth, api, request_id_of
from serve.schemas import ErrorBody, PointerResponse, PromoteRequest, ReleaseRequest, ReleaseResponse, RollbackRequest

ADMIN_ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}
UPDATE_ID = r"^update-[0-9]{5}(-[0-9a-z]+)*$"


class UpdateRoutes:
    """Needs from the class that mixes it in: `registry` (an AdapterRegistry), `_current` (the
    CURRENT cache, a dict by task) and `_actor(getter)` (a named actor, or 503 when the stream is down)."""

    @api.post("/v1/adapters/{task}/promote", response_model=PointerResponse, dependencies=[Depends(admin_auth)],
              responses={**ADMIN_ERRORS, 404: {"model": ErrorBody}})
    async def promote(self, task: str, body: PromoteRequest, request: Request) -> PointerResponse:
        previous = self.registry.current(task) if task in self.registry.tasks() else None
        try:
            self.registry.promote(task, body.version, reason=f"admin: {body.reason}".strip())
        except (UnknownTaskError, UnknownVersionError, ValueError):
            raise ApiError(404, f"unknown version '{body.version}' of task '{task}'", "version") from None
        self._current.pop(task, None)
        return PointerResponse(request_id=request_id_of(request), task=task, previous=previous, current=body.version)

    @api.post("/v1/adapters/{task}/rollback", response_model=PointerResponse, dependencies=[Depends(admin_auth)],
              responses={**ADMIN_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    async def rollback(self, task: str, body: RollbackRequest, request: Request) -> PointerResponse:
        if task not in self.registry.tasks():
            raise ApiError(404, f"no adapters registered for task '{task}'", "task")
        previous = self.registry.current(task)
        try:
            current = self.registry.rollback(task, reason=f"admin: {body.reason}".strip())
        except RegistryError as e:
            raise ApiError(409, str(e), "task") from None
        self._current.pop(task, None)
        return PointerResponse(request_id=request_id_of(request), task=task, previous=previous, current=current)

    @api.post("/v1/updates/{update_id}/release", response_model=ReleaseResponse, status_code=202,
              dependencies=[Depends(admin_auth)],
              responses={**ADMIN_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody, "description": STREAM_DOWN}})
    async def release(self, body: ReleaseRequest, request: Request,
                      update_id: str = Path(pattern=UPDATE_ID, max_length=64,
                                            description="a held update's id, as its audit line names it")) -> ReleaseResponse:
        """Trains a held window from its clicks and gates it like any other (admin token). 202: queued
        behind the update in flight; its decision is an audit line whose `released` names this id.
        404: no such update; 409: it was not held, is released already, or its events left the log."""
        from actors.update_coordinator import get_coordinator

        answer = await self._actor(get_coordinator).release.remote(update_id, body.reason)
        if "error" in answer:
            raise ApiError(answer["status"], answer["error"], "update_id")
        return ReleaseResponse(request_id=request_id_of(request), update_id=update_id, queued=answer["queued"])
