"""Serving throughput, latency and memory, each as a ratio against a baseline measured in the same run.

1. raw: in-process batched sentiment predictions (tokenize + forward through `core.adapter_bank`,
   the replica's own code) at several batch sizes, same torch thread count as a replica; the best
   batch size is the baseline.
2. served: HTTP `POST /v1/predict/sentiment` through Ray Serve (HTTP front -> Ingress -> TaskModel) at
   several client concurrencies, requests of 1 input (as shop traffic arrives) and of 32 inputs,
   for each serving variant (threads per replica, replicas, batch wait); served/raw inputs per
   second at the best concurrency, then p50/p95/p99 latency at half of that load (open loop).
3. 16 adapters (uniform mixed traffic over sentiment@v1..v16) vs 1 adapter, through HTTP; the
   replica's resident memory with the backbone and 16 adapters, and per extra adapter.
4. CPU options in-process: int8 dynamic quantization and merged-LoRA vs the fp32 multi-adapter
   bank: throughput ratio and the quality delta (macro-F1, accuracy) on the sentiment test split.

The load generator (aiohttp) runs in this process on the same CPUs as the server. Ray Serve's
throughput-optimized mode (gRPC between deployments, direct ingress) is tried by running the
script with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the environment (it must be set before Ray starts).

    python benchmarks/serve_bench.py [--seconds 8] [--variants t2r1,t1r2] [--quality-examples 1000] [--gpu] [--smoke]

`--gpu`: the raw bank and the task-model replicas on a CUDA GPU (ServeConfig `use_gpu`, bf16 autocast;
replicas share the machine's GPUs: num_gpus = GPUs / replicas, at most 1). Part 4 stays on the CPU
(int8 is a CPU option); replica memory in part 3 is host RSS, not GPU memory.
`--smoke`: a run of every part on the tiny random backbone, half a second per load level, one
serving variant (t1r2), with a sentiment adapter trained (tiny, 1 epoch) from data prepared into a
temporary directory, as on a fresh clone; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import workspace  # noqa: E402
from core.registry import ADAPTER_DIR  # noqa: E402
from ops.runtime import free_port  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {  # name -> (threads per replica, replicas, batch wait ms)
    "t2r1": (2, 1, 5.0),
    "t1r2": (1, 2, 5.0),
    "t1r2w2": (1, 2, 2.0),
    "t1r2w10": (1, 2, 10.0),
}


# ---- the adapter and the data -------------------------------------------------------------------

def sentiment_adapter(registry_dir: Path, data_dir: Path, use_gpu: bool = False, backbone: str = "minilm",
                      prepare_overrides: tuple[str, ...] = (), train_overrides: tuple[str, ...] = ()):
    """The CURRENT sentiment adapter of the project registry; trains a small one if there is none."""
    from core.config import load_config
    from core.job_configs import FinetuneConfig, PrepareConfig
    from core.registry import AdapterRegistry, RegistryError

    registry = AdapterRegistry(registry_dir)
    try:
        info = registry.get("sentiment")
        if info.config.get("model", {}).get("backbone") == backbone:
            return info
    except (RegistryError, ValueError):
        pass
    print(f"no trained {'MiniLM' if backbone == 'minilm' else backbone} sentiment adapter in", registry_dir,
          "- training a small one (1 epoch, 3,000 examples, as the demo)" + "".join(f" {o}" for o in train_overrides))
    if not (data_dir / "sentiment" / "test").is_dir():
        from data_pipelines import prepare

        prepare.run(load_config(PrepareConfig, ROOT / "configs/prepare.yaml",
                                [f"output_dir={data_dir}", "tasks=[sentiment]", *prepare_overrides]))
    from train import finetune

    return finetune.run(load_config(FinetuneConfig, ROOT / "configs/sentiment.yaml", [
        f"data_dir={data_dir}", f"registry={registry_dir}", "train.epochs=1", "train.max_train_examples=3000",
        "train.max_eval_examples=200", "model.lora_targets=[query,value]",  # the demo's budget (configs/demo.yaml)
        f"scaling.use_gpu={str(use_gpu).lower()}", *train_overrides]))


def test_split(data_dir: Path, n: int):
    import pandas as pd

    from core.tasks import get_task

    frame = pd.read_parquet(data_dir / "sentiment" / "test")
    frame = frame.sample(n=min(n, len(frame)), random_state=0)
    return get_task("sentiment").to_inputs(frame), frame


# ---- raw, in process ------------------------------------------------------------------------------

def raw_throughput(bank, name: str, texts: list[str], batch_size: int, seconds: float = 4.0) -> float:
    bank.predict_proba(name, texts[:batch_size], batch_size)  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(texts), batch_size):
            bank.predict_proba(name, texts[i:i + batch_size], batch_size)
            done += len(texts[i:i + batch_size])
            if time.perf_counter() - start >= seconds:
                break
    return done / (time.perf_counter() - start)


def quality(bank, name: str, texts: list[str], frame, labels: list[str]) -> dict:
    from core.tasks import get_task
    from core.training import label_indices

    probs = bank.predict_proba(name, texts, 64)
    return get_task("sentiment").score_report(labels, label_indices(labels, frame["label"].astype(str)), probs, None)


# ---- served, over HTTP ----------------------------------------------------------------------------

async def closed_loop(url: str, bodies, concurrency: int, seconds: float) -> tuple[int, list[float], int]:
    """`concurrency` clients, each sending its next request when the last is answered."""
    import aiohttp

    latencies, inputs, errors = [], 0, 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client(k: int):
            nonlocal inputs, errors
            i = k
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                async with session.post(url, json=body) as r:
                    await r.read()
                    if r.status == 200:
                        latencies.append(time.perf_counter() - t0)
                        inputs += len(body["inputs"])
                    else:
                        errors += 1
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return int(inputs / elapsed), latencies, errors


async def open_loop(url: str, bodies, rate: float, seconds: float) -> tuple[list[float], int]:
    """Requests at a fixed rate (arrivals do not wait for answers): latency at a given load."""
    import aiohttp

    latencies, errors = [], 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:
        async def one(body):
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(url, json=body) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
        tasks, start, n = [], time.perf_counter(), int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
    return latencies, errors


def cpu_by_process(run) -> str:
    """Calls `run()` and says which processes used the CPU meanwhile, in cores (Serve's proxy and
    replicas, the load generator in this process): where served throughput goes against raw."""
    import psutil

    def snap() -> dict:
        out = {}
        for proc in psutil.process_iter(["cmdline", "name"]):
            try:
                t = proc.cpu_times()
                out[proc.pid] = (t.user + t.system, " ".join(proc.info["cmdline"] or [])[:60] or proc.info["name"])
            except psutil.Error:
                pass
        return out

    before, start = snap(), time.perf_counter()
    run()
    after, elapsed = snap(), time.perf_counter() - start
    used = sorted(((cpu - before.get(pid, (0.0,))[0]) / elapsed, "this process (load generator)" if pid == os.getpid()
                   else name.replace("ray::", "").strip()) for pid, (cpu, name) in after.items())
    return ", ".join(f"{name} {cores:.2f}" for cores, name in reversed(used) if cores >= 0.02)


def pct(latencies: list[float]) -> str:
    import numpy as np

    if not latencies:
        return "no answers"
    p50, p95, p99 = (1000 * np.percentile(latencies, q) for q in (50, 95, 99))
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"


def deploy(registry: Path, threads: int, replicas: int, wait_ms: float, port: int, use_gpu: bool = False,
           mix_adapters: bool = True, backbone: str = "minilm") -> None:
    import ray
    from ray import serve

    from aisle.serving import serve_logging
    from serve.app import build_graph

    # Redeploy in place (same app name): a shutdown/start cycle breaks Serve's throughput-optimized mode.
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    model_options = {"num_replicas": replicas, "max_ongoing_requests": 128, "max_queued_requests": 1024}
    if use_gpu:  # replicas share the GPUs when there are fewer GPUs than replicas
        gpus = min(1.0, ray.cluster_resources().get("GPU", 0.0) / replicas)
        model_options["ray_actor_options"] = {"num_cpus": 0.5, "num_gpus": gpus}
    app = build_graph({"registry": str(registry), "embeddings": "/nonexistent", "threads_per_replica": threads,
                     "batch_wait_ms": wait_ms, "use_gpu": use_gpu, "mix_adapters": mix_adapters, "backbone": backbone},
                      model_options=model_options)
    serve.run(app, name="aisle", route_prefix="/", logging_config=serve_logging())   # as `aisle serve`: no access log


def served_sweep(url, one_bodies, batch_bodies, seconds, raw_best, warm_s: float = 2.0) -> dict:
    rows = {}
    for label, bodies, levels in (("1 input", one_bodies, (8, 32, 64)), ("32 inputs", batch_bodies, (1, 2, 4, 8))):
        asyncio.run(closed_loop(url, bodies, levels[0], warm_s))  # warm
        best = None
        for c in levels:
            if c == 32:  # one level also says where the CPU went
                got = []
                cores = cpu_by_process(lambda: got.append(asyncio.run(closed_loop(url, bodies, c, seconds))))
                print(f"    {label:>9}, {c:>2} clients, cores used by process: {cores}", flush=True)
                ips, lat, err = got[0]
            else:
                ips, lat, err = asyncio.run(closed_loop(url, bodies, c, seconds))
            print(f"    {label:>9}, {c:>2} clients: {ips:>5} inputs/s = {ips / raw_best:.2f} of raw; {pct(lat)}"
                  f"{f'; {err} errors' if err else ''}", flush=True)
            if best is None or ips > best[1]:
                best = (c, ips)
        per_req = len(bodies[0]["inputs"])
        rate = best[1] / 2 / per_req
        lat, err = asyncio.run(open_loop(url, bodies, rate, seconds))
        print(f"    {label:>9}, half load ({rate:.0f} req/s, open loop): {pct(lat)}"
              f"{f'; {err} errors' if err else ''}", flush=True)
        rows[label] = {"best_clients": best[0], "inputs_per_s": best[1], "ratio": best[1] / raw_best,
                       "half_load": pct(lat)}
    return rows


def cpu_options(info, texts, frame, labels, backbone: str = "minilm", raw_s: float = 4.0) -> dict:
    """In process, batch 32: fp32/int8 x multi/merged banks, speed and quality against fp32 multi."""
    from core.adapter_bank import make_bank
    from core.modeling import ModelLoadError

    print("\n== CPU options, in process, batch 32 (ratios against fp32 multi-adapter) ==")
    options = {}
    for mode, int8 in (("multi", False), ("multi", True), ("merged", False), ("merged", True)):
        bank = make_bank(backbone, mode=mode, int8=int8, threads=2)
        try:
            bank.load("s", Path(info.path) / ADAPTER_DIR)
        except ModelLoadError as e:  # an adapter on the feed-forward layers (the sentiment preset's) in int8 multi
            print(f"  {mode:>6} {'int8' if int8 else 'fp32'}: not available: {e}")
            continue
        options[(mode, int8)] = (raw_throughput(bank, "s", texts, 32, raw_s), quality(bank, "s", texts, frame, labels))
    base_speed, base_q = options[("multi", False)]
    for (mode, int8), (speed, q) in options.items():
        print(f"  {mode:>6} {'int8' if int8 else 'fp32'}: {speed:5.0f} inputs/s = {speed / base_speed:.2f}x; "
              f"macro-F1 {q['macro_f1']:.4f} ({q['macro_f1'] - base_q['macro_f1']:+.4f}), "
              f"accuracy {q['accuracy']:.4f} ({q['accuracy'] - base_q['accuracy']:+.4f})")
    return options


def adapters_vs_one(registry: Path, port: int, url: str, one, batch, seconds: float, use_gpu: bool = False,
                    backbone: str = "minilm", warm_s: float = 3.0) -> dict:
    """Memory of a fresh replica with 1 adapter, then with all 16; then throughput, 16 mixed vs 1,
    with mixed-adapter forwards (the default) and with one forward per adapter (mix_adapters=false)."""
    import httpx
    from ray import serve

    print("\n== 16 adapters (uniform mixed) vs 1 adapter, t2r1, over HTTP ==", flush=True)
    deploy(registry, 2, 1, 5.0, port, use_gpu, backbone=backbone)
    handle = serve.get_deployment_handle("TaskModel", "aisle")
    def single(bodies):
        return [{**b, "version": "v1"} for b in bodies]

    def many(bodies):  # uniform over sentiment@v1..v16
        return [{**b, "version": f"v{1 + i % 16}"} for i, b in enumerate(bodies)]

    asyncio.run(closed_loop(url, single(batch), 4, warm_s))  # the same warm-up traffic before both readings
    rss_one = handle.memory.remote().result()["rss_mb"]
    def load_all():  # every adapter, one small request each
        for v in range(2, 17):
            httpx.post(url, json={"inputs": batch[0]["inputs"][:1], "version": f"v{v}"}, timeout=60).raise_for_status()

    load_all()
    asyncio.run(closed_loop(url, single(batch), 4, warm_s))
    mem = handle.memory.remote().result()
    per_adapter = sum(mem["adapter_mb"].values()) / len(mem["adapter_mb"])
    print(f"  replica resident memory: {rss_one:.0f} MB with 1 adapter, {mem['rss_mb']:.0f} MB with "
          f"{len(mem['adapters'])} adapters loaded (RSS moves by tens of MB with allocator state: "
          f"{(mem['rss_mb'] - rss_one) / 15:+.1f} MB per extra adapter by RSS); "
          f"each adapter's own tensors: {per_adapter:.2f} MB")
    mixed, one_adapter, loads = {}, {}, (("32 inputs", batch, 4), ("1 input", one, 32))
    for label, bodies, c in loads:
        s1, lat1, _ = asyncio.run(closed_loop(url, single(bodies), c, seconds))
        s16, lat16, _ = asyncio.run(closed_loop(url, many(bodies), c, seconds))
        mixed[label], one_adapter[label] = s16 / s1, s1
        print(f"  {label:>9}, {c} clients: 1 adapter {s1} inputs/s ({pct(lat1)}); 16 adapters, mixed forwards "
              f"{s16} inputs/s ({pct(lat16)}); ratio {s16 / s1:.2f}", flush=True)
    batching = handle.batching.remote().result()
    print(f"  bank calls {batching['calls']}, of which held several adapters: {batching['mixed_calls']}")
    deploy(registry, 2, 1, 5.0, port, use_gpu, mix_adapters=False, backbone=backbone)  # the same, one forward per adapter
    load_all()
    asyncio.run(closed_loop(url, many(batch), 4, warm_s))
    for label, bodies, c in loads:
        s1 = one_adapter[label]
        s16, lat16, _ = asyncio.run(closed_loop(url, many(bodies), c, seconds))
        mixed[label + " (per-adapter forwards)"] = s16 / s1
        print(f"  {label:>9}, {c} clients: 16 adapters, one forward per adapter (mix_adapters=false) {s16} inputs/s "
              f"({pct(lat16)}); ratio {s16 / s1:.2f} against the same 1-adapter reading", flush=True)
    return mixed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per load level")
    parser.add_argument("--variants", default="t2r1,t1r2", help=f"serving variants, from {', '.join(VARIANTS)}")
    parser.add_argument("--quality-examples", type=int, default=1000)
    parser.add_argument("--skip", default="", help="comma list of parts to leave out: options, mixed")
    parser.add_argument("--registry", default=workspace.path("registry", workspace.default_root(ROOT)))
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--gpu", action="store_true", help="raw bank and replicas on a CUDA GPU (bf16 autocast)")
    parser.add_argument("--smoke", action="store_true", help="check that every part runs, on the tiny model (numbers mean nothing)")
    args = parser.parse_args()
    if not args.smoke:
        os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
        return run(args)
    import _smoke

    _smoke.banner()
    with tempfile.TemporaryDirectory() as tmp:  # an empty registry: a tiny adapter is trained first, as on a fresh clone
        args.registry, args.data_dir = str(Path(tmp) / "registry"), str(Path(tmp) / "prepared")
        args.seconds, args.quality_examples = 0.5, 96
        args.variants = "t1r2"  # one variant (two replicas); part 3 deploys t2r1 itself
        return run(args, backbone=_smoke.BACKBONE, raw_s=0.3, warm_s=0.5, prepare_overrides=("max_rows=2000",),
                   train_overrides=(*_smoke.TRAIN_OVERRIDES, "train.max_train_examples=64", "train.max_eval_examples=32",
                                    f"storage_path={Path(tmp) / 'runs'}"))


def run(args, backbone: str = "minilm", raw_s: float = 4.0, warm_s: float | None = None,
        prepare_overrides: tuple[str, ...] = (), train_overrides: tuple[str, ...] = ()) -> int:
    """The benchmark; `warm_s`: warm-up traffic before a reading (None: 2 s before the sweeps, 3 s
    before the adapter readings)."""
    import torch
    from ray import serve

    from ops.runtime import check_gpu_resources, ensure_ray
    from core.adapter_bank import make_bank
    from core.device import resolve_device
    from core.registry import AdapterRegistry

    device = resolve_device(args.gpu, "use_gpu", where="(serve_bench --gpu)")
    ensure_ray(include_dashboard=False)
    check_gpu_resources(args.gpu, "use_gpu")
    info = sentiment_adapter(Path(args.registry), Path(args.data_dir), args.gpu, backbone, prepare_overrides,
                             train_overrides)
    texts, frame = test_split(Path(args.data_dir), args.quality_examples)
    labels = list(info.config["labels"])
    print(f"adapter sentiment@{info.version} ({'MiniLM' if backbone == 'minilm' else backbone}), {len(texts)} test reviews, "
          f"{os.cpu_count()} CPUs"
          f"{', task model on ' + torch.cuda.get_device_name(device) + ' (bf16 autocast)' if args.gpu else ''}")

    # 1 + 4: in process
    results = {}
    # The replicas' CPU forward: ServeConfig's cpu_bf16 (auto: bf16 autocast where the CPU has bf16
    # matrix units), decided as a replica decides it; an fp32 baseline made served/raw read 2.4 here.
    from core.device import use_cpu_bf16
    from core.serve_config import ServeConfig

    bf16 = use_cpu_bf16(ServeConfig().cpu_bf16, False, args.gpu)
    print(f"\n== raw in-process (tokenize + forward), 2 threads{', ' + str(device) if args.gpu else ''}"
          f"{', bf16 autocast as the replicas' if bf16 else ''} ==")
    bank = make_bank(backbone, threads=2, device=device, cpu_bf16=bf16)
    bank.load("s", Path(info.path) / ADAPTER_DIR)
    raw = {b: raw_throughput(bank, "s", texts, b, raw_s) for b in (1, 8, 16, 32, 64)}
    for b, v in raw.items():
        print(f"  batch {b:>2}: {v:6.0f} inputs/s")
    raw_best_batch = max(raw, key=raw.get)
    raw_best = raw[raw_best_batch]
    del bank

    options = {} if "options" in args.skip else cpu_options(info, texts, frame, labels, backbone, raw_s)

    # 2 + 3: served
    with tempfile.TemporaryDirectory() as tmp:
        registry = AdapterRegistry(Path(tmp) / "registry")
        for _ in range(16):
            registry.create_version("sentiment", lambda d: shutil.copytree(Path(info.path) / ADAPTER_DIR, d / ADAPTER_DIR),
                                        config=info.config, metrics=info.metrics, lineage={"copy_of": info.model_id})
        registry.promote("sentiment", "v1")
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/predict/sentiment"
        one = [{"inputs": [t]} for t in texts]
        batch = [{"inputs": texts[i:i + 32]} for i in range(0, len(texts) - 31, 32)]
        for name in filter(None, args.variants.split(",")):
            threads, replicas, wait = VARIANTS[name]
            print(f"\n== served over HTTP: {name} ({threads} threads x {replicas} replica(s), batch wait {wait} ms); "
                  f"raw best {raw_best:.0f} inputs/s (batch {raw_best_batch}) ==", flush=True)
            deploy(Path(tmp) / "registry", threads, replicas, wait, port, args.gpu, backbone=backbone)
            results[name] = served_sweep(url, one, batch, args.seconds, raw_best,
                                         2.0 if warm_s is None else warm_s)

        mixed = {} if "mixed" in args.skip else adapters_vs_one(Path(tmp) / "registry", port, url, one, batch,
                                                                args.seconds, args.gpu, backbone,
                                                                3.0 if warm_s is None else warm_s)
        serve.shutdown()

    print("\n== summary ==")
    for name, rows in results.items():
        for label, r in rows.items():
            target = 0.5 if label == "1 input" else 0.85
            print(f"  {name:>8} {label:>9}: served/raw {r['ratio']:.2f} at {r['best_clients']} clients "
                  f"(target >= {target}); half load {r['half_load']} (target p99 <= 100 ms)")
    for label, ratio in mixed.items():
        target = "" if "per-adapter" in label else " (target >= 0.8)"
        print(f"  16 adapters / 1 adapter, {label}: {ratio:.2f}{target}")
    if results:
        best = {label: max(results, key=lambda n: results[n][label]["ratio"]) for label in ("1 input", "32 inputs")}
        print(f"  settings that won: {best}")
    for mode in ("multi", "merged"):
        if (mode, False) in options and (mode, True) in options:
            (base_speed, base_q), (speed, q) = options[(mode, False)], options[(mode, True)]
            print(f"  int8/fp32 ({mode}): throughput {speed / base_speed:.2f}x, macro-F1 "
                  f"{q['macro_f1'] - base_q['macro_f1']:+.4f}, accuracy {q['accuracy'] - base_q['accuracy']:+.4f}")
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
