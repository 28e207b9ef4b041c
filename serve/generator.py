"""The generation deployment: one instruct LM per replica, LoRA adapters multiplexed by `<task>@<version>`.

Adapters load on first use (`@serve.multiplexed`, least recently used evicted past
`max_adapters`) into one peft model over the shared base LM. Requests, plain and streamed, are
decoded by continuous batching (`serve.decode_loop.DecodeLoop` over `core.decoding.DecodeBatch`):
they join the running greedy decode between two steps (up to `max_batch` rows, one adapter at a
time) and leave it at their own end-of-turn token or max_tokens; a streamed request gets its text
as the tokens come. The base LM is loaded on the first request, so a shop without generation
adapters pays nothing for it. Model code stays in core/; this class wires it to Serve.
"""

from __future__ import annotations

import asyncio

from ray import serve

from core.registry import ADAPTER_DIR, AdapterRegistry, parse_model_id
from ops import metrics
from serve.decode_loop import DecodeLoop



class _LoadedGenAdapter:
    """What Serve's multiplexer holds per model id; evicting it deletes the adapter from the model."""

    def __init__(self, owner: "GeneratorServer", name: str):
        self.owner, self.name = owner, name

    def __del__(self):
        self.owner.unload(self.name)


@serve.deployment(name="Generator", ray_actor_options={"num_cpus": 0.01}, max_ongoing_requests=32,
                  max_queued_requests=64)
class GeneratorServer:
    def __init__(self, registry: str, lm_cache_dir: str, threads: int = 2, max_batch: int = 8,
                 batch_wait_s: float = 0.01, max_adapters: int = 8, max_prompt_tokens: int = 384):
        self.registry = AdapterRegistry(registry)
        self.lm_cache_dir, self.threads, self.max_prompt_tokens = lm_cache_dir, threads, max_prompt_tokens
        self.model = self.tokenizer = self.lm_name = None
        self.lock = asyncio.Lock()  # one decode step or adapter load at a time: the active adapter is the model's state
        self.names: set[str] = set()
        self.evicted: set[str] = set()
        self.loop = DecodeLoop(self._new_batch, self.lock, max_batch, batch_wait_s,
                               on_step=lambda model_id, rows: metrics.observe("aisle_batch_size", rows,
                                                                              task=model_id.partition("@")[0]))

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
        if self._name(model_id) in self.names:  # evicted while its rows ran, asked for again before it was deleted
            self.evicted.discard(self._name(model_id))
            return
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
        """Delete the evicted adapters, but not the one the running rows decode with."""
        busy = self._name(self.loop.model_id) if self.loop.running and self.loop.model_id else None
        for name in [n for n in self.evicted if n != busy]:
            self.evicted.discard(name)
            if name in self.names and self.model is not None:
                self.names.discard(name)
                self.model.delete_adapter(name)

    async def generate(self, prompt: str, max_tokens: int) -> dict:
        """One request's answer from the adapter named by the multiplexed model id."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_adapter(model_id)
        g = await self.loop.generate(model_id, prompt, max_tokens)
        return {"text": g.text, "tokens": g.new_tokens, "prompt_tokens": g.prompt_tokens,
                "finish_reason": g.finish_reason}

    async def stream(self, prompt: str, max_tokens: int):
        """The answer as text pieces, each as soon as its token is decoded (in the same decode)."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_adapter(model_id)
        async for piece in self.loop.stream(model_id, prompt, max_tokens):
            yield piece

    def _new_batch(self, model_id: str):
        """In the loop's worker thread, under the lock: a decode for `model_id`'s adapter."""
        from core.decoding import DecodeBatch

        self._drop_evicted()
        if self._name(model_id) not in self.names:  # evicted (more adapters asked for than fit) while it waited
            task, version = parse_model_id(model_id)
            self._load(model_id, self.registry.get(task, version).local_dir() / ADAPTER_DIR)
        self.model.set_adapter(self._name(model_id))
        return DecodeBatch(self.model, self.tokenizer, max_prompt_tokens=self.max_prompt_tokens)

    def batch_stats(self) -> dict:
        """Decode steps run and rows summed over them since the replica started (benchmarks read
        rows / steps: the mean batch of a step), with the last 1,000 steps' row counts."""
        st = self.loop.stats
        return {"steps": st.steps, "rows": st.rows, "admitted": st.admitted, "switches": st.switches,
                "recent": list(st.recent)}

    def prompt_tokens(self, prompt: str) -> int | None:
        """Tokens of the chat prompt (None before the LM is loaded)."""
        from core import lm

        if self.tokenizer is None:
            return None
        return len(self.tokenizer(lm.chat_prompt(self.tokenizer, prompt), add_special_tokens=False)["input_ids"])

    def loaded(self) -> list[str]:
        return sorted(self.names)
