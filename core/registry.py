"""Adapter registry: versioned, atomically published LoRA adapters per task, one class for every store.

Layout (core.registry_format names every file; core.registry_store says how each store keeps it)::

    <root>/<task>/v1/            the caller's artifact files (the model in ``adapter/``), plus
                                 config.json, metrics.json, lineage.json, meta.json (written last)
    <root>/<task>/v2/ ...
    <root>/<task>/CURRENT        the live version name ("v2")
    <root>/<task>/history.jsonl  one JSON line per pointer move:
                                 {"ts", "action": "promote"|"rollback", "from", "to", "reason"}

The root is a local directory or an object-store URI (``s3://bucket/prefix``); `AdapterRegistry(root)`
opens the matching store (`core.registry_store.open_store`) and the rules below hold on both.

Guarantees
----------
* ``create_version`` publishes a whole version or none: a reader never sees a partial one, and
  concurrent writers (threads, processes, machines) get distinct version numbers.
* ``CURRENT`` is replaced atomically; the history line follows it.
* Pointer moves (promote / rollback) and ``update_metrics`` run under the store's exclusive guard
  (a file lock locally, a lease on an object store), so two writers cannot interleave their
  read-modify-write; ``promote(expected_current=)`` is a compare-and-swap.
* Rollback semantics: history is replayed as a stack (promote pushes the version it replaced,
  rollback pops), so rolling back twice undoes the last two promotions still in effect.
* Promoting the version that is already CURRENT is a no-op and writes no history line.
* Weights are read through :meth:`VersionInfo.local_dir`: the version's folder itself locally, a
  cached download from an object store.

No Ray imports (the serving layer uses :attr:`VersionInfo.model_id` as its multiplexed model id).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

from core.registry_format import (  # noqa: F401 - the public names are re-exported from here
    ADAPTER_DIR,
    CONFIG_FILE,
    CURRENT_FILE,
    HISTORY_FILE,
    LINEAGE_FILE,
    META_FILE,
    METRICS_FILE,
    RegistryError,
    UnknownTaskError,
    UnknownVersionError,
    VERSION_RE,
    VersionInfo,
    check_metrics,
    check_new_version,
    check_task,
    check_version,
    dumps,
    model_id,
    parse_history,
    parse_model_id,
    rollback_target,
    stage_version,
    utcnow,
)
from core.registry_store import download_version, open_store

__all__ = [
    "ADAPTER_DIR",
    "RegistryError",
    "UnknownTaskError",
    "UnknownVersionError",
    "VersionInfo",
    "model_id",
    "parse_model_id",
    "AdapterRegistry",
    "offline_anchor",
]

logger = logging.getLogger("aisle.registry")


class AdapterRegistry:
    """Registry of adapter versions in a local directory or under an object-store prefix (module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self._store = open_store(root)
        self.root = self._store.root
        """The local directory (a Path) or the object-store URI (a str)."""

    def __repr__(self) -> str:
        return f"AdapterRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------ reading

    def _complete(self, task: str) -> list[str]:
        """The task's complete versions; UnknownTaskError if it has none."""
        complete = self._store.scan(check_task(task))[1]
        if not complete:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return complete

    def _load(self, task: str, version: str) -> VersionInfo:
        """Read one version's records; RegistryError if one is unreadable."""
        docs: dict[str, dict] = {}
        for name in (META_FILE, CONFIG_FILE, METRICS_FILE, LINEAGE_FILE):
            try:
                doc = json.loads(self._store.read_text(task, version, name))
            except FileNotFoundError:
                if name == META_FILE:
                    raise UnknownVersionError(f"version {task}@{version} is corrupt or incomplete: "
                                              f"{META_FILE} missing") from None
                doc = {}
            except (OSError, ValueError) as exc:
                raise RegistryError(f"version {task}@{version} is corrupt: cannot read {name}: {exc}") from exc
            if not isinstance(doc, dict):
                raise RegistryError(f"version {task}@{version} is corrupt: {name} is not a JSON object")
            docs[name] = doc
        return self._info(task, version, docs[CONFIG_FILE], docs[METRICS_FILE], docs[LINEAGE_FILE],
                          str(docs[META_FILE].get("created_at", "")))

    def _info(self, task: str, version: str, config: dict, metrics: dict, lineage: dict,
              created_at: str) -> VersionInfo:
        uri = self._store.version_uri(task, version)
        return VersionInfo(task=task, version=version, path=self._store.version_path(task, version), config=config,
                           metrics=metrics, lineage=lineage, created_at=created_at, uri=uri,
                           fetch=download_version if uri else None)

    def tasks(self) -> list[str]:
        """Sorted names of tasks that have at least one complete version."""
        return sorted(t for t in self._store.task_names() if self._store.scan(t)[1])

    def versions(self, task: str) -> list[VersionInfo]:
        """All valid versions of ``task``, ascending by number; corrupt ones are skipped with a warning.

        Raises UnknownTaskError if the task has no valid version.
        """
        _, complete, broken = self._store.scan(check_task(task))
        for version in broken:
            logger.warning("skipping version %s@%s: it is corrupt (%s missing in %s)", task, version, META_FILE,
                           self._store.where(task, version))
        out = []
        for version in complete:
            try:
                out.append(self._load(task, version))
            except RegistryError as exc:
                logger.warning("skipping %s", exc)
        if not out:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return out

    def get(self, task: str, version: str | None = None) -> VersionInfo:
        """One version; ``version=None`` means CURRENT.

        UnknownTaskError if the task has no versions; UnknownVersionError if the
        version does not exist or (for None) nothing is promoted yet;
        RegistryError if the version is corrupt.
        """
        _, complete, broken = self._store.scan(check_task(task))
        if not complete:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        if version is None:
            version = self.current(task)
            if version is None:
                raise UnknownVersionError(f"task {task!r} has no CURRENT version (nothing promoted yet)")
        check_version(version)
        if version in broken:
            raise RegistryError(f"version {task}@{version} is corrupt: {META_FILE} missing in "
                                f"{self._store.where(task, version)}")
        if version not in complete:
            raise UnknownVersionError(f"unknown version {task}@{version}")
        return self._load(task, version)

    def current(self, task: str) -> str | None:
        """The live version name of ``task``, or None if nothing was promoted (or the task is unknown)."""
        try:
            value = self._store.read_text(check_task(task), CURRENT_FILE).strip()
        except FileNotFoundError:
            return None
        if not value:
            return None
        if not VERSION_RE.fullmatch(value):
            raise RegistryError(f"task {task!r} has a corrupt {CURRENT_FILE}: {value!r}")
        return value

    def history(self, task: str) -> list[dict]:
        """Pointer moves of ``task``, oldest first ([] if none). Unparseable lines are skipped with a warning."""
        try:
            text = self._store.read_text(check_task(task), HISTORY_FILE)
        except FileNotFoundError:
            return []
        return parse_history(text, self._store.where(task, HISTORY_FILE))

    def local_dir(self, task: str, version: str | None = None) -> Path:
        """A local directory with the files of ``task@version`` (None: CURRENT); see VersionInfo.local_dir."""
        return self.get(task, version).local_dir()

    # ------------------------------------------------------------------ writing

    def create_version(
        self,
        task: str,
        write_artifacts: Callable[[Path], None],
        *,
        config: dict,
        metrics: dict,
        lineage: dict | None = None,
    ) -> VersionInfo:
        """Atomically publish a new version ``v<N>`` (N above every number in use) of ``task``.

        ``write_artifacts(dir)`` writes the adapter files into a staging dir;
        it must not write config.json / metrics.json / lineage.json / meta.json.
        If it raises, nothing is published and the exception is re-raised.
        The new version is NOT promoted.
        """
        check_task(task)
        metrics, lineage = check_new_version(task, config, metrics, lineage)
        with self._store.staging(task) as staged:
            created_at = stage_version(staged, task, write_artifacts, config, metrics, lineage)
            version = self._store.publish(
                task, staged, lambda v: dumps({"version": v, "task": task, "created_at": created_at}))
        logger.info("created %s@%s", task, version)
        return self._info(task, version, json.loads(dumps(config)), json.loads(dumps(metrics)),
                          json.loads(dumps(lineage)), created_at)

    # ---- pointer operations -----------------------------------------------------------------

    def _move_pointer(self, task: str, action: str, old: str | None, new: str, reason: str) -> None:
        """Write CURRENT, then the history line. Caller holds the guard."""
        self._store.write_text(task, CURRENT_FILE, text=new + "\n")
        entry = {"ts": utcnow(), "action": action, "from": old, "to": new, "reason": reason}
        self._store.append_line(task, HISTORY_FILE, json.dumps(entry, sort_keys=True, default=str))

    def promote(self, task: str, version: str, *, reason: str = "", expected_current: str | None = None) -> None:
        """Make ``version`` CURRENT and record it in history.

        UnknownTaskError / UnknownVersionError if it does not exist. Promoting the
        version that is already CURRENT is a no-op and records nothing.
        ``expected_current``: compare-and-swap; RegistryError if CURRENT is not that
        version any more (an update gated against a version an admin has since replaced).
        """
        self._complete(task)
        check_version(version)
        with self._store.guard(task):
            if not self._store.is_complete(task, version):
                raise UnknownVersionError(f"cannot promote unknown version {task}@{version}")
            old = self.current(task)
            if expected_current is not None and old != expected_current:
                raise RegistryError(f"CURRENT of {task} moved to {old} (expected {expected_current})")
            if old == version:
                logger.info("promote %s@%s: already CURRENT, nothing to do", task, version)
                return
            self._move_pointer(task, "promote", old, version, reason)
        logger.info("promoted %s: %s -> %s (%s)", task, old, version, reason)

    def rollback(self, task: str, *, reason: str = "") -> str:
        """Move CURRENT back to the version it replaced at the latest promote still in effect.

        History is replayed as a stack (promote pushes its ``from``, rollback pops),
        so repeated rollbacks undo successive promotions. Returns the new CURRENT.
        RegistryError if there is nothing earlier to roll back to.
        """
        self._complete(task)
        with self._store.guard(task):
            target = rollback_target(self.history(task))
            if target is None:
                raise RegistryError(f"no earlier version to roll back to for task {task}")
            if not self._store.is_complete(task, target):
                raise UnknownVersionError(f"cannot roll back task {task} to {target}: version missing or corrupt")
            old = self.current(task)
            self._move_pointer(task, "rollback", old, target, reason)
        logger.info("rolled back %s: %s -> %s (%s)", task, old, target, reason)
        return target

    def update_metrics(self, task: str, version: str, metrics: dict) -> None:
        """Merge ``metrics`` into the version's metrics.json (atomic replace, under the guard)."""
        self._complete(task)
        check_version(version)
        new = check_metrics(metrics, model_id(task, version))
        with self._store.guard(task):
            if not self._store.is_complete(task, version):
                raise UnknownVersionError(f"cannot update metrics of unknown version {task}@{version}")
            merged = self.get(task, version).metrics
            merged.update(new)
            self._store.write_text(task, version, METRICS_FILE, text=dumps(merged))


def offline_anchor(registry: AdapterRegistry, task: str) -> VersionInfo | None:
    """The newest version trained offline (lineage ``trigger: offline``, as the training jobs record
    it), or None: what the stream's updates are held against and the search ensemble blends with."""
    offline = [v for v in registry.versions(task) if v.lineage.get("trigger") == "offline"]
    return offline[-1] if offline else None
