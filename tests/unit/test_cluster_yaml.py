"""cluster.yaml is a config `ray up` accepts, checked the way Ray checks it before any cloud call
(`prepare_config` merges the AWS defaults, `validate_config` applies ray-schema.json and the
cross-field rules), and it says what Aisle needs: a GPU type that scales from zero, the project
installed on every node, token auth on every `ray start`, the dashboard on loopback only."""

from __future__ import annotations

import copy
import re
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Validation must not reach a cloud (or anything else): any connect attempt fails the test."""
    def refuse(self, address):
        raise AssertionError(f"cluster.yaml validation tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text(encoding="utf-8"))


def ray_validate(config: dict) -> dict:
    """What `ray up` does before it talks to the provider: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cfg(raw) -> dict:
    return ray_validate(raw)


def test_validates_against_rays_own_schema(raw, cfg):
    from ray.autoscaler._private.util import validate_config

    validate_config(copy.deepcopy(raw))   # the file as written, not only after defaults are merged
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] in cfg["available_node_types"]


def _types(cfg: dict) -> dict[str, dict]:
    return {name: t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]}


def test_gpu_worker_type_scales_from_zero(cfg):
    gpu = {name: t for name, t in _types(cfg).items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "a worker type must advertise GPU resources for Ray Train (scaling.use_gpu=true)"
    for name, t in gpu.items():
        assert t["min_workers"] == 0, f"{name}: GPU nodes must not run (and bill) while no job needs them"
        assert t["max_workers"] >= 1
        assert re.match(r"(g[4-6]|p[3-5])", t["node_config"]["InstanceType"]), f"{name}: not a GPU instance type"


def test_cpu_workers_autoscale_and_head_runs_no_tasks(cfg):
    cpu = {name: t for name, t in _types(cfg).items() if not t["resources"].get("GPU")}
    assert cpu and all(t["resources"]["CPU"] > 0 and t["max_workers"] > t["min_workers"] for t in cpu.values())
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["max_workers"] == 0 and head["resources"] == {"CPU": 0}
    assert cfg["max_workers"] >= sum(t["min_workers"] for t in _types(cfg).values())


def test_every_node_installs_the_project(raw, cfg):
    synced = {remote for remote, local in raw["file_mounts"].items() if local == "."}
    assert synced, "the checkout must be mounted on the nodes"
    assert ".gitignore" in raw["rsync_filter"], ".venv and artifacts must not be copied to the nodes"
    setup = raw["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*torch==", c))
    project_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*-e .*aisle\[dev\]", c))
    assert torch_at < project_at, "torch first, then the project (same order as the Makefile)"
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert "3.11" in wanted and any("--python 3.11" in c for c in setup)
    # prepare_config prepends the common setup to both head and worker setup.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert cfg[key][: len(setup)] == setup


def test_token_auth_and_loopback_dashboard(raw):
    head_start = " ".join(raw["head_start_ray_commands"])
    worker_start = " ".join(raw["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_AUTH_MODE=token" in worker_start
    assert "--dashboard-host=127.0.0.1" in head_start, "reach the job API through `ray dashboard` (SSH), not an open port"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert any("get-auth-token --generate" in c and "/dev/null" in c for c in raw["head_setup_commands"])
    token = "/home/%s/.ray/auth_token" % raw["auth"]["ssh_user"]
    assert token in raw["cluster_synced_files"], "workers need the head's token to join"


@pytest.mark.parametrize("break_it, error", [
    (lambda c: c.update(max_wokers=3), "Additional properties are not allowed"),              # typo'd key
    (lambda c: c.update(max_workers="ten"), "is not of type 'integer'"),
    (lambda c: c["available_node_types"]["gpu_worker"].pop("resources"), "'resources' is a required property"),
    (lambda c: c["available_node_types"]["gpu_worker"].update(resources={"GPU": 0.5}), "is not of type 'integer'"),
    (lambda c: c.update(head_node_type="nope"), "`head_node_type` must be one of `available_node_types`"),
    (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers=50), "smaller than the sum of `min_workers`"),
])
def test_a_broken_copy_fails_validation(raw, break_it, error):
    """The validator is real: the same checks reject a copy with one mistake."""
    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises(Exception, match=re.escape(error)):
        ray_validate(broken)
