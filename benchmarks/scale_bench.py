"""Scale-out on a multi-node Ray cluster on this machine, each figure a ratio against one node in the same run.

The cluster (`ops.local_cluster`): a head (driver, Serve's controller, proxy and ingress, Ray Data's
tasks) and two worker nodes, each holding one training worker or one model replica (one
`aisle_worker` slot per node, one torch thread each: on a 2-core machine, one core per node).

1. train: the same intent fine-tune with 1 worker, then 2 workers on two nodes (DDP over the LoRA
   gradients, each worker reading its own shard of the Ray Dataset); samples/s in the training loop
   (rank 0's rate times the workers: DDP keeps them in step), and each version's validation metric.
2. serve: `POST /v1/predict/sentiment` (32 reviews a request, closed loop) with the TaskModel replica
   on 1 node, then on 2 nodes: inputs/s.
3. node lost: under the same traffic with 2 replicas, worker node 2 is killed (its raylet and
   workers, no drain); then started again. Failed requests of all sent (each failure's status), and
   seconds from the node's return until Serve runs 2 replicas again and the app answers.
4. train node lost: a 2-worker, 3-epoch run on all the training data (`scaling.max_failures=1`)
   whose second node is killed once the first epoch's checkpoint is recorded, and started again;
   the run resumes from its latest checkpoint and registers one version.
5. log node lost: the FeedbackLog pinned to node 2 (a custom resource, as `state_resources` pins the
   stream's actors to the node holding their disk); 500 events acknowledged, node 2 killed, 500 more
   sent while it is down (5 s), node 2 back: how many acknowledged events the log then lacks, how
   many calls were answered while it was down, and how long the waiting appends took once it was back.

    python benchmarks/scale_bench.py [--examples 8192] [--seconds 10] [--clients 8] [--smoke]

`--smoke`: every part on the tiny random backbone with small data and 1 s of load (numbers mean
nothing); the test suite runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import workspace  # noqa: E402
from core.registry import ADAPTER_DIR  # noqa: E402


def prepared_data(data_dir: Path, task: str, prepare_overrides: list[str]) -> None:
    if (data_dir / task / "train").is_dir():
        return
    from core.config import load_config
    from core.job_configs import PrepareConfig
    from data_pipelines import prepare

    prepare.run(load_config(PrepareConfig, ROOT / "configs/prepare.yaml",
                            [f"output_dir={data_dir}", f"tasks=[{task}]", *prepare_overrides]))


def finetune_config(task: str, tmp: Path, data_dir: Path, workers: int, run_name: str, overrides: list[str]):
    from core.config import load_config
    from core.job_configs import FinetuneConfig
    from ops.local_cluster import WORKER_SLOT

    return load_config(FinetuneConfig, ROOT / f"configs/{task}.yaml", [
        f"data_dir={data_dir}", f"registry={tmp}/registry", f"storage_path={tmp}/runs", f"run_name={run_name}",
        f"scaling.num_workers={workers}", "scaling.cpus_per_worker=0", "scaling.threads_per_worker=1",
        f"scaling.worker_resources={{{WORKER_SLOT}: 1}}", "promote=false", *overrides])


# ---- 1. training, 1 worker against 2 ------------------------------------------------------------

def train_scaling(tmp: Path, data_dir: Path, overrides: list[str]) -> float:
    from core.tasks import get_task
    from train import finetune

    metric = f"val_{get_task('intent').primary_metric}"
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        version = finetune.run(finetune_config("intent", tmp, data_dir, workers, f"scale-{workers}", overrides))
        rates[workers] = workers * float(version.metrics["run_train_samples_per_s"])
        m = version.metrics
        print(f"  {workers} worker(s): {rates[workers]:.1f} samples/s in the loop (of it, worker 0 waited for "
              f"batches {m.get('run_data_wait_share', 0):.0%}, in backward {m.get('run_backward_share', 0):.0%}), "
              f"{metric} {m[metric]:.4f}, {time.perf_counter() - start:.0f} s end to end", flush=True)
    return rates[2] / rates[1]


def log_node_lost(cluster, tmp: Path, batches: int = 10, per_batch: int = 50) -> str:
    """The FeedbackLog pinned to worker node 2 (`resources`, as StreamConfig.state_resources does: the
    node whose disk holds the log): appends acknowledged; node 2 killed; as many appends sent while it
    is down; node 2 back. Every event id is then looked for in the log."""
    import ray

    from actors.feedback_log import get_or_create_feedback_log
    from ops.local_cluster import node_resource

    log = get_or_create_feedback_log(tmp / "log", "scale-bench-salt", resources={node_resource(2): 1})
    now = time.time()

    def batch(k: int) -> list[dict]:
        return [{"event_id": f"e{k}-{i}", "ts": now, "user_id": f"u{i % 40}", "session_id": f"s{i % 40}",
                 "type": "click", "product_id": f"p{i % 97}"} for i in range(per_batch)]

    acked: set[str] = set()
    for k in range(batches):
        events = batch(k)
        if ray.get(log.append.remote(events), timeout=60)["new"] == len(events):  # a reply: on the node's disk
            acked.update(ev["event_id"] for ev in events)
    cluster.kill(2)
    cluster.wait_for_workers(1)  # Ray has seen the node go: the actor's process went with it
    waiting = [log.append.remote(batch(batches + k)) for k in range(batches)]
    answered, _ = ray.wait(waiting, num_returns=len(waiting), timeout=5.0)  # the node stays away 5 s
    back = time.perf_counter()
    cluster.restore(2)
    later = ray.get(waiting, timeout=180)
    stored_after = time.perf_counter() - back
    ids, offset = [], 0
    while True:
        page = ray.get(log.read.remote(offset, 1000), timeout=60)
        ids += [ev["event_id"] for ev in page["events"]]
        if page["next_offset"] >= page["end_offset"]:
            break
        offset = page["next_offset"]
    ray.kill(log, no_restart=True)
    sent_down = batches * per_batch
    return (f"{len(acked)} acknowledged before the node was lost, {len(acked - set(ids))} of them missing after its "
            f"return; {sent_down} sent while it was down: {len(answered)} of {len(waiting)} calls answered then, "
            f"{sum(r['new'] for r in later)} events stored {stored_after:.1f} s after it was started again; "
            f"{len(ids) - len(set(ids))} stored twice")


def train_node_lost(cluster, tmp: Path, data_dir: Path, overrides: list[str], epochs: int = 3) -> str:
    """A 2-worker run; node 2 killed as soon as Ray Train has recorded the first epoch's checkpoint
    (its checkpoint_manager_snapshot.json appears), and started again 2 s later."""
    from train import finetune

    cfg = finetune_config("intent", tmp, data_dir, 2, "scale-node-lost",
                          [*overrides, f"train.epochs={epochs}", "scaling.max_failures=1"])
    snapshot = Path(tmp) / "runs" / "scale-node-lost" / "checkpoint_manager_snapshot.json"
    killed = {}

    def killer():
        deadline = time.monotonic() + 600
        while not snapshot.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.kill(2)
        killed["at"] = time.monotonic()
        time.sleep(2.0)
        cluster.restore(2)

    thread = threading.Thread(target=killer, daemon=True)
    start = time.monotonic()
    thread.start()
    version = finetune.run(cfg)
    thread.join(timeout=60)
    resumed = int(version.metrics.get("run_start_epoch", 0))
    return (f"node 2 killed {killed.get('at', start) - start:.0f} s in (after the first checkpoint), back 2 s later; "
            f"the run resumed at epoch {resumed + 1} of {epochs} and registered {version.model_id} "
            f"(epoch {version.metrics['epoch']}), {time.monotonic() - start:.0f} s in all")


# ---- 2 + 3. serving on 1 node, 2 nodes, and a node lost --------------------------------------------

def deploy(registry: Path, replicas: int, port: int, backbone: str) -> None:
    from ray import serve

    from aisle.serving import serve_logging
    from ops.local_cluster import WORKER_SLOT
    from serve.app import build_graph

    # One proxy, on the head: every node of this cluster is 127.0.0.1, and a proxy per node would
    # ask for the same port. (On a real cluster each node's proxy has an address of its own.)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port},
                logging_config=serve_logging())
    app = build_graph({"registry": str(registry), "embeddings": "/nonexistent", "threads_per_replica": 1,
                       "backbone": backbone},
                      model_options={"num_replicas": replicas, "max_ongoing_requests": 64,
                                     "ray_actor_options": {"num_cpus": 0, "resources": {WORKER_SLOT: 1}}})
    serve.run(app, name="aisle", route_prefix="/", logging_config=serve_logging())


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("aisle")
    deployment = app.deployments.get("TaskModel") if app else None
    return deployment.replica_states.get("RUNNING", 0) if deployment else 0


async def traffic(url: str, bodies, clients: int, seconds: float, statuses: Counter | None = None) -> int:
    """Closed loop: inputs/s answered 200; every status counted in `statuses` (a refused connection as 0)."""
    import aiohttp

    statuses = Counter() if statuses is None else statuses
    inputs, stop = 0, time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client(k: int):
            nonlocal inputs
            i = k
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)]
                i += clients
                try:
                    async with session.post(url, json=body) as r:
                        await r.read()
                        statuses[r.status] += 1
                        inputs += len(body["inputs"]) if r.status == 200 else 0
                except aiohttp.ClientError:
                    statuses[0] += 1
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        return int(inputs / (time.perf_counter() - start))


def serve_scaling(cluster, info, texts, backbone: str, clients: int, seconds: float) -> tuple[float, str]:
    import shutil

    from ray import serve

    from core.registry import AdapterRegistry
    from ops.runtime import free_port

    with tempfile.TemporaryDirectory() as tmp:
        registry = AdapterRegistry(Path(tmp) / "registry")
        registry.create_version("sentiment", lambda d: shutil.copytree(Path(info.path) / ADAPTER_DIR, d / ADAPTER_DIR),
                                config=info.config, metrics=info.metrics, lineage={"copy_of": info.model_id})
        registry.promote("sentiment", "v1")
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/predict/sentiment"
        bodies = [{"inputs": texts[i:i + 32]} for i in range(0, len(texts) - 31, 32)]
        rates = {}
        for replicas in (1, 2):
            deploy(Path(tmp) / "registry", replicas, port, backbone)
            asyncio.run(traffic(url, bodies, clients, min(2.0, seconds)))  # warm
            rates[replicas] = asyncio.run(traffic(url, bodies, clients, seconds))
            print(f"  TaskModel on {replicas} node(s): {rates[replicas]} inputs/s ({clients} clients, 32 inputs "
                  f"a request)", flush=True)

        # 3. node 2 lost under traffic; traffic goes on until Serve has noticed, then the node comes back
        statuses = Counter()
        kill = threading.Timer(seconds / 2, cluster.kill, args=(2,))
        kill.start()
        asyncio.run(traffic(url, bodies, clients, seconds, statuses))
        kill.join()
        cluster.wait_for_workers(1)
        deadline = time.perf_counter() + 60
        while running_replicas() == 2 and time.perf_counter() < deadline:
            asyncio.run(traffic(url, bodies, clients, 1.0, statuses))
        asyncio.run(traffic(url, bodies, clients, seconds / 2, statuses))  # the survivor alone
        failed = sum(n for code, n in statuses.items() if code != 200)
        kinds = ", ".join(f"{n} x {code or 'refused'}" for code, n in sorted(statuses.items()) if code != 200)
        print(f"  node 2 killed mid-traffic: {statuses[200]} answered, {failed} failed{f' ({kinds})' if kinds else ''}; "
              f"Serve then ran {running_replicas()} replica(s)", flush=True)
        cluster.restore(2)
        back = time.perf_counter()
        deadline = back + 120
        while time.perf_counter() < deadline:
            if running_replicas() == 2 and asyncio.run(traffic(url, bodies[:1], 1, 0.1)) > 0:
                break
            time.sleep(0.2)
        recovered = time.perf_counter() - back
        after = Counter()
        asyncio.run(traffic(url, bodies, clients, min(2.0, seconds), after))
        print(f"  node 2 back: 2 replicas running and answering after {recovered:.1f} s; then "
              f"{after[200]} of {sum(after.values())} answered", flush=True)
        serve.shutdown()
    return rates[2] / rates[1], f"failed requests {failed} of {sum(statuses.values())}, recovered in {recovered:.1f} s"


# ---- the run -------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8192, help="training examples per run (2048: the loop ran 10 s, start-up dominated)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load reading")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--data-dir", default=workspace.path("prepared", workspace.default_root(ROOT)))
    parser.add_argument("--skip", default="", help="comma list of parts to leave out: train, serve, train-node-lost, log-node-lost")
    parser.add_argument("--smoke", action="store_true", help="every part on the tiny model, seconds of load (numbers mean nothing)")
    args = parser.parse_args()
    backbone, prepare_overrides, model_overrides, examples = "minilm", [], [], args.examples
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            import _smoke

            _smoke.banner()
            backbone, args.seconds, args.data_dir = _smoke.BACKBONE, 1.0, str(Path(tmp) / "prepared")
            prepare_overrides, model_overrides, examples = ["max_rows=2000"], list(_smoke.TRAIN_OVERRIDES), 256
        # The node-lost run trains 3 epochs long enough to be killed in the second: the tiny model on
        # all of the smoke's data (0: every example), else the same examples as part 1.
        return run(args, Path(tmp), backbone, prepare_overrides, model_overrides, examples,
                   lost_examples=0 if args.smoke else examples)


def run(args, tmp: Path, backbone: str, prepare_overrides: list[str], model_overrides: list[str],
        examples: int, lost_examples: int) -> int:
    from ops.local_cluster import LocalCluster
    from serve_bench import sentiment_adapter, test_split

    skip = set(filter(None, args.skip.split(",")))
    sizes = [f"train.max_train_examples={examples}", "train.max_eval_examples=200"]
    overrides = [*model_overrides, *sizes, "train.epochs=1"]
    with LocalCluster(workers=2) as cluster:
        print(f"cluster: a head and {cluster.alive_workers()} worker nodes on 127.0.0.1 (one worker or replica "
              f"each, one torch thread)", flush=True)
        data_dir = Path(args.data_dir)
        if "train" not in skip:
            prepared_data(data_dir, "intent", prepare_overrides)
            print("\n== train: intent, 1 worker, then 2 workers on two nodes ==", flush=True)
            ratio = train_scaling(tmp / "train", data_dir, overrides)
            print(f"scale train: 2 workers / 1 worker samples/s {ratio:.2f}", flush=True)
        if "serve" not in skip:
            print("\n== serve: sentiment, TaskModel on 1 node, then 2, then node 2 lost ==", flush=True)
            info = sentiment_adapter(tmp / "sentiment-registry", data_dir, backbone=backbone,
                                     prepare_overrides=tuple(prepare_overrides),
                                     train_overrides=(*model_overrides, *sizes, f"storage_path={tmp / 'runs'}"))
            texts, _ = test_split(data_dir, 512)
            ratio, lost = serve_scaling(cluster, info, texts, backbone, args.clients, args.seconds)
            print(f"scale serve: 2 nodes / 1 node inputs/s {ratio:.2f}; node lost: {lost}", flush=True)
        if "train-node-lost" not in skip:
            prepared_data(data_dir, "intent", prepare_overrides)
            print("\n== train: 2 workers, node 2 lost after the first checkpoint ==", flush=True)
            lost = train_node_lost(cluster, tmp / "lost", data_dir, [*model_overrides, f"train.max_train_examples={lost_examples}",
                                                                    "train.max_eval_examples=200"])
            print(f"scale train node lost: {lost}", flush=True)
        if "log-node-lost" not in skip:
            print("\n== stream log on a lost node: the FeedbackLog pinned to node 2, node 2 lost and back ==", flush=True)
            print(f"scale log node lost: {log_node_lost(cluster, tmp / 'log-lost')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
