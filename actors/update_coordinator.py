"""UpdateCoordinator: the named actor that turns the feedback log into gated adapter updates.

A background thread reads new records from the FeedbackLog (consumer "coordinator"); once a record is
`policy.watch_s` old (the watch in which the click layer freezes an attack) it joins a pending
window; when the policy (`core.update_policy`) fires it runs one incremental update
(`train.incremental.run_update`: a candidate trained from the CURRENT adapter, in this actor by its
warm trainer (`train.warm`, `update.trainer: warm`) or by a Ray Train job, then the quality gate), writes
the decision to the audit log, and only then commits the log offset. So:
- killed mid-update: the restarted actor finds the in-flight marker, audits the update as
  "interrupted", re-reads the same window from the committed offset and runs the next update;
  CURRENT was never touched (only a gate pass moves it), so serving carries on;
- an event is used by exactly one decided update (offsets move only after the decision is durable);
- stopped (`stop()`, which `aisle.streaming.stop_stream` calls before it kills the actor): an update
  in flight is abandoned the same way, but its Ray Train run is ended first (the workers see the
  stop file), so Ray Train releases the CPUs it reserved; a hard kill leaves that to Ray Train's
  placement-group cleaner, which needs the dashboard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path

import ray

from actors.feedback_log import get_feedback_log
from core import audit
from core.click_quarantine import REPEATED_SEARCH
from core.config import from_dict, to_dict
from core.registry import AdapterRegistry
from core.stream_config import StreamConfig
from core.update_policy import HELD, PendingWindow, aged, flagged, surge
from ops import metrics
from ops.runtime import lower_priority

COORDINATOR_NAME = "aisle-update-coordinator"
NAMESPACE = "aisle"
CONSUMER = "coordinator"
READ_BATCH = 2000
log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class UpdateCoordinator:
    def __init__(self, cfg: dict):
        self.cfg = from_dict(StreamConfig, cfg)
        lower_priority(self.cfg.update.niceness)  # learning takes the cores serving and the click layer leave
        self.log = get_feedback_log()
        self.offset = ray.get(self.log.committed.remote(CONSUMER))
        texts = _product_texts(self.cfg.catalog_dir)
        self.window = PendingWindow(self.cfg.policy, texts, self.cfg.update.eta, self.cfg.update.max_weight)
        self.aging: list[dict] = []  # read, younger than policy.watch_s: not in a window yet
        self.texts, self.gate, self.trainer = texts, None, None
        self.inflight = Path(self.cfg.updates_dir) / "inflight.json"
        self.stop_file = Path(self.cfg.updates_dir) / "STOP"  # training runs end when it appears
        self.stop_file.unlink(missing_ok=True)  # a previous stop's
        self.number = len(audit.read(self.cfg.audit_log)) + 1
        self.last_end: float | None = None
        self.last_poll: float | None = None  # when the loop last read the log: a stuck loop shows here
        self.running: dict | None = None
        self.paused, self._force = False, False
        self._releases: list[tuple[dict, str]] = []  # held windows an operator released, in order
        self._audit_interrupted()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="update-coordinator", daemon=True)
        self._thread.start()

    # ---- control and status (answered while an update runs) ---------------------------------
    def status(self) -> dict:
        return {"offset": self.offset, "pending_events": len(self.window.records), "aging_events": len(self.aging),
                "pending_examples": self.window.examples, "running": self.running, "paused": self.paused,
                "next_update": self.number, "releases_queued": [h["update_id"] for h, _ in self._releases],
                "last_update_end": self.last_end, "last_poll": self.last_poll,
                "policy": to_dict(self.cfg.policy)}

    def trigger(self) -> None:
        """Start an update at the next poll if any event is pending (ignores thresholds and cooldown)."""
        self._force = True

    def pause(self, paused: bool = True) -> None:
        self.paused = paused

    def stop(self, timeout_s: float = 60.0) -> bool:
        """End the loop. An update in flight stops undecided: its training run ends at the next
        batch, nothing is audited or committed, and the next start audits it as interrupted and
        retries the window. True if the loop ended within `timeout_s`."""
        self._stop.set()
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.touch()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        self._warm_gate()
        while not self._stop.wait(self.cfg.policy.poll_s):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - the loop must outlive a bad poll; the error is logged
                log.exception("update coordinator poll failed")

    def _warm_gate(self) -> None:
        """Make the gate and score CURRENT and the offline adapter on its original set now, before
        the first window fills, so the first update pays only for its candidate. Events keep being
        acknowledged meanwhile (the FeedbackLog is another actor); on error the first update retries."""
        from train.incremental import Gate

        try:
            registry = AdapterRegistry(self.cfg.registry)
            if registry.current(self.cfg.task):
                self.gate = Gate(self.cfg, _backbone(self.cfg), threads=self.cfg.update.threads_per_worker)
                self.gate.warm(registry)
                self._warm_trainer()
        except Exception:  # noqa: BLE001 - logged; _update makes the gate again and audits a failure
            log.exception("warming the gate failed")
            self.gate = None

    def _poll(self) -> None:
        if self._releases and not self.paused and not self._stop.is_set():
            self._run_release()
        while True:
            batch = ray.get(self.log.read.remote(self.offset, READ_BATCH))
            self.aging.extend(batch["events"])
            self.offset = batch["next_offset"]
            if self.offset >= batch["end_offset"] or not batch["events"]:
                break
        # Events join the window once the watch has passed over them (policy.watch_s); until then
        # only the fast path uses them. The log offset is committed only past decided windows, so
        # a restart reads the aging events again.
        ready = aged(self.aging, time.time(), self.cfg.policy.watch_s)
        if ready:
            self.window.add(self.aging[:ready])
            del self.aging[:ready]
        self.last_poll = time.time()
        reason = self.window.due(time.time(), self.last_end, force=self._force)
        if reason and not self.paused and not self._stop.is_set():
            self._force = False
            self._update(reason)

    def _update(self, trigger: str) -> None:
        span = self.window.span()
        policy = self.cfg.policy
        held = (surge(span, audit.read(self.cfg.audit_log), policy.surge_factor)
                or flagged(self.window.records, policy.max_flagged_share, policy.min_flagged) or self._attack_hold())
        if self._decide(self.cfg, trigger, self.window.records, span, held) is None:
            return
        # The window's events stay in the log either way; the offset moves past them once the
        # decision is on disk, so a window that cannot train does not block the ones after it.
        ray.get(self.log.commit.remote(CONSUMER, span["end_offset"]))
        self.inflight.unlink(missing_ok=True)
        self.window.clear()
        self.last_end = time.time()

    def _decide(self, cfg: StreamConfig, trigger: str, records: list[dict], span: dict, held: str | None = None,
                released: str | None = None) -> dict | None:
        """Train and gate one window (or audit why it is held untrained); the decision is audited and
        returned. None when stop() ended it undecided (the in-flight marker stays for the next start)."""
        from train.incremental import Gate, UpdateStopped, run_update

        self.running = {"number": self.number, "trigger": trigger, "started": time.time(), **span,
                        **({"released": released} if released else {})}
        _write_json(self.inflight, self.running)
        metrics.inc("aisle_updates", task=cfg.task, decision="started")
        try:
            if held:
                raise _Held(held)
            if self.gate is None and AdapterRegistry(cfg.registry).current(cfg.task):
                self.gate = Gate(cfg, _backbone(cfg), threads=cfg.update.threads_per_worker)
            online = self._online()
            touched = self.gate.touched_queries(*online) if online and self.gate is not None else frozenset()
            outcome = run_update(cfg, records, self.number, self.gate, self.texts, span,
                                 stop_file=self.stop_file, trainer=self._warm_trainer(), touched=touched,
                                 online=online).as_record()
        except UpdateStopped:  # stop(): the in-flight marker stays, the next start audits it as interrupted
            self.running = None
            return None
        except Exception as e:  # noqa: BLE001 - e.g. the gate's data is missing: audited, CURRENT untouched
            if not isinstance(e, _Held):
                log.exception("update %d failed", self.number)
            outcome = {"update_id": f"update-{self.number:05d}", "decision": "rejected" if isinstance(e, _Held) else "failed",
                       "parent": AdapterRegistry(cfg.registry).current(cfg.task), "candidate": None,
                       "reason": str(e) if isinstance(e, _Held) else f"{type(e).__name__}: {str(e)[:300]}",
                       "examples": {"span": span, "events": span.get("events")}, "metrics": {},
                       "seconds": round(time.time() - self.running["started"], 2),
                       **({"held": True} if isinstance(e, _Held) else {})}
        record = {"trigger": trigger, **({"released": released} if released else {}), **outcome}
        audit.append(cfg.audit_log, record)
        _record_decision(cfg, outcome["decision"], time.time() - self.running["started"])
        self.number += 1
        self.running = None
        return record

    # ---- held windows, released by an operator --------------------------------------------------
    def release(self, update_id: str, reason: str = "") -> dict:
        """Queue a held window (audited `rejected` untrained: a traffic surge, the anomaly screen's
        share, or accounts the click layer quarantined) to be trained and gated like any window: the
        operator's answer to "review it, then release it by hand". It learns from its clicks, not from the
        click layer's distilled targets: the layer took those accounts' evidence out, and the operator
        has judged them genuine. The gate still decides. Returns {"queued": position} or
        {"error": message, "status": 404 | 409}."""
        lines = audit.read(self.cfg.audit_log)
        held = next((d for d in lines if d.get("update_id") == update_id), None)
        if held is None:
            return {"error": f"no update '{update_id}' in the audit log", "status": 404}
        if not held.get("held"):
            return {"error": f"{update_id} was not held ({held.get('decision')}: "
                             f"{str(held.get('reason', ''))[:120]}); only held windows are released", "status": 409}
        done = next((d for d in lines if d.get("released") == update_id and d.get("decision") != "failed"), None)
        if done is not None or any(r[0]["update_id"] == update_id for r in self._releases) \
                or (self.running or {}).get("released") == update_id:
            return {"error": f"{update_id} is already released" + (f" ({done['update_id']}: {done['decision']})" if done else ""),
                    "status": 409}
        span = held.get("examples", {}).get("span", {})
        first = ray.get(self.log.read.remote(span.get("first_offset", -1), 1))["events"] if span.get("events") else []
        if not first or first[0]["offset"] != span["first_offset"]:
            return {"error": f"{update_id}'s events (offsets {span.get('first_offset')}-{span.get('end_offset')}) are "
                             "no longer in the log", "status": 409}
        self._releases.append((held, reason))
        return {"queued": len(self._releases)}

    def _run_release(self) -> None:
        held, reason = self._releases.pop(0)
        span = held["examples"]["span"]
        records, offset = [], span["first_offset"]
        while offset < span["end_offset"]:
            batch = ray.get(self.log.read.remote(offset, min(READ_BATCH, span["end_offset"] - offset)))
            records += [r for r in batch["events"] if r["offset"] < span["end_offset"]]
            if not batch["events"]:
                break
            offset = batch["next_offset"]
        cfg = dataclasses.replace(self.cfg, update=dataclasses.replace(self.cfg.update, targets="clicks"))
        trigger = f"released {held['update_id']} by admin" + (f": {reason}" if reason else "")
        # The log's offset is not moved (the window was committed when it was held); only the
        # in-flight marker covers the release, so a stop mid-release audits it as interrupted.
        if self._decide(cfg, trigger, records, span, released=held["update_id"]) is not None:
            self.inflight.unlink(missing_ok=True)

    def _audit_interrupted(self) -> None:
        if not self.inflight.is_file():
            return
        try:
            was = json.loads(self.inflight.read_text())
        except ValueError:
            was = {}
        audit.append(self.cfg.audit_log, {
            "update_id": f"update-{was.get('number', self.number):05d}-interrupted", "decision": "interrupted",
            "reason": (f"the coordinator stopped mid-release of {was['released']}; CURRENT unchanged, release it again"
                       if was.get("released") else "the coordinator stopped mid-update; CURRENT unchanged, the window is retried"),
            "parent": AdapterRegistry(self.cfg.registry).current(self.cfg.task), "candidate": None,
            "examples": {"span": {k: was.get(k) for k in ("events", "first_offset", "end_offset")}},
            "metrics": {}, "seconds": round(time.time() - was.get("started", time.time()), 2)})
        _record_decision(self.cfg, "interrupted", time.time() - was.get("started", time.time()))
        self.inflight.unlink(missing_ok=True)
        self.number = len(audit.read(self.cfg.audit_log)) + 1


    def _attack_hold(self) -> str | None:
        """Why the window must not be promoted automatically: it holds unflagged events of accounts the
        click layer quarantined, behind keys it froze as attacks or searching one query again and again
        (None when it holds none, or no click layer runs)."""
        from actors.click_layer import get_click_layer

        try:
            suspects = ray.get(get_click_layer().suspect_accounts.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - no fast path running: the surge guard alone holds windows
            return None
        # flagged events never train (the anomaly screen caught them): only the rest can poison an update
        events = [r for r in self.window.records if r.get("user") in suspects and not r.get("flags")]
        if not events:
            return None
        users = {r["user"] for r in events}
        keys = sorted({k for u in users for k in suspects[u]})
        frozen = [k for k in keys if not k.startswith(REPEATED_SEARCH)]
        searched = [k for k in keys if k.startswith(REPEATED_SEARCH)]
        why = ", ".join(part for part in (
            f"{len(frozen)} click-layer keys frozen as attacks (e.g. {frozen[0]})" if frozen else "",
            f"{len(searched)} queries searched again and again (e.g. {searched[0]})" if searched else "") if part)
        return f"{len(events)} events from {len(users)} accounts behind {why}; {HELD}"

    def _online(self):
        """(snapshot, catalog) of the online click layer now, its keys active for at least
        click_model.consolidate_after_s (younger ones may yet be frozen as attacks): the gate's
        trend-touched queries and the update's distilled targets come from it; None when it is not running."""
        from actors.click_layer import get_click_layer
        from core.click_snapshot import Snapshot

        try:
            layer = get_click_layer()
            data, catalog = ray.get([layer.consolidation_snapshot.remote(), layer.product_catalog.remote()], timeout=10)
        except Exception:  # noqa: BLE001 - no fast path running: clicks train, the whole original set judges
            return None
        return Snapshot.from_bytes(data), catalog

    def _warm_trainer(self):
        """The warm trainer (`update.trainer: warm`), made once; None for Ray Train updates."""
        if self.trainer is None and self.cfg.update.trainer == "warm":
            from train.warm import WarmTrainer

            self.trainer = WarmTrainer(_backbone(self.cfg), self.cfg.update.threads_per_worker, self.cfg.update.use_gpu)
        return self.trainer


def _record_decision(cfg: StreamConfig, decision: str, seconds: float) -> None:
    metrics.inc("aisle_updates", task=cfg.task, decision=decision)
    metrics.observe("aisle_update_duration_s", seconds, task=cfg.task, decision=decision)


class _Held(Exception):
    """A window the policy holds back from automatic promotion (a traffic surge)."""


def _product_texts(catalog_dir: str) -> dict[str, str]:
    from data_pipelines.embed_catalog import catalog_texts

    return catalog_texts(catalog_dir)


def _backbone(cfg: StreamConfig) -> str:
    registry = AdapterRegistry(cfg.registry)
    current = registry.get(cfg.task)
    return current.config["model"]["backbone"]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def get_or_create_coordinator(cfg: StreamConfig):
    # The warm trainer trains in this actor: on a GPU when asked (a cluster's GPU node).
    gpus = 1 if cfg.update.use_gpu and cfg.update.trainer == "warm" else 0
    return UpdateCoordinator.options(name=COORDINATOR_NAME, namespace=NAMESPACE, get_if_exists=True,
                                     num_gpus=gpus, resources=dict(cfg.state_resources)).remote(to_dict(cfg))


def get_coordinator():
    return ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
