"""The online click layer's durable shell: a ClickModel with its checkpoint, its audit file and its
published snapshot. No Ray: `actors.click_layer` runs it in a named actor that tails the FeedbackLog.

Durability. `checkpoint()` writes the model's state (which holds the log offset it covers) with
temp + fsync + rename; a restarted layer loads it and the actor replays the log from its offset, so
nothing acknowledged is lost and nothing is counted twice (`ClickModel.observe` skips records below
its offset). Admin operations checkpoint at once: a freeze survives a crash that follows it. Audit
lines (activations, freezes, admin operations) are appended with fsync; those a replay decides
again after a crash are recognised by (offset, key, decision) and written once.

Snapshots. `publish()` builds the snapshot the ingress applies when the model has read new
records or an admin changed something, else returns the last one: asking costs nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from core import audit, storage
from core.click_config import ClickModelConfig
from core.click_model import ClickModel, catalog_for
from core.click_snapshot import ProductCatalog, Snapshot

STATE_FILE = "state.json"
AUDIT_FILE = "audit.jsonl"
MISSING_VALUES = frozenset({"", "n/a", "na", "none", "null", "-", "unknown"})


def read_product_catalog(catalog_dir: str, cfg: ClickModelConfig) -> ProductCatalog:
    """The catalog's products table as the click model's lookups; placeholder attribute values
    ('n/a', 'none', ...) count as missing, so no key pools the products that lack an attribute."""
    columns = ["product_id", cfg.segment_field, *cfg.attribute_fields]
    products = storage.read_parquet(storage.join(catalog_dir, "products.parquet"))
    missing = [c for c in columns if c not in products.columns]
    if missing:
        raise ValueError(f"click_model: the catalog's products table has no column {', '.join(missing)} "
                         f"(columns: {', '.join(map(str, products.columns))})")
    phrase_fields = [c for c in ("product_type",) if c in products.columns]
    rows = []
    for row in products[list(dict.fromkeys(columns + phrase_fields))].to_dict("records"):
        for name in cfg.attribute_fields:
            value = row.get(name)
            if value is None or str(value).strip().lower() in MISSING_VALUES:
                row[name] = None
        rows.append(row)
    return catalog_for(rows, cfg, phrase_fields=phrase_fields)


class OnlineLayer:
    """One ClickModel, its checkpoint in `state_dir`, its audit lines and its latest snapshot (thread-safe)."""

    def __init__(self, cfg: ClickModelConfig, catalog: ProductCatalog, state_dir: str | Path):
        self.cfg, self.catalog = cfg, catalog
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        state_path = self.state_dir / STATE_FILE
        if state_path.exists():
            self.model = ClickModel.from_state(cfg, catalog, json.loads(state_path.read_text(encoding="utf-8")))
        else:
            self.model = ClickModel(cfg, catalog)
        self.restored_offset = self.model.offset
        self._audited = {_audit_id(r) for r in audit.read(self.audit_path) if r.get("offset", -1) >= self.model.offset}
        self._snapshot: Snapshot | None = None
        self._published_at = (None, None)  # (offset, epoch) of the last snapshot
        self.checkpointed_at = time.monotonic()
        self.counts: dict[str, int] = {}

    @property
    def audit_path(self) -> Path:
        return self.state_dir / AUDIT_FILE

    @property
    def offset(self) -> int:
        return self.model.offset

    def observe(self, records: Iterable[dict]) -> dict[str, int]:
        """Learns from log records (in order); their counts by outcome. Audit lines are written now."""
        with self._lock:
            counts = self.model.observe(records)
            for reason, n in counts.items():
                self.counts[reason] = self.counts.get(reason, 0) + n
            self._write_audit()
            return counts

    def publish(self) -> Snapshot:
        """The snapshot of the model as it stands (rebuilt only when its offset or epoch moved)."""
        with self._lock:
            stamp = (self.model.offset, self.model.epoch)
            if self._snapshot is None or stamp != self._published_at:
                self._snapshot, self._published_at = self.model.snapshot(), stamp
                self._write_audit()
            return self._snapshot

    def consolidation_snapshot(self) -> Snapshot:
        """What the slow path may consolidate: the snapshot of the keys active for at least
        `consolidate_after_s` of event time (built on each call; an update asks once)."""
        with self._lock:
            return self.model.snapshot(self.cfg.consolidate_after_s)

    def checkpoint(self) -> None:
        with self._lock:
            self._write_audit()
            state = self.model.state()
            storage.write_bytes(self.state_dir / STATE_FILE, json.dumps(state, separators=(",", ":")).encode("utf-8"))
            self.checkpointed_at = time.monotonic()

    # ---- admin: each one is audited and checkpointed before it answers ----------------------
    def freeze(self, key: str, reason: str) -> dict:
        return self._admin(lambda: self.model.freeze(key, f"admin: {reason}".strip() if reason else "admin: frozen by an operator"))

    def clear(self, key: str) -> dict:
        return self._admin(lambda: self.model.clear(key))

    def set_enabled(self, enabled: bool) -> dict:
        return self._admin(lambda: self.model.set_enabled(enabled))

    def _admin(self, operation) -> dict:
        with self._lock:
            record = operation()
            self.checkpoint()
            return record

    def status(self, top: int = 10) -> dict:
        """The layer at a glance: offset, snapshot, active and frozen keys, counts by outcome."""
        with self._lock:
            snap = self.publish()
            frozen = sorted(k for k, s in self.model.guard.status.items() if s.get("state") == "frozen")
            largest = sorted(snap.effects, key=lambda e: -abs(e[1]))[:top]
            return {"offset": self.model.offset, "snapshot": snap.version, "enabled": self.model.enabled,
                    "event_ts": self.model.now, "keys_tracked": len(self.model.keys), "active_keys": len(snap.effects),
                    "frozen_keys": frozen, "largest_effects": [{"key": k, "effect": round(v, 4)} for k, v in largest],
                    "counts": dict(self.counts), "restored_offset": self.restored_offset}

    def suspect_accounts(self) -> dict[str, list[str]]:
        """{account: keys} for the accounts the model holds as suspects (`ClickModel.suspects`: credited
        on keys frozen as attacks, never buying): the slow path holds windows holding their events."""
        with self._lock:
            return {user: list(keys) for user, keys in self.model.suspects.items()}

    def _write_audit(self) -> None:
        for record in self.model.drain_audit():
            ident = _audit_id(record)
            if ident in self._audited:
                continue
            self._audited.add(ident)
            audit.append(self.audit_path, record)


def _audit_id(record: dict) -> tuple:
    return record.get("offset"), record.get("key"), record.get("decision"), record.get("reason")
