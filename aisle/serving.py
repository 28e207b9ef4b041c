"""`aisle serve`: the Serve application embedded in this process, on 127.0.0.1:8000 by default.

For a cluster, use `serve deploy configs/serve.yaml` instead (scaling settings live there).
`start(cfg)` is the same start-up for callers that serve for a while and stop (the demo).
"""

from __future__ import annotations

import sys
import time

from aisle.runtime import check_gpu_resources, ensure_ray, job_main, metrics_url
from core.config import to_dict
from core.job_configs import ServeConfig


def start(cfg: ServeConfig) -> str:
    """Start Serve's HTTP proxy on cfg.host:cfg.port and deploy the app (returns once it is healthy)."""
    from ray import serve

    from serve.app import build_app

    ensure_ray()
    check_gpu_resources(cfg.use_gpu, "use_gpu")
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(to_dict(cfg)), name="aisle", route_prefix="/")
    return f"http://{cfg.host}:{cfg.port}"


def serve_until_interrupted(message: str, stop) -> None:
    """Print `message`, block until Ctrl-C (or any exit), then call `stop`."""
    print(message)
    try:
        while True:
            time.sleep(3600)
    finally:
        stop()


def run(cfg: ServeConfig) -> None:
    from ray import serve

    url = start(cfg)
    serve_until_interrupted(f"Aisle is serving on {url} (OpenAPI at /docs); metrics at {metrics_url()}; "
                            "Ctrl-C stops it", serve.shutdown)


def main(argv: list[str] | None = None) -> int:
    return job_main(ServeConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
