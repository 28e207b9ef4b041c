"""`aisle serve`: the Serve application embedded in this process, on 127.0.0.1:8000 by default.

It reads configs/serve.yaml by default, the same file `serve run configs/serve.yaml` takes: the
application's `args` and `http_options` (host, port); `--config FILE` takes another Serve YAML or
a flat ServeConfig YAML, and `key=value` overrides either. The deployments' scaling in that file
applies with `serve run` / `serve deploy` (for a cluster); `aisle serve` keeps the code's defaults.
`start(cfg)` is the same start-up for callers that serve for a while and stop (the demo).
"""

from __future__ import annotations

import logging
import sys
import time

from ops.runtime import check_gpu_resources, ensure_ray, job_main, metrics_url
from core.config import to_dict
from core.serve_config import ServeConfig


def serve_logging(access_log: bool = False) -> dict:
    """Serve's logging_config for replicas, controller and proxy: warnings and errors only unless
    access logs are asked for (their INFO lines, a line per request and per replica start and stop,
    would scroll past the answers, and cost each request a log write)."""
    return {"enable_access_log": access_log, "log_level": "INFO" if access_log else "WARNING"}


def start(cfg: ServeConfig) -> str:
    """Start Serve's HTTP proxy on cfg.host:cfg.port and deploy the app (returns once it is healthy)."""
    from ray import serve

    from serve.app import build_app

    ensure_ray()
    check_gpu_resources(cfg.use_gpu, "use_gpu")
    # This process says where it serves, in one line: Serve's own start-up lines stay in its logs.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    logs = serve_logging(cfg.access_log)
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=logs)
    serve.run(build_app(to_dict(cfg)), name="aisle", route_prefix="/", logging_config=logs)
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


def config_from_serve_yaml(path: str, overrides: list[str]) -> ServeConfig:
    """A Serve YAML's first application `args` plus its `http_options` host and port, as a ServeConfig."""
    import yaml

    from core.config import ConfigError, apply_overrides, from_dict

    data = yaml.safe_load(open(path, encoding="utf-8")) or {}
    apps = data.get("applications") or []
    if not apps or not isinstance(apps[0], dict):
        raise ConfigError(f"{path}: no application under `applications`")
    args = dict(apps[0].get("args") or {})
    for key in ("host", "port"):
        if key in (data.get("http_options") or {}):
            args.setdefault(key, data["http_options"][key])
    return from_dict(ServeConfig, apply_overrides(args, list(overrides)))


def _is_serve_yaml(path: str | None) -> bool:
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8")) if path else None
    except (OSError, yaml.YAMLError):
        return False  # load_config says what is wrong with it
    return isinstance(data, dict) and "applications" in data


def main(argv: list[str] | None = None) -> int:
    from ops.runtime import preset
    from core.config import load_config

    def load(path: str | None, overrides: list[str]) -> ServeConfig:
        path = path or preset("serve")
        if _is_serve_yaml(path):
            return config_from_serve_yaml(path, overrides)
        return load_config(ServeConfig, path, overrides)

    return job_main(ServeConfig, run, __doc__.splitlines()[0], argv, load=load)


if __name__ == "__main__":
    sys.exit(main())
