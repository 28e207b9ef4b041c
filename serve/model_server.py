"""The task-model deployment: one backbone per replica, LoRA adapters multiplexed by `<task>@<version>`.

Adapters load on first use (`@serve.multiplexed`, LRU-evicted past `max_adapters`) into a
`core.adapter_bank.AdapterBank`; requests are batched dynamically (`@serve.batch`). Ray Serve splits
each batch by multiplexed model id and runs the parts concurrently; with `mix_adapters` (default)
the parts of one batch meet again in `_Mixer` and go through one forward pass, each row through its
own adapter (`AdapterBank.predict_proba_many`, proven equal to one adapter at a time in
tests/unit/test_adapter_bank.py). So 16 adapters under mixed traffic batch like one. Model code
stays in core/; this class only wires it to Serve.
"""

from __future__ import annotations

import asyncio
import os

from ray import serve

from core.adapter_bank import make_bank
from core.device import resolve_device, use_cpu_bf16
from core.registry import ADAPTER_DIR, AdapterRegistry, parse_model_id
from core.tasks import get_task
from ops import metrics
from ops.runtime import lower_priority


class _LoadedAdapter:
    """What Serve's multiplexer holds per model id; evicting it unloads the adapter from the bank."""

    def __init__(self, bank, model_id: str, replica: str):
        self.bank, self.model_id, self.replica = bank, model_id, replica
        _count_residency(bank, model_id, replica, loaded=True)

    def __del__(self):
        self.bank.unload(self.model_id)
        _count_residency(self.bank, self.model_id, self.replica, loaded=False)


def _count_residency(bank, model_id: str, replica: str, loaded: bool) -> None:
    task = model_id.partition("@")[0]
    metrics.inc("aisle_adapter_loads" if loaded else "aisle_adapter_evictions", task=task)
    metrics.set_gauge("aisle_adapter_resident", 1 if loaded else 0, replica=replica, model_id=model_id)
    metrics.set_gauge("aisle_adapters_loaded", len(bank.names()), replica=replica)


