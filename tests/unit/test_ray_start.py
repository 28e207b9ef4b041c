"""ops.runtime.start_local_ray: a Ray start whose node timed out registering is tried once more,
after what it left running is killed; any other error is raised as it is."""

from __future__ import annotations

import subprocess
import sys

import pytest
import ray

from ops import runtime


def test_a_start_that_timed_out_is_killed_and_tried_once_more(monkeypatch):
    calls, leftovers = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:   # as Ray does: processes started, then the node never registers
            leftovers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    runtime.start_local_ray(address="local", num_cpus=1)
    assert calls == [{"address": "local", "num_cpus": 1}] * 2
    assert leftovers[0].wait(timeout=5) is not None   # killed before the second try


def test_any_other_error_is_raised_at_once(monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("port taken")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ConnectionError, match="port taken"):
        runtime.start_local_ray(address="local")
    assert len(calls) == 1
