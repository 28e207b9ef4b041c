"""Shared fixtures: environment for offline, quiet, loopback-only runs; one local Ray session."""

from __future__ import annotations

import os

# Before anything imports ray or transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
import tempfile
from pathlib import Path

import pytest

import smoke_runs as smoke_runs_module

# A task declared in YAML as a shop declares its own (core.declared_tasks; its file is written by
# tests/integration/test_declared_task.py). Set before Ray starts, as `aisle` sets it, so that every
# Ray worker and Serve replica of the session reads the same declarations.
DECLARED_DIR = Path(tempfile.mkdtemp(prefix="aisle-test-tasks-"))
(DECLARED_DIR / "tasks.yaml").write_text(f"""tasks:
  - name: ticket_topic
    source: {DECLARED_DIR / 'tickets.csv'}
    columns: {{text: [Subject, Body], label: Topic Code, group: Customer}}
    labels: {{shipping: [1], returns: [2], billing: [3]}}
    metric: macro_f1
""")
os.environ["AISLE_TASKS"] = str(DECLARED_DIR / "tasks.yaml")


def pytest_unconfigure(config):
    """The declarations' directory goes with the session (it was left in the temp dir, one per run)."""
    shutil.rmtree(DECLARED_DIR, ignore_errors=True)


def pytest_collection_modifyitems(session, config, items):
    """The benchmark smokes' checks run last: their runs start with the session (`smoke_runs`)."""
    items.sort(key=lambda item: item.nodeid.startswith(smoke_runs_module.MODULE))


@pytest.fixture(scope="session", autouse=True)
def smoke_runs(request, tmp_path_factory):
    """The selected benchmark smokes, started now, one at a time beside the rest of the suite
    (tests/smoke_runs.py); None when no smoke is selected."""
    scripts = smoke_runs_module.selected(request.session.items)
    if not scripts:
        yield None
        return
    runs = smoke_runs_module.SmokeRuns(scripts, {s: tmp_path_factory.mktemp(s.removesuffix(".py")) for s in scripts})
    runs.run_with(smoke_runs_module.BACKGROUND)
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole run (2 logical CPUs, no dashboard, HAProxy in front of Serve), shut down at the end."""
    import ray
    from ray.data import DataContext

    from ops.runtime import haproxy_front_env

    if not ray.is_initialized():
        # Serve's HTTP front as `aisle serve` has it on its own Ray: HAProxy, on ports of this session's
        # own. Ray's processes keep the environment they start with; the tests' own subprocesses (a
        # `serve run`, a `ray start`) get the one the session began with, not this session's ports.
        before = dict(os.environ)
        haproxy_front_env()
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False)
        finally:
            os.environ.clear()
            os.environ.update(before)
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
