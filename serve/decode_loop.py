"""The Generator's scheduler: one continuous decode per replica that requests join and leave between
steps (`core.decoding.DecodeBatch`), plain and streamed alike.

Each turn of the loop admits the requests that wait (up to `max_batch` rows, prefilled together),
runs one decode step over every row, then hands out what happened: the new text of streamed rows,
the answers of finished ones. A request never waits for another one's answer to end, only for the
step in progress, so a closed-loop client's next request joins the running decode a round trip
later instead of forming a batch of its own.

One adapter at a time (the peft model's active adapter is the batch's): requests for the active
model id join while no request for another one waits longer; then the running rows finish, the
loop switches to the oldest waiting request's model id and goes on. The model work runs in a
worker thread under the owner's lock, one turn at a time, so loading an adapter (under the same
lock) happens between two steps. No Ray: plain asyncio, unit-tested with a tiny model.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable


@dataclass
class _Request:
    model_id: str
    prompt: str
    limit: int
    future: asyncio.Future
    pieces: asyncio.Queue | None = None
    """Streamed requests get their text here as it grows; None at the end."""


@dataclass
class DecodeStats:
    steps: int = 0
    rows: int = 0
    """Rows summed over steps: rows / steps is the mean batch a decode step ran."""
    admitted: int = 0
    switches: int = 0
    recent: list[int] = field(default_factory=list)


class DecodeLoop:
    """Drives a `DecodeBatch` for many concurrent callers (see the module's doc).

    `new_batch(model_id)` is called in the worker thread when the loop starts a decode for a model id
    (it activates the adapter and returns an empty DecodeBatch); `lock` is held around each turn;
    `on_step(model_id, rows)` (metrics) before each decode step, in the worker thread.
    """

    def __init__(self, new_batch: Callable[[str], object], lock: asyncio.Lock, max_batch: int = 8,
                 wait_s: float = 0.01, on_step: Callable[[str, int], None] | None = None):
        self.new_batch, self.lock, self.max_batch, self.wait_s = new_batch, lock, max_batch, wait_s
        self.on_step = on_step
        self.waiting: list[_Request] = []
        self.batch = None
        self.model_id: str | None = None
        self.running: dict[int, _Request] = {}
        self.task: asyncio.Task | None = None
        self.stats = DecodeStats()

    async def generate(self, model_id: str, prompt: str, limit: int):
        """The finished `lm.Generation` of one request."""
        request = self._enqueue(model_id, prompt, limit, stream=False)
        return await request.future

    async def stream(self, model_id: str, prompt: str, limit: int) -> AsyncIterator[str]:
        """The answer's text, piece by piece as the tokens come; raises what generation raised."""
        request = self._enqueue(model_id, prompt, limit, stream=True)
        while (piece := await request.pieces.get()) is not None:
            yield piece
        await request.future  # re-raises a failure

    def _enqueue(self, model_id: str, prompt: str, limit: int, stream: bool) -> _Request:
        loop = asyncio.get_running_loop()
        request = _Request(model_id, prompt, limit, loop.create_future(), asyncio.Queue() if stream else None)
        self.waiting.append(request)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return request

    def _admissible(self) -> list[_Request]:
        """The waiting requests that join at this turn."""
        room = self.max_batch - len(self.running)
        if room <= 0 or not self.waiting:
            return []
        if self.running and self.waiting[0].model_id != self.model_id:
            return []  # another adapter waits first: let the running rows finish, then switch
        model_id = self.model_id if self.running else self.waiting[0].model_id
        return [r for r in self.waiting if r.model_id == model_id][:room]

    async def _run(self) -> None:
        while self.waiting or self.running:
            if not self.running and len(self.waiting) < self.max_batch:
                await asyncio.sleep(self.wait_s)  # the model was idle: let a burst arrive together
            joining = self._admissible()
            taken = {id(r) for r in joining}
            self.waiting = [r for r in self.waiting if id(r) not in taken]
            try:
                async with self.lock:
                    events = await asyncio.to_thread(self._turn, joining)
            except Exception as e:  # noqa: BLE001 - handed to every request in the decode, which Serve answers
                for request in [*self.running.values(), *joining]:
                    self._fail(request, e)
                self.running, self.batch = {}, None
                continue
            self._deliver(*events)

    def _turn(self, joining: list[_Request]):
        """In the worker thread: admit `joining`, then one step; (finished, pieces)."""
        finished = []
        if joining:
            if not self.running:
                if self.model_id != joining[0].model_id:
                    self.stats.switches += 1
                self.model_id = joining[0].model_id
                self.batch = self.new_batch(self.model_id)
            for request in joining:
                self.running[id(request)] = request
            self.stats.admitted += len(joining)
            finished += self.batch.admit([r.prompt for r in joining], [r.limit for r in joining],
                                         [id(r) for r in joining])
        if len(self.batch):
            self.stats.steps += 1
            self.stats.rows += len(self.batch)
            self.stats.recent = (self.stats.recent + [len(self.batch)])[-1000:]
            if self.on_step is not None:
                self.on_step(self.model_id, len(self.batch))
            finished += self.batch.step()
        streamed = {tag for tag, r in self.running.items() if r.pieces is not None}
        return finished, self.batch.pieces(streamed) if streamed else []

    def _deliver(self, finished, pieces) -> None:
        for tag, piece in pieces:
            request = self.running.get(tag)
            if request is not None and request.pieces is not None:
                request.pieces.put_nowait(piece)
        for done in finished:
            request = self.running.pop(done.tag)
            if request.pieces is not None:
                if done.rest:
                    request.pieces.put_nowait(done.rest)
                request.pieces.put_nowait(None)
            if not request.future.done():
                request.future.set_result(done.generation)

    @staticmethod
    def _fail(request: _Request, error: Exception) -> None:
        if request.pieces is not None:
            request.pieces.put_nowait(None)
        if not request.future.done():
            request.future.set_exception(error)
