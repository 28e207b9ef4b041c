"""Several Ray nodes on one machine: a head and worker nodes, for the multi-node tests and
`benchmarks/scale_bench.py` (Ray's own test utility, `ray.cluster_utils.Cluster`, on 127.0.0.1).

Layout: the head holds the driver, Serve's controller and proxy, the ingress and the stream's actors
(its CPUs); each worker node declares no CPU of its own to Ray but one `aisle_worker` slot and a
resource naming it (`aisle_node_<i>`). Work that must run on worker nodes asks for the slot
(`scaling.worker_resources={aisle_worker: 1}` for Ray Train, `ray_actor_options.resources` for a
Serve deployment): one training worker or one model replica per node, and nothing else lands there
by chance, so killing a worker node takes away exactly what ran on it. The node resource is for
placement one node at a time.
"""

from __future__ import annotations

import atexit
import os
import time
from dataclasses import dataclass, field

WORKER_SLOT = "aisle_worker"
"""The custom resource each worker node has one of: one training worker or model replica per node."""


def node_resource(i: int) -> str:
    """The custom resource only worker node `i` (1-based) has."""
    return f"aisle_node_{i}"


@dataclass
class LocalCluster:
    """`workers` worker nodes beside a head with `head_cpus` CPUs, all processes on this machine.
    `start()` starts them and connects this process (`ray.init`); `kill(i)` removes worker node i
    at once (its processes killed, as a lost machine); `restore(i)` starts it again."""

    workers: int = 2
    head_cpus: int = 2
    object_store_mb: int = 200
    cluster: object = field(default=None, init=False, repr=False)
    nodes: dict = field(default_factory=dict, init=False, repr=False)

    def start(self) -> "LocalCluster":
        import ray
        from ray.cluster_utils import Cluster

        from ops.runtime import free_port, local_session_env

        local_session_env()  # the embedded session's settings: loopback only, so token auth is off
        # Every node here is this machine on 127.0.0.1; Ray would turn a loopback address into the
        # machine's network address ("a remotely reachable IP") when a node or a driver joins, and
        # traffic must stay on loopback. Ray's own switch for one-machine clusters keeps it there:
        # for the child processes (environment) and for this one (its constant is already read).
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        # shutdown_at_exit=False: Ray would install a signal handler per node, which only the main
        # thread may do, and a node is restored from whichever thread watches a run; atexit stops
        # them instead.
        # The dashboard on the head, as on a real cluster: it serves Ray's state API, without which
        # Ray Train's placement-group cleaner cannot tell whether a run's controller is alive (it
        # warned once a second through every training run, and would not clean up after a lost one).
        self.cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
            "num_cpus": self.head_cpus, "node_ip_address": "127.0.0.1", "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": free_port("127.0.0.1", 0),
            "object_store_memory": self.object_store_mb * 2**20, "resources": {"aisle_head": 1}})
        for i in range(1, self.workers + 1):
            self._add(i)
        self.cluster.wait_for_nodes()
        atexit.register(self.shutdown)
        ray.init(address=self.cluster.address, _node_ip_address="127.0.0.1", log_to_driver=True)
        return self

    def _add(self, i: int) -> None:
        self.nodes[i] = self.cluster.add_node(
            num_cpus=0, node_ip_address="127.0.0.1", object_store_memory=self.object_store_mb * 2**20,
            resources={WORKER_SLOT: 1, node_resource(i): 1})

    def kill(self, i: int) -> None:
        """Worker node i goes away as a lost machine does: its raylet and workers killed, no drain."""
        self.cluster.remove_node(self.nodes.pop(i), allow_graceful=False)

    def restore(self, i: int) -> None:
        """Worker node i starts again (a new raylet with the same resources), as a replaced machine."""
        self._add(i)
        self.cluster.wait_for_nodes()

    def alive_workers(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n["Alive"] and WORKER_SLOT in n.get("Resources", {}))

    def wait_for_workers(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_workers() != n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.alive_workers()} worker nodes alive after {timeout_s:.0f} s, not {n}")
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Stops the nodes, then every process they started that outlives them: without Ray's
        reaper (shutdown_at_exit=False) an actor's worker (once a TrainController) could stay."""
        import psutil
        import ray

        ray.shutdown()
        if self.cluster is not None:
            started = psutil.Process().children(recursive=True)  # the nodes' processes and their workers
            self.cluster.shutdown()
            self.cluster = None
            _, alive = psutil.wait_procs(started, timeout=10)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
