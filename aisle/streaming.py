"""`aisle stream`: serving plus the stream loop, embedded: FeedbackLog, UserSessions, ClickLayer
(the fast path), UpdateCoordinator (the slow path, relevance) and RecUpdater (the recommend task's
updates, when it has a CURRENT version) actors, then the Serve app on 127.0.0.1 (`POST /v1/events`
feeds the loop).

`start_stream(cfg)` is the same start-up for the demo, the benchmark and the tests; `stop_stream()`
shuts Serve down and stops the actors (the log and the audit stay on disk).
"""

from __future__ import annotations

import functools
import sys

from ops.runtime import check_gpu_resources, ensure_ray, job_main, metrics_url
from core.stream_config import StreamConfig

COORDINATOR_STOP_S = 60.0
"""How long stop_stream waits for an update in flight to stop (a gate already scoring finishes first)."""
_HANDLES: list = []
"""The started actors' handles: a non-detached actor lives while its creator holds a handle to it."""


def start_stream(cfg: StreamConfig, coordinator: bool = True, recommend: bool | None = None) -> str:
    """Start the actors (or join running ones) and the HTTP API; returns the base URL. `recommend`:
    start the RecUpdater (None: when the recommend task can learn, else say why not)."""
    import ray

    from actors.click_layer import get_or_create_click_layer
    from actors.feedback_log import get_or_create_feedback_log
    from actors.rec_updater import can_learn, get_or_create_rec_updater
    from actors.update_coordinator import get_or_create_coordinator
    from actors.user_sessions import get_or_create_user_sessions
    from aisle import serving
    from core.screening import AnomalyScreen

    ensure_ray()
    check_gpu_resources(cfg.update.use_gpu, "update.use_gpu")
    check_gpu_resources(cfg.serve.use_gpu, "serve.use_gpu")
    log = get_or_create_feedback_log(cfg.log_dir, cfg.salt, segment_bytes=cfg.segment_bytes, archive_uri=cfg.archive_uri,
                                     screen_factory=functools.partial(AnomalyScreen, cfg.screen),
                                     resources=cfg.state_resources)
    ray.get(log.ping.remote())
    sessions = get_or_create_user_sessions(cfg.salt)
    ray.get(sessions.stats.remote())
    _HANDLES.extend([log, sessions])
    _HANDLES.append(get_or_create_click_layer(cfg))
    ray.get(_HANDLES[-1].status.remote())
    if coordinator:
        _HANDLES.append(get_or_create_coordinator(cfg))
        ray.get(_HANDLES[-1].status.remote())
    if recommend is not False:
        why_not = can_learn(cfg)
        if why_not is None:
            _HANDLES.append(get_or_create_rec_updater(cfg))
            ray.get(_HANDLES[-1].status.remote())
        else:
            print(f"recommend: not learning from the stream ({why_not})")
    return serving.start(cfg.serve)


def stop_stream() -> None:
    import ray
    from ray import serve

    from actors.click_layer import get_click_layer
    from actors.feedback_log import get_feedback_log
    from actors.rec_updater import get_rec_updater
    from actors.update_coordinator import get_coordinator
    from actors.user_sessions import get_user_sessions

    serve.shutdown()
    try:  # an update in flight ends its training run first, so Ray Train releases the CPUs it holds
        ray.get(get_coordinator().stop.remote(COORDINATOR_STOP_S), timeout=COORDINATOR_STOP_S + 10)
    except Exception:  # noqa: BLE001 - not running, or not stopping in time: it is killed below
        pass
    try:  # an update in flight finishes (seconds); its decision and trails are saved
        ray.get(get_rec_updater().stop.remote(COORDINATOR_STOP_S), timeout=COORDINATOR_STOP_S + 10)
    except Exception:  # noqa: BLE001 - not running: nothing to stop
        pass
    try:  # its last checkpoint: a restart reads less of the log
        ray.get(get_click_layer().stop.remote(), timeout=15)
    except Exception:  # noqa: BLE001 - not running or not answering: the checkpoint before stands
        pass
    for getter in (get_coordinator, get_rec_updater, get_click_layer, get_user_sessions, get_feedback_log):
        try:
            ray.kill(getter(), no_restart=True)
        except Exception:  # noqa: BLE001 - not running: nothing to stop
            pass
    _HANDLES.clear()


def run(cfg: StreamConfig) -> None:
    from aisle.serving import serve_until_interrupted

    url = start_stream(cfg)
    serve_until_interrupted(f"Aisle is serving on {url}; POST events to {url}/v1/events (bearer ingest token); "
                            f"metrics at {metrics_url()}; Ctrl-C stops it", stop_stream)


def main(argv: list[str] | None = None) -> int:
    return job_main(StreamConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
