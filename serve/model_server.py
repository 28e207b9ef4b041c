"""The task-model deployment: one backbone per replica, LoRA adapters multiplexed by `<task>@<version>`.

Adapters load on first use (`@serve.multiplexed`, LRU-evicted past `max_adapters`) into a
`core.adapter_bank.AdapterBank`; requests are batched dynamically (`@serve.batch`), and Ray Serve
splits a batch by multiplexed model id, so one forward pass never mixes adapters. Model code stays
in core/; this class only wires it to Serve.
"""

from __future__ import annotations

import asyncio

from ray import serve

from core.adapter_bank import make_bank
from core.device import resolve_device
from core.registry import AdapterRegistry, parse_model_id
from core.tasks import get_task
from ops import metrics


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
                 mode: str = "multi", int8: bool = False, use_gpu: bool = False):
        self.registry = AdapterRegistry(registry)
        self.replica = _replica_name()
        # use_gpu: the GPU Ray gave this replica (num_gpus in ray_actor_options), else a clear error.
        self.bank = make_bank(backbone, mode=mode, int8=int8, threads=threads,
                              device=resolve_device(use_gpu, "use_gpu", where="in this TaskModel replica (does its "
                                                                    "ray_actor_options ask for num_gpus: 1?)"))
        self._predict_batched.set_max_batch_size(max_batch_inputs)
        self._predict_batched.set_batch_wait_timeout_s(batch_wait_s)

        async def load_adapter(model_id: str) -> _LoadedAdapter:
            task, version = parse_model_id(model_id)
            info = self.registry.get(task, version)
            # local_dir(): the version itself, or a cached download from an s3:// registry.
            local = await asyncio.to_thread(info.local_dir)
            await asyncio.to_thread(self.bank.load, model_id, local / "adapter")
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
        model_id = serve.get_multiplexed_model_id()  # the same for the whole batch
        flat = [x for r in requests for x in r]
        metrics.observe("aisle_batch_size", len(flat), task=model_id.partition("@")[0])
        probs = await asyncio.to_thread(self.bank.predict_proba, model_id, flat)
        out, start = [], 0
        for r in requests:
            out.append(probs[start:start + len(r)])
            start += len(r)
        return out

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
