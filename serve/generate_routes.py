"""`POST /v1/generate/{task}`: the generation route of the ingress (a mixin `serve.ingress.Ingress`
inherits; Serve finds inherited routes through the class's MRO).

Validates the request against the task's declared fields (an unknown or missing field is a 422
naming it), refuses what is past the server's limits with 413 (max_tokens over
`max_generated_tokens`, a prompt over `max_prompt_chars`), resolves `<task>` to its CURRENT
version and calls the Generator deployment with that multiplexed id: a JSON answer, or with
`stream: true` server-sent events as the tokens come. A version trained to edit the nearest
training answer (`core.gen_exemplars`) gets the prompt it was trained on: the answer quoted from
its own exemplar bank (`ExemplarBanks`: read once per version, off the event loop).
"""


import asyncio
import json
from collections import OrderedDict

# No `from __future__ import annotations`: FastAPI reads these types at run time.
from fastapi import Request
from fastapi.responses import StreamingResponse

from core.gen_exemplars import BANK_FILE, ExemplarBank
from core.gen_tasks import GEN_TASKS
from core.registry import parse_model_id
from serve.http_api import OVERLOADED, ApiError, api, request_id_of
from serve.schemas import ErrorBody, GenerateRequest, GenerateResponse

STREAM_MEDIA = "text/event-stream"


def check_fields(task: str, fields: dict[str, str]) -> dict[str, str]:
    """The request's fields for `task`, or a 422 naming the first unknown or missing one."""
    declared = GEN_TASKS[task].fields
    unknown = sorted(set(fields) - set(declared))
    if unknown:
        raise ApiError(422, f"input.{unknown[0]}: not a field of task '{task}' (its fields: {', '.join(declared)})",
                       f"input.{unknown[0]}")
    first = declared[0]
    if not fields.get(first, "").strip():
        raise ApiError(422, f"input.{first}: required for task '{task}' and must not be blank", f"input.{first}")
    return fields


MAX_BANKS = 4  # exemplar banks kept in memory (one per version asked for, the least recent dropped)


class ExemplarBanks:
    """Each version's exemplar bank (None for a version without one), read once off the event loop:
    requests that ask for a version at once share its one read; past `size` versions the least
    recently asked is dropped; a failed read is not kept (the next request reads again)."""

    def __init__(self, registry, size: int = MAX_BANKS):
        self.registry, self.size = registry, size
        self._banks: OrderedDict[str, asyncio.Future] = OrderedDict()

    async def get(self, model_id: str) -> ExemplarBank | None:
        read = self._banks.get(model_id)
        if read is None:
            read = self._banks[model_id] = asyncio.ensure_future(asyncio.to_thread(self._read, model_id))
            while len(self._banks) > self.size:
                self._banks.popitem(last=False)
        self._banks.move_to_end(model_id)
        try:
            return await asyncio.shield(read)
        except Exception:
            if self._banks.get(model_id) is read:
                del self._banks[model_id]
            raise

    def _read(self, model_id: str) -> ExemplarBank | None:
        task, version = parse_model_id(model_id)
        directory = self.registry.get(task, version).local_dir()
        return ExemplarBank.load(str(directory)) if (directory / BANK_FILE).exists() else None


class GenerateRoutes:
    """Needs from the class that mixes it in: `generator` (a DeploymentHandle or None),
    `_resolve(task, version, tasks, hint)`, `exemplar_banks` (an `ExemplarBanks`),
    `max_generated_tokens` and `max_prompt_chars`."""

    async def _prompt(self, task: str, model_id: str, fields: dict[str, str]) -> str:
        """The task's prompt for the request, quoting the version's nearest training answer when the
        version keeps an exemplar bank. The request's own part is held to `max_prompt_chars` (413);
        the quoted answer is the server's, not counted."""
        gen = GEN_TASKS[task]
        prompt = gen.prompt_for(fields)
        if len(prompt) > self.max_prompt_chars:
            raise ApiError(413, f"input: the prompt is {len(prompt)} characters, at most {self.max_prompt_chars}", "input")
        bank = await self.exemplar_banks.get(model_id) if gen.exemplar_field else None
        if bank is None:
            return prompt
        group = fields.get(gen.exemplar_group) if gen.exemplar_group else None
        return gen.prompt_for(fields, bank.answers([fields.get(gen.exemplar_field, "")], [group])[0])

    def _resolve_generation(self, task: str, version: str | None) -> str:
        if self.generator is None:
            raise ApiError(404, "generation is not deployed on this server", "task")
        return self._resolve(task, version, GEN_TASKS, f" (train one: aisle train {task})")

    @api.post("/v1/generate/{task}", response_model=GenerateResponse,
              responses={404: {"model": ErrorBody}, **OVERLOADED,
                         200: {"content": {STREAM_MEDIA: {"schema": {"type": "string"}}},
                               "description": "JSON, or server-sent events when `stream` is true"}})
    async def generate(self, task: str, body: GenerateRequest, request: Request):
        model_id = self._resolve_generation(task, body.version)
        fields = check_fields(task, body.input)
        limit = self.max_generated_tokens
        max_tokens = body.max_tokens or min(GEN_TASKS[task].max_new_tokens, limit)
        if max_tokens > limit:
            raise ApiError(413, f"max_tokens: at most {limit} on this server", "max_tokens")
        prompt = await self._prompt(task, model_id, fields)
        rid = request_id_of(request)
        handle = self.generator.options(multiplexed_model_id=model_id)
        if not body.stream:
            out = await handle.generate.remote(prompt, max_tokens)
            return GenerateResponse(request_id=rid, model=model_id, **out)
        pieces = handle.options(stream=True).stream.remote(prompt, max_tokens)

        async def events():
            n = 0
            async for piece in pieces:
                n += 1
                yield f"data: {json.dumps({'text': piece})}\n\n"
            yield f"data: {json.dumps({'done': True, 'model': model_id, 'request_id': rid, 'pieces': n})}\n\n"

        return StreamingResponse(events(), media_type=STREAM_MEDIA, headers={"X-Request-ID": rid})
