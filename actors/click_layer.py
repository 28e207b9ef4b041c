"""ClickLayer: the named actor of the stream's fast path (a thin shell over core.click_layer).

A background thread reads the FeedbackLog from the click model's own offset (flagged events are
read and left out by the model), feeds `OnlineLayer.observe`, publishes a snapshot every
`publish_s` and checkpoints every `checkpoint_s`. The ingress asks `snapshot(have)` in the
background (never per request) and gets bytes only when the version changed.

Crash: Ray restarts the actor (`max_restarts=-1`); the new instance loads the checkpoint and reads
the log from the offset the checkpoint covers, so its snapshots resume from the right offset.
Meanwhile the ingress keeps serving the last snapshot it has. The actor takes no CPU slot
(`num_cpus=0`): it is a few dictionary updates per event.
"""

from __future__ import annotations

import logging
import threading
import time

import ray

from actors.feedback_log import NAMESPACE, get_feedback_log
from core.click_layer import OnlineLayer, read_product_catalog
from core.config import from_dict
from core.stream_config import StreamConfig
from ops import metrics

CLICK_LAYER_NAME = "aisle-click-layer"
READ_BATCH = 2000
log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=8)
class ClickLayer:
    def __init__(self, cfg: dict):
        self.cfg = from_dict(StreamConfig, cfg)
        self.catalog = read_product_catalog(self.cfg.catalog_dir, self.cfg.click_model)
        self.layer = OnlineLayer(self.cfg.click_model, self.catalog, self.cfg.click_state_dir)
        self.log = get_feedback_log()
        self.last_read: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="click-layer", daemon=True)
        self._thread.start()

    # ---- for the ingress ------------------------------------------------------------------------
    def snapshot(self, have: str | None = None) -> bytes | None:
        """The latest snapshot as bytes; None when `have` is already its version."""
        snap = self.layer.publish()
        return None if snap.version == have else snap.to_bytes()

    def consolidation_snapshot(self) -> bytes:
        """For the UpdateCoordinator: the snapshot of the keys old enough to consolidate."""
        return self.layer.consolidation_snapshot().to_bytes()

    def product_catalog(self):
        """The catalog lookups the snapshot's keys are built on (the ingress applies them with it)."""
        return self.catalog

    # ---- admin ------------------------------------------------------------------------------------
    def status(self) -> dict:
        return {**self.layer.status(), "last_read": self.last_read}

    def freeze(self, key: str, reason: str = "") -> dict:
        return self.layer.freeze(key, reason)

    def clear(self, key: str) -> dict:
        return self.layer.clear(key)

    def set_enabled(self, enabled: bool) -> dict:
        return self.layer.set_enabled(enabled)

    def suspect_accounts(self) -> dict[str, list[str]]:
        return self.layer.suspect_accounts()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.layer.checkpoint()

    # ---- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        settings = self.cfg.click_layer
        while not self._stop.is_set():
            try:
                got = self._read()
                self.layer.publish()
                if time.monotonic() - self.layer.checkpointed_at >= settings.checkpoint_s:
                    self.layer.checkpoint()
            except Exception:  # noqa: BLE001 - the loop must outlive a bad read; the error is logged
                log.exception("click layer poll failed")
                got = 0
            if got < READ_BATCH:
                self._stop.wait(settings.publish_s)

    def _read(self) -> int:
        batch = ray.get(self.log.read.remote(self.layer.offset, READ_BATCH))
        self.last_read = time.time()
        if batch["events"]:
            self.layer.observe(batch["events"])
        metrics.set_gauge("aisle_consumer_lag", batch["end_offset"] - self.layer.offset, consumer="click_layer")
        return len(batch["events"])


def get_or_create_click_layer(cfg: StreamConfig):
    from core.config import to_dict

    return ClickLayer.options(name=CLICK_LAYER_NAME, namespace=NAMESPACE, get_if_exists=True,
                              resources=dict(cfg.state_resources)).remote(to_dict(cfg))


def get_click_layer():
    return ray.get_actor(CLICK_LAYER_NAME, namespace=NAMESPACE)
