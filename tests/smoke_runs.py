"""The benchmark smokes, run as subprocesses by worker threads (tests/integration/test_benchmarks.py checks
their output; not a test module).

Each script runs as `python benchmarks/<x>.py --smoke` from the repository root and starts its own
private Ray (`ops.runtime.ensure_ray`: `ray.init(address="local")`, RAY_ADDRESS removed from its
environment), not the test session's. Its temporary files go under its own directory (TMPDIR); Ray's
session directory goes to a short directory of its own under the system temp dir (RAY_TMPDIR: Unix
socket paths are limited to 107 characters), removed afterwards. Every process the run started
carries a marker in its environment: none may be left once it exits. Each run gets a metrics port of
its own (AISLE_METRICS_PORT), so two Rays starting at once do not race for 8080.

`SmokeRuns` starts the selected scripts, the longest first, when the session starts (tests/conftest.py):
one worker thread runs them one at a time beside the rest of the suite, and test_benchmarks.py (which
runs last) adds a second when its turn comes. Most of the suite waits on Ray and Serve starting and on
timed load levels, so a smoke beside it costs less than a smoke alone.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path

import pytest

from ops.runtime import free_port

ROOT = Path(__file__).resolve().parents[1]
MARKER = "AISLE_BENCH_SMOKE_RUN"
MODULE = "tests/integration/test_benchmarks.py"
BACKGROUND = 1  # smokes at a time while the rest of the suite runs
PARALLEL = 2  # ... and once test_benchmarks.py's turn comes (3 measured slower on 2 cores: 340 s against 258 s)

SMOKES = {  # script -> its time limit (s); the longest first, so that the runs end soonest
    "scale_bench.py": 420, "freshness_bench.py": 440, "serve_bench.py": 440, "search_bench.py": 380,
    "generate_bench.py": 300, "recommend_bench.py": 280, "train_bench.py": 320, "prepare_bench.py": 200,
    "rec_stream_bench.py": 200, "update_cost_bench.py": 150,
}


def selected(items) -> list[str]:
    """The scripts whose smoke test is among the collected items, in SMOKES' order."""
    names = {item.name for item in items if item.nodeid.startswith(MODULE)}
    return [script for script in SMOKES if f"test_{script.removesuffix('.py')}_smoke" in names]


class SmokeRuns:
    """`futures`: script -> the Future of its `run_smoke` stdout. Workers take the next script in order."""

    def __init__(self, scripts: list[str], directories: dict[str, Path]):
        self.futures: dict[str, Future] = {script: Future() for script in scripts}
        self._directories = directories
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        for script in scripts:
            self._queue.put(script)
        self._workers: list[threading.Thread] = []
        self._environ = dict(os.environ)  # as the session started: tests may patch os.environ while a run starts

    def run_with(self, workers: int) -> None:
        """Run with at least `workers` threads from now on."""
        while len(self._workers) < workers:
            thread = threading.Thread(target=self._work, name=f"smoke-{len(self._workers)}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def _work(self) -> None:
        while True:
            try:
                script = self._queue.get_nowait()
            except queue.Empty:
                return
            future = self.futures[script]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run_smoke(script, self._directories[script], SMOKES[script], self._environ))
            except BaseException as exc:  # noqa: BLE001 - pytest.fail's Failed too: the test re-raises it
                future.set_exception(exc)

    def close(self) -> None:
        """Cancel what has not started; wait for what runs (each run kills what it started)."""
        for future in self.futures.values():
            future.cancel()
        for thread in self._workers:
            thread.join()


def _marked(run_id: str) -> list[int]:
    """Processes whose environment carries this run's marker (the script and all it started)."""
    found = []
    needle = f"{MARKER}={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_smoke(script: str, tmp_path: Path, timeout_s: float, environ: dict[str, str]) -> str:
    """Run `benchmarks/<script> --smoke`; return its stdout. Fails on a non-zero exit, a time-out or a
    process left behind (which it then kills)."""
    run_id = uuid.uuid4().hex
    (tmp_path / "tmp").mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="aisle-smoke-")
    # its own Ray: not the session's address, session directory, HAProxy ports or front limits (ops.runtime picks its own)
    env = {k: v for k, v in environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR", "RAY_SERVE_HAPROXY_STATS_PORT",
                                                         "RAY_SERVE_HAPROXY_METRICS_PORT", "AISLE_FRONT_LIMITS")}
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                "TMPDIR": str(tmp_path / "tmp"), "RAY_TMPDIR": ray_tmp, MARKER: run_id, "PYTHONUNBUFFERED": "1",
                "AISLE_METRICS_PORT": str(free_port())})
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, f"benchmarks/{script}", "--smoke"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{script} --smoke ran past {timeout_s:.0f} s\n{_tail(out, err)}")
        elapsed = time.perf_counter() - start
        (tmp_path / "stdout.txt").write_text(out)
        (tmp_path / "stderr.txt").write_text(err)
        print(f"{script} --smoke: {elapsed:.1f} s wall")
        assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}\n{_tail(out, err)}"
        deadline = time.time() + 20  # Ray's processes exit shortly after the driver
        while (left := _marked(run_id)) and time.time() < deadline:
            time.sleep(0.5)
        if left:
            names = [_name(pid) for pid in left]
            _kill(left)
            pytest.fail(f"{script} --smoke left processes behind: {names}")
        return out
    finally:
        _kill(_marked(run_id))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    return f"{pid} {cmdline[:80]}"


def _tail(out: str, err: str, n: int = 4000) -> str:
    return f"--- stdout (end) ---\n{out[-n:]}\n--- stderr (end) ---\n{err[-n:]}"