class _Mixer:
    """Joins the per-adapter parts of one `@serve.batch` batch into one bank call.

    Serve starts every part of a split batch as a task in the same event-loop turn, and each part
    calls `submit` before its first await; the first part schedules the flush with `call_soon`,
    which runs after the other parts' first steps. So the flush sees the whole batch, runs it in a
    thread (`predict_many`, one forward for all adapters) and hands each part its own rows."""

    def __init__(self, predict_many):
        self._predict_many = predict_many
        self._pending: list[tuple[str, list, asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()  # the loop holds tasks weakly
        self.calls = self.mixed_calls = 0  # bank calls, and those that held more than one adapter

    async def submit(self, model_id: str, inputs: list):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((model_id, inputs, future))
        if len(self._pending) == 1:
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        parts, self._pending = self._pending, []
        adapters = len({m for m, _, _ in parts})
        self.calls, self.mixed_calls = self.calls + 1, self.mixed_calls + (adapters > 1)
        metrics.observe("aisle_batch_adapters", adapters)
        try:
            results = await asyncio.to_thread(self._predict_many, [(m, x) for m, x, _ in parts])
        except Exception:  # noqa: BLE001 - e.g. an adapter evicted meanwhile: part by part, so that
            for part in parts:  # only the part at fault gets the error, and no part hangs
                await self._one_part(part)
            return
        for (*_, future), result in zip(parts, results):
            if not future.done():
                future.set_result(result)

    async def _one_part(self, part: tuple[str, list, asyncio.Future]) -> None:
        model_id, inputs, future = part
        try:
            result = (await asyncio.to_thread(self._predict_many, [(model_id, inputs)]))[0]
        except Exception as e:  # noqa: BLE001 - handed to the waiting request, which Serve answers
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():
            future.set_result(result)


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a Serve replica (a test building the class directly)
        return "local"


@serve.deployment(name="TaskModel", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64,
                  max_queued_requests=256)
class TaskModelServer:
    def __init__(self, registry: str, backbone: str = "minilm", threads: int = 2,
                 max_batch_inputs: int = 64, batch_wait_s: float = 0.004, max_adapters: int = 16,
                 mode: str = "multi", int8: bool = False, use_gpu: bool = False, mix_adapters: bool = True,
                 cpu_bf16: str = "never", niceness: int = 0):
        lower_priority(niceness)
        self.registry = AdapterRegistry(registry)
        self.replica = _replica_name()
        # cpu_bf16 auto: decided here, by the CPU this replica runs on (a cluster's nodes may differ).
        bf16 = use_cpu_bf16(cpu_bf16, int8, use_gpu)
        # use_gpu: the GPU Ray gave this replica (num_gpus in ray_actor_options), else a clear error.
        self.bank = make_bank(backbone, mode=mode, int8=int8, threads=threads, cpu_bf16=bf16,
                              device=resolve_device(use_gpu, "use_gpu", where="in this TaskModel replica (does its "
                                                                    "ray_actor_options ask for num_gpus: 1?)"))
        self._mixer = _Mixer(self.bank.predict_proba_many) if mix_adapters else None
        self._predict_batched.set_max_batch_size(max_batch_inputs)
        self._predict_batched.set_batch_wait_timeout_s(batch_wait_s)

        async def load_adapter(model_id: str) -> _LoadedAdapter:
            task, version = parse_model_id(model_id)
            info = self.registry.get(task, version)
            # local_dir(): the version itself, or a cached download from an s3:// registry.
            local = await asyncio.to_thread(info.local_dir)
            await asyncio.to_thread(self.bank.load, model_id, local / ADAPTER_DIR)
            return _LoadedAdapter(self.bank, model_id, self.replica)

        # Made here rather than as a decorated method so the per-replica LRU size comes from config.
        self.get_adapter = serve.multiplexed(max_num_models_per_replica=max_adapters)(load_adapter)

    async def predict(self, inputs: list) -> list[dict]:
        """Predictions for one request's inputs from the adapter named by the multiplexed model id."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_adapter(model_id)
        probs = await self._predict_batched(inputs)
        meta = self.bank.meta(model_id)
        return get_task(meta.task).format_predictions(meta.labels, probs)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.004, batch_size_fn=lambda reqs: sum(len(r) for r in reqs))
    async def _predict_batched(self, requests: list[list]) -> list:
        model_id = serve.get_multiplexed_model_id()  # the same for this part of the batch
        flat = [x for r in requests for x in r]
        metrics.observe("aisle_batch_size", len(flat), task=model_id.partition("@")[0])
        if self._mixer is not None:
            probs = await self._mixer.submit(model_id, flat)
        else:
            probs = await asyncio.to_thread(self.bank.predict_proba, model_id, flat)
        out, start = [], 0
        for r in requests:
            out.append(probs[start:start + len(r)])
            start += len(r)
        return out

    def batching(self) -> dict:
        """Bank calls this replica made through the mixer, how many held several adapters, and
        whether its CPU forward runs under bf16 autocast."""
        if self._mixer is None:
            return {"mix_adapters": False, "cpu_bf16": self.bank.cpu_bf16}
        return {"mix_adapters": True, "calls": self._mixer.calls, "mixed_calls": self._mixer.mixed_calls,
                "cpu_bf16": self.bank.cpu_bf16}

    def loaded(self) -> list[str]:
        return self.bank.names()

    def memory(self) -> dict:
        """This replica's resident memory and loaded adapters (for benchmarks and `aisle status`)."""
        import resource

        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        names = self.bank.names()
        return {"rss_mb": rss_pages * resource.getpagesize() / 2**20, "adapters": names,
                "adapter_mb": {n: self.bank.nbytes(n) / 2**20 for n in names}}
