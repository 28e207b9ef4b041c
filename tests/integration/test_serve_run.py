"""`serve run configs/serve.yaml`, Ray's own CLI, on a copy of that file pointed at a tiny registry
with no catalog embeddings yet: the app comes up, predictions answer, search answers 503 naming
the step to run (`aisle embed`), and Ctrl-C shuts it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serve_helpers import SENTIMENT_LABELS, free_port, register_adapter

from core.registry import AdapterRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def test_serve_run_of_the_projects_serve_yaml_answers_without_a_catalog_index(tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    registry.promote("sentiment", register_adapter(registry, "sentiment", SENTIMENT_LABELS, seed=1))
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].update(registry=str(tmp_path / "registry"), embeddings=str(tmp_path / "no-embeddings"),
                       catalog_dir=str(tmp_path / "no-catalog"), backbone="tiny-random-bert")
    for deployment in app["deployments"]:  # a small machine beside the test session's own Ray
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    serve_cli = Path(sys.executable).parent / "serve"
    # --address local: a Ray of its own, never the test session's (whose Serve runs other tests' apps)
    proc = subprocess.Popen([str(serve_cli), "run", "--address", "local", str(path)], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "serve_run.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url, deadline, answer = f"http://127.0.0.1:{port}", time.time() + 200, None
        while time.time() < deadline and proc.poll() is None:
            try:
                answer = httpx.post(f"{url}/v1/predict/sentiment", json={"inputs": ["lovely fabric"]}, timeout=10)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        log = (tmp_path / "serve_run.log").read_text()[-3000:]
        assert answer is not None and answer.status_code == 200, (proc.poll(), answer and answer.text, log)
        assert answer.json()["model"] == "sentiment@v1"
        search = httpx.post(f"{url}/v1/search", json={"query": "navy sneakers"}, timeout=30)
        assert search.status_code == 503 and "aisle embed" in search.json()["error"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
