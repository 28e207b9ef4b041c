"""RecUpdater: the named actor that turns the feedback log into gated updates of the recommend adapter.

The recommend task's side of the stream, beside the UpdateCoordinator (relevance). A background
thread reads the FeedbackLog as consumer "recommend", turns each shopper's clicks and purchases
into next-item examples (`core.rec_stream`), and when the window is due runs one update in this
actor's warm trainer (`train.rec_update`: candidate from CURRENT, gate on held-out shoppers and
offline users, promote or not), audits the decision, checkpoints the shoppers' trails and the
example buffers (`recommend_trails.json` in updates_dir, fsynced, renamed into place) and only
then commits the log offset. So a crash mid-update loses nothing: the restarted actor re-reads
the events after the committed offset, with the trails and buffers as they were at that offset.

Items the serving catalog did not hold when the actor started (`data_pipelines.interactions.
serving_items`) are counted as unknown_item and not trained on: a product added through
POST /v1/products is served at once but learnt from only after the stream restarts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import ray

from actors.feedback_log import get_feedback_log
from core import audit
from core.config import from_dict, to_dict
from core.rec_stream import RecWindow, Trails
from core.registry import ADAPTER_DIR, AdapterRegistry
from core.stream_config import StreamConfig
from ops import metrics
from ops.runtime import lower_priority

RECOMMENDER_NAME = "aisle-rec-updater"
NAMESPACE = "aisle"
CONSUMER = "recommend"
TASK = "recommend"
READ_BATCH = 2000
log = logging.getLogger(__name__)


def can_learn(cfg: StreamConfig) -> str | None:
    """Why the recommend task cannot learn from this stream (None: it can)."""
    from core.errors import InputError
    from data_pipelines.interactions import read_items

    if not cfg.recommend.enabled:
        return "recommend.enabled is false"
    if AdapterRegistry(cfg.registry).current(TASK) is None:
        return "no CURRENT recommend version (`aisle train recommend`)"
    try:
        read_items(cfg.data_dir)
    except InputError as e:
        return str(e)
    return None


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class RecUpdater:
    def __init__(self, cfg: dict):
        self.cfg = from_dict(StreamConfig, cfg)
        lower_priority(self.cfg.update.niceness)  # learning takes the cores serving and the click layer leave
        self.log = get_feedback_log()
        self.offset = ray.get(self.log.committed.remote(CONSUMER))
        self.state_path = Path(self.cfg.updates_dir) / "recommend_trails.json"
        self.trails, self.window = _load_state(self.state_path, self.cfg)
        self.audit_log = self.cfg.recommend_audit_log
        self.number = len(audit.read(self.audit_log)) + 1
        self.trainer, self.error = None, None
        self.last_end: float | None = None
        self.running: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rec-updater", daemon=True)
        self._thread.start()

    def status(self) -> dict:
        return {"offset": self.offset, "ready": self.trainer is not None, "error": self.error,
                "window": self.window.span(), "shoppers": len(self.trails), "running": self.running,
                "next_update": self.number, "last_update_end": self.last_end}

    def stop(self, timeout_s: float = 60.0) -> bool:
        """End the loop; an update in flight finishes first (a few seconds). True if it ended in time."""
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set() and self.trainer is None:
            try:
                self.trainer = self._make_trainer()
                self.error = None
            except Exception as e:  # noqa: BLE001 - e.g. no CURRENT yet: said in status, retried
                self.error = f"{type(e).__name__}: {str(e)[:300]}"
                log.exception("the recommend updater could not start its trainer")
                self._stop.wait(10.0)
        while not self._stop.wait(self.cfg.recommend.poll_s):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - the loop must outlive a bad poll; the error is logged
                log.exception("recommend updater poll failed")

    def _make_trainer(self):
        import torch

        from data_pipelines.interactions import read_prepared, serving_items
        from train.rec_update import WarmRecTrainer

        torch.set_num_threads(self.cfg.recommend.threads)
        registry = AdapterRegistry(self.cfg.registry)
        backbone = registry.get(TASK).config["model"]["backbone"]
        items = serving_items(self.cfg.data_dir, self.cfg.catalog_dir)
        trainer = WarmRecTrainer(backbone, items, self.cfg.recommend, read_prepared(self.cfg.data_dir))
        parent = registry.get(TASK)
        trainer.table(trainer.load(registry.local_dir(TASK, parent.version) / ADAPTER_DIR), parent.version)  # warm
        return trainer

    def _poll(self) -> None:
        while True:
            batch = ray.get(self.log.read.remote(self.offset, READ_BATCH))
            examples, skipped = self.trails.add(batch["events"], known=self.trainer.catalog.index)
            self.window.add(examples, skipped, batch["next_offset"], time.time())
            self.offset = batch["next_offset"]
            if self.offset >= batch["end_offset"] or not batch["events"]:
                break
        rc = self.cfg.recommend
        reason = self.window.due(time.time(), rc.min_examples, rc.max_wait_s, rc.min_examples_on_timeout,
                                 self.last_end, rc.cooldown_s)
        if reason and not self._stop.is_set():
            self._update(reason)

    def _update(self, trigger: str) -> None:
        rc, span = self.cfg.recommend, self.window.span()
        self.running = {"number": self.number, "trigger": trigger, "started": time.time(), **span}
        metrics.inc("aisle_updates", task=TASK, decision="started")
        record = {"update_id": f"recommend-{self.number:05d}", "trigger": trigger, "window": span}
        try:
            result = self.trainer.update(AdapterRegistry(self.cfg.registry), self.window.train,
                                         self.window.judged(rc.judge_unlisted_only),
                                         lineage={"window": span})
            record.update(result.record())
        except Exception as e:  # noqa: BLE001 - audited as failed, CURRENT untouched, the window is not retried
            log.exception("recommend update %d failed", self.number)
            record.update({"decision": "failed", "reason": f"{type(e).__name__}: {str(e)[:300]}"})
        # The state the decision leaves (trails, buffers, offset) is on disk before the decision is
        # audited: a restart after the audit line never reads the window's events again.
        self.window.decided()
        _save_state(self.state_path, self.trails, self.window, self.offset)
        ray.get(self.log.commit.remote(CONSUMER, self.offset))
        audit.append(self.audit_log, record)
        seconds = time.time() - self.running["started"]
        metrics.inc("aisle_updates", task=TASK, decision=record["decision"])
        metrics.observe("aisle_update_duration_s", seconds, task=TASK, decision=record["decision"])
        self.number += 1
        self.last_end, self.running = time.time(), None


TRAIL_LENGTH = 50  # items kept per shopper: the model reads its `history` newest of them


def _load_state(path: Path, cfg: StreamConfig) -> tuple[Trails, RecWindow]:
    """The shoppers' trails and the example buffers as they were at the committed offset."""
    rc = cfg.recommend
    window = RecWindow(cfg.salt, rc.holdout_share, rc.train_buffer, rc.fresh_buffer)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return Trails(TRAIL_LENGTH), window
    window.restore(data.get("buffers", {}))
    return Trails.from_state(data.get("trails", {}), TRAIL_LENGTH), window


def _save_state(path: Path, trails: Trails, window: RecWindow, offset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"offset": offset, "trails": trails.state(), "buffers": window.state()}))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get_or_create_rec_updater(cfg: StreamConfig):
    return RecUpdater.options(name=RECOMMENDER_NAME, namespace=NAMESPACE, get_if_exists=True,
                              resources=dict(cfg.state_resources)).remote(to_dict(cfg))


def get_rec_updater():
    return ray.get_actor(RECOMMENDER_NAME, namespace=NAMESPACE)
