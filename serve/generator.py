"""The generation deployment: one instruct LM per replica, LoRA adapters multiplexed by `<task>@<version>`.

Adapters load on first use (`@serve.multiplexed`, least recently used evicted past
`max_adapters`) into one peft model over the shared base LM. Plain requests are batched by
`FreeModelBatcher` (a batch forms when the model is free; one model id per batch): one
left-padded greedy `generate` per batch, each request cut at its own max_tokens. Streaming requests (`stream`) yield text pieces as
the tokens come. One generation runs at a time per replica (the active adapter is the peft
model's state); the base LM is loaded on the first request, so a shop without generation
adapters pays nothing for it. Model code stays in core/lm.py; this class wires it to Serve.
"""

from __future__ import annotations

import asyncio

from ray import serve

from core.registry import AdapterRegistry, parse_model_id
from ops import metrics

ADAPTER_DIR = "adapter"


class _LoadedGenAdapter:
    """What Serve's multiplexer holds per model id; evicting it deletes the adapter from the model."""

    def __init__(self, owner: "GeneratorServer", name: str):
        self.owner, self.name = owner, name

    def __del__(self):
        self.owner.unload(self.name)


class FreeModelBatcher:
    """Dynamic batching that forms a batch when the model is free, not when a timer fires.

    Ray Serve's `@serve.batch` takes a batch off its queue `batch_wait_s` after the first request
    even while the previous batch still runs; for generation, seconds long, the requests that
    arrive meanwhile become the next small batch: under 8 closed-loop clients served/raw tokens/s
    fell to 0.51 (benchmarks/generate_bench.py). Here one loop runs the batches in turn: a
    request waits at most `wait_s` for company when the model is idle, and while a batch runs the
    next one gathers every request that arrives (up to `max_batch`, one model id per batch, the
    oldest request's first). Forming the next batch at once was not enough: the callers a batch
    just answered come back a round trip later, so 8 closed-loop clients settled into two
    alternating batches of 4 (served/raw 0.56). So after a batch the loop waits up to `gather_s`
    for as many requests as were pending plus the batch just answered. No Ray: plain asyncio."""

    def __init__(self, run, max_batch: int, wait_s: float, gather_s: float = 0.1):
        self.run, self.max_batch, self.wait_s, self.gather_s = run, max_batch, wait_s, gather_s
        self.pending: list[tuple[str, object, asyncio.Future]] = []
        self.loop_task: asyncio.Task | None = None
        self.sizes: list[int] = []  # batch sizes run (the last 1,000), for tests and benchmarks

    async def submit(self, model_id: str, item):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((model_id, item, future))
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.ensure_future(self._drain())
        return await future

    def _next_batch(self) -> tuple[str, list]:
        model_id = self.pending[0][0]
        batch = [p for p in self.pending if p[0] == model_id][: self.max_batch]
        taken = {id(p) for p in batch}
        self.pending = [p for p in self.pending if id(p) not in taken]
        return model_id, batch

    async def _company(self, expected: int, limit_s: float) -> None:
        """Wait until `expected` requests are pending (at most max_batch) or `limit_s` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while len(self.pending) < min(expected, self.max_batch) and loop.time() < deadline:
            await asyncio.sleep(0.002)

    async def _drain(self) -> None:
        expected, limit_s = self.max_batch, self.wait_s  # the model was idle: let a burst gather
        while True:
            await self._company(expected, limit_s)
            if not self.pending:
                return
            model_id, batch = self._next_batch()
            self.sizes = (self.sizes + [len(batch)])[-1000:]
            try:
                results = await self.run(model_id, [item for _, item, _ in batch])
            except Exception as e:  # noqa: BLE001 - handed to each waiting request, which Serve answers
                results = [e] * len(batch)
            for (*_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            # The callers just answered may send again within a round trip: wait for them too.
            expected, limit_s = len(self.pending) + len(batch), self.gather_s


@serve.deployment(name="Generator", ray_actor_options={"num_cpus": 0.01}, max_ongoing_requests=32,
                  max_queued_requests=64)
class GeneratorServer:
    def __init__(self, registry: str, lm_cache_dir: str, threads: int = 2, max_batch: int = 8,
                 batch_wait_s: float = 0.01, max_adapters: int = 8, max_prompt_tokens: int = 384,
                 gather_s: float = 0.1):
        self.registry = AdapterRegistry(registry)
        self.lm_cache_dir, self.threads, self.max_prompt_tokens = lm_cache_dir, threads, max_prompt_tokens
        self.model = self.tokenizer = self.lm_name = None
        self.lock = asyncio.Lock()  # one generate at a time: set_adapter is the model's state
        self.names: set[str] = set()
        self.evicted: set[str] = set()
        self.batcher = FreeModelBatcher(self._run_batch, max_batch, batch_wait_s, gather_s)

        async def load_adapter(model_id: str) -> _LoadedGenAdapter:
            task, version = parse_model_id(model_id)
            local = await asyncio.to_thread(self.registry.get(task, version).local_dir)
            async with self.lock:
                await asyncio.to_thread(self._load, model_id, local / ADAPTER_DIR)
            return _LoadedGenAdapter(self, self._name(model_id))

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=max_adapters)(load_adapter)

    @staticmethod
    def _name(model_id: str) -> str:
        from core.lm import adapter_name

        return adapter_name(model_id)

    def _load(self, model_id: str, directory) -> None:
        import torch

        from core import lm

        self._drop_evicted()
        lm_name = lm.read_gen_meta(directory)["lm"]
        if self.model is None:
            torch.set_num_threads(self.threads)
            self.model, self.tokenizer = lm.load_lm(lm_name, self.lm_cache_dir)
            self.lm_name = lm_name
        elif lm_name != self.lm_name:
            raise ValueError(f"{model_id} was trained on {lm_name}, this replica serves {self.lm_name}")
        self.model = lm.load_gen_adapter(self.model, directory, self._name(model_id))
        self.names.add(self._name(model_id))
        metrics.inc("aisle_adapter_loads", task=model_id.partition("@")[0])

    def unload(self, name: str) -> None:
        """Called when the multiplexer evicts an adapter, from any thread and maybe mid-generation:
        only marked here; `_drop_evicted` deletes it when no generation runs (under the lock)."""
        self.evicted.add(name)

    def _drop_evicted(self) -> None:
        while self.evicted:
            name = self.evicted.pop()
            if name in self.names and self.model is not None:
                self.names.discard(name)
                self.model.delete_adapter(name)

    async def generate(self, prompt: str, max_tokens: int) -> dict:
        """One request's answer from the adapter named by the multiplexed model id (batched)."""
        await self.get_adapter(serve.get_multiplexed_model_id())
        return await self.batcher.submit(serve.get_multiplexed_model_id(), (prompt, max_tokens))

    async def _run_batch(self, model_id: str, requests: list[tuple[str, int]]) -> list[dict]:
        metrics.observe("aisle_batch_size", len(requests), task=model_id.partition("@")[0])
        async with self.lock:
            out = await asyncio.to_thread(self._generate, model_id, [p for p, _ in requests], [m for _, m in requests])
        return [{"text": g.text, "tokens": g.new_tokens, "prompt_tokens": g.prompt_tokens,
                 "finish_reason": g.finish_reason} for g in out]

    def batch_sizes(self) -> list[int]:
        """The sizes of the last batches this replica generated (benchmarks read them)."""
        return list(self.batcher.sizes)

    def _generate(self, model_id: str, prompts: list[str], limits: list[int]):
        from core import lm

        self._drop_evicted()
        self.model.set_adapter(self._name(model_id))
        return lm.generate(self.model, self.tokenizer, prompts, limits, batch_size=len(prompts),
                           max_prompt_tokens=self.max_prompt_tokens)

    async def stream(self, prompt: str, max_tokens: int):
        """The answer as text pieces, each as soon as its token is decoded (not batched)."""
        from core import lm

        model_id = serve.get_multiplexed_model_id()
        await self.get_adapter(model_id)
        async with self.lock:
            self._drop_evicted()
            self.model.set_adapter(self._name(model_id))
            pieces = lm.stream(self.model, self.tokenizer, prompt, max_tokens, max_prompt_tokens=self.max_prompt_tokens)
            done = object()
            while (piece := await asyncio.to_thread(next, pieces, done)) is not done:
                yield piece

    def prompt_tokens(self, prompt: str) -> int | None:
        """Tokens of the chat prompt (None before the LM is loaded)."""
        from core import lm

        if self.tokenizer is None:
            return None
        return len(self.tokenizer(lm.chat_prompt(self.tokenizer, prompt), add_special_tokens=False)["input_ids"])

    def loaded(self) -> list[str]:
        return sorted(self.names)
