"""A real job on a real (one-node) Ray cluster through `ray job submit`, the way README's "Running on a
Ray cluster" says to run every job: `ray start --head` on 127.0.0.1, the job uploaded with
`--working-dir .`, run by the cluster's job supervisor (which sets RAY_ADDRESS, so the job's
`ensure_ray()` joins the cluster instead of starting its own), and its Parquet output checked.

The cluster is private to this test: its own ports, its own `--temp-dir`, everything on 127.0.0.1.
It is started with `--block` in a new session and stopped by SIGTERM to that one process (Ray's
handler tears down what it started); then every process that was its descendant, or that names its
temp dir, and is still alive is killed by pid. Never `ray stop`: it takes no address and kills every
Ray process of the user, including this pytest run's own session (the `ray_session` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import psutil
import pytest

from ops.runtime import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
# The venv's bin first: the job's `python` must be the interpreter that has Aisle's dependencies.
BIN = str(Path(sys.executable).parent)
RAY = shutil.which("ray", path=os.pathsep.join([BIN, os.environ.get("PATH", "")]))
MAX_ROWS = 300


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(PATH=os.pathsep.join([BIN, env.get("PATH", "")]), RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _pids_using(temp_dir: str) -> list[int]:
    """Processes of this cluster: every Ray process it starts names its temp/session dir on its command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


