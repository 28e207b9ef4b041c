"""`aisle serve`: the Serve application embedded in this process, on 127.0.0.1:8000 by default.

For a cluster, use `serve deploy configs/serve.yaml` instead (scaling settings live there).
"""

from __future__ import annotations

import sys
import time

from aisle.runtime import ensure_ray, job_main
from core.config import to_dict
from core.job_configs import ServeConfig


def run(cfg: ServeConfig) -> None:
    from ray import serve

    from serve.app import build_app

    ensure_ray()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(to_dict(cfg)), name="aisle", route_prefix="/")
    print(f"Aisle is serving on http://{cfg.host}:{cfg.port} (OpenAPI at /docs); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    return job_main(ServeConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