class LocalCluster:
    """`ray start --head --block` on 127.0.0.1 with its own ports and temp dir; `stop()` ends only it."""

    def __init__(self, workdir: Path):
        self.temp_dir = tempfile.mkdtemp(prefix="aisle-jobs-", dir="/tmp")  # unix sockets: keep the path short
        (gcs, dash, client, agent_http, agent_grpc, rt_env, metrics, node_mgr, obj_mgr) = free_ports(9)
        self.dashboard = f"http://127.0.0.1:{dash}"
        self.log_path = workdir / "ray-head.log"
        args = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                "--num-cpus=2", "--object-store-memory=300000000", f"--temp-dir={self.temp_dir}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_env}",
                f"--metrics-export-port={metrics}", f"--node-manager-port={node_mgr}",
                f"--object-manager-port={obj_mgr}", "--disable-usage-stats"]
        # No drain wait on SIGTERM (default 30 s): nothing is serving traffic here. Without
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, GCS, raylet and agents listen on every interface even
        # with --node-ip-address=127.0.0.1 (measured); with it, all of them bind loopback.
        env = _env(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until `ray start` says the runtime started (as a user's `ray start` returns then) and the
        dashboard answers: the dashboard answers first, and a job submitted before the node's runtime
        env agent is up fails with "runtime_env setup failed ... 404" (seen in a CI run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited with {self.proc.returncode}:\n{self.log()}")
            if "Ray runtime started" not in self.log_path.read_text(errors="replace"):
                time.sleep(0.5)
                continue
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"dashboard not up after {timeout:.0f}s:\n{self.log()}")

    def _descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> list[str]:
        """SIGTERM the `ray start --block` process (it kills what it started), then kill by pid whatever
        of it survived. Returns the survivors that needed the second step."""
        family = self._descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the group is this cluster only
                self.proc.wait(timeout=10)
        survivors = [p for p in family if p.is_running()]      # is_running() also rules out pid reuse
        for pid in _pids_using(self.temp_dir):
            try:
                survivors.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        names = []
        for p in survivors:
            try:
                names.append(f"{p.pid} {p.name()}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(survivors, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return names


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _ray(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(RAY is None, reason="the `ray` CLI is not installed next to this Python or on PATH")
def test_prepare_and_the_cli_run_unchanged_under_ray_job_submit(tmp_path):
    out = tmp_path / "prepared"
    submission = f"aisle-test-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        cluster = LocalCluster(tmp_path)
        killed: list[str] = []
        stack.callback(lambda: killed.extend(cluster.stop()))
        cluster.wait_ready()

        # Without --no-wait, submit streams the job's logs and exits 0 only if the job SUCCEEDED.
        submit = _ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission,
                      "--working-dir", ".", "--",
                      "python", "-m", "data_pipelines.prepare", "--config", "configs/prepare.yaml",
                      "tasks=[intent]", f"max_rows={MAX_ROWS}", f"output_dir={out}")
        assert submit.returncode == 0, f"{submit.stdout[-3000:]}\n{submit.stderr[-3000:]}\n{cluster.log()}"

        # Ask the cluster itself, through the job API that `ray job status` / `ray job logs` call
        # (the REST calls skip two more CLI start-ups, ~4 s each on two busy cores).
        info = _get_json(f"{cluster.dashboard}/api/jobs/{submission}")
        assert info["status"] == "SUCCEEDED" and info["entrypoint"].startswith("python -m data_pipelines.prepare"), info
        logs = _get_json(f"{cluster.dashboard}/api/jobs/{submission}/logs")["logs"]
        # The cluster has the job's own output: prepare's report table and where it wrote.
        assert f"wrote {out}/" in logs and "intent" in logs, logs[-3000:]
        # ensure_ray() joined the cluster (RAY_ADDRESS set by the supervisor), it did not start its own.
        assert "Connecting to existing Ray cluster" in logs, logs[-3000:]

        # The CLI runs the same way: `ray job submit -- aisle train intent` (the console script on the
        # cluster's PATH, its preset found in the uploaded working dir), registering into the registry.
        registry = tmp_path / "registry"
        train = _ray("job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--",
                     "aisle", "train", "intent", f"data_dir={out}", f"registry={registry}",
                     f"storage_path={tmp_path / 'runs'}", "model.backbone=tiny-random-bert", "model.max_length=32",
                     "train.epochs=1", "train.max_steps_per_epoch=3", "train.max_eval_examples=40",
                     "scaling.cpus_per_worker=0.5", "scaling.threads_per_worker=1")
        assert train.returncode == 0, f"{train.stdout[-3000:]}\n{train.stderr[-3000:]}\n{cluster.log()}"
        assert "[intent] registered intent@v1" in train.stdout + train.stderr, train.stdout[-3000:]

        # The working dir the cluster ran from: Ray 2.60 honours .gitignore and leaves .git and .venv out.
        unpacked = [d for d in Path(cluster.temp_dir).glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*")
                    if d.is_dir()]
        assert unpacked, "no uploaded working dir found in the cluster's temp dir"
        for pkg in unpacked:
            assert (pkg / "data_pipelines" / "prepare.py").is_file()
            assert not any((pkg / name).exists() for name in (".venv", "artifacts", ".git", "aisle.egg-info"))
    # Ray's own SIGTERM shutdown leaves the dashboard's multiprocessing helpers (forkserver, resource
    # tracker) behind; stop() killed those by pid. Nothing of this cluster is left, and nothing else was touched.
    print("killed after ray start's own shutdown:", killed)
    assert not _pids_using(cluster.temp_dir) and not Path(cluster.temp_dir).exists()

    # The artifact: intent examples split three ways, nothing lost without a reason.
    report = json.loads((out / "intent" / "report.json").read_text())
    assert report["rows_read"] == MAX_ROWS
    assert sum(report["kept"].values()) + sum(report["dropped"].values()) == MAX_ROWS
    assert report["kept"]["train"] > report["kept"]["val"] > 0 and report["kept"]["test"] > 0
    train = pd.read_parquet(out / "intent" / "train")
    assert len(train) == report["kept"]["train"]
    assert train["label"].nunique() > 1 and train["label"].notna().all()

    from core.registry import AdapterRegistry

    assert AdapterRegistry(registry).current("intent") == "v1"

    # This process's own Ray session (if the suite started one) is untouched.
    import ray

    if ray.is_initialized():
        assert ray.get(ray.put("still here")) == "still here"
