"""Adapter registry: versioned, atomically-published LoRA adapters per task.

Layout on disk::

    <root>/<task>/v1/            artifact files written by the caller, plus
                                 config.json, metrics.json, lineage.json, meta.json
    <root>/<task>/v2/ ...
    <root>/<task>/CURRENT        text file holding the live version name ("v2")
    <root>/<task>/history.jsonl  one JSON line per pointer move:
                                 {"ts", "action": "promote"|"rollback", "from", "to", "reason"}
    <root>/<task>/.lock          flock target serialising pointer moves / metric updates
    <root>/<task>/.tmp-*         in-flight (or crashed) version builds; never listed

Guarantees
----------
* ``create_version`` is atomic: the version is built in a hidden temp dir and
  published with a single ``os.rename``; a reader never sees a partial version.
  Concurrent writers (threads or processes) get distinct version numbers: if the
  rename loses a race for ``vN`` it is retried with a higher number.
* ``CURRENT`` is replaced atomically (temp file + fsync + ``os.replace``).
* Pointer moves (promote / rollback) and ``update_metrics`` run under an
  exclusive ``fcntl.flock`` on ``<root>/<task>/.lock``, so two processes cannot
  interleave their read-modify-write.
* Rollback semantics: history is replayed as a stack (promote pushes the
  version it replaced, rollback pops), so rolling back twice undoes the last two
  promotions still in effect.
* Promoting the version that is already CURRENT is a no-op and writes no
  history line.

Object stores
-------------
``AdapterRegistry("s3://bucket/prefix")`` (any URI with a scheme, see core.storage) returns a
:class:`core.remote_registry.ObjectStoreRegistry`: same layout, same API, with the differences
its module docstring lists (no rename: ``meta.json`` written last is the completion marker; the
pointer lock is a lease object). Weights are read through :meth:`VersionInfo.local_dir`, which is
``path`` itself here and a cached download there.

Stdlib only; no Ray imports (the serving layer uses :attr:`VersionInfo.model_id`
as its multiplexed model id).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from core.registry_format import (  # noqa: F401 - the public names are re-exported from here
    CONFIG_FILE,
    CURRENT_FILE,
    HISTORY_FILE,
    LINEAGE_FILE,
    LOCK_FILE,
    META_FILE,
    METRICS_FILE,
    STALE_TMP_SECONDS,
    TMP_PREFIX,
    RegistryError,
    UnknownTaskError,
    UnknownVersionError,
    VersionInfo,
    check_new_version,
    fsync_dir,
    model_id,
    parse_history,
    parse_model_id,
    rollback_target,
    stage_version,
    _MAX_PUBLISH_ATTEMPTS,
    _TASK_RE,
    _VERSION_RE,
    _atomic_write,
    _check_metrics,
    _check_task,
    _check_version,
    _dumps,
    _utcnow,
    _version_number,
    _write_file,
)

__all__ = [
    "RegistryError",
    "UnknownTaskError",
    "UnknownVersionError",
    "VersionInfo",
    "model_id",
    "parse_model_id",
    "AdapterRegistry",
]

logger = logging.getLogger("aisle.registry")


class AdapterRegistry:
    """Filesystem-backed registry of adapter versions (see module docstring).

    A root with a URI scheme (``s3://...``) builds the object-store registry instead.
    """

    def __new__(cls, root: str | os.PathLike | None = None, *args: Any, **kwargs: Any):
        if cls is AdapterRegistry and root is not None:
            from core.storage import is_remote

            if is_remote(root):
                from core.remote_registry import ObjectStoreRegistry

                return super().__new__(ObjectStoreRegistry)
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.root.mkdir(parents=True, exist_ok=True)
        self._cleanup_stale_tmp()

    def __repr__(self) -> str:
        return f"AdapterRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------ paths

    def _task_dir(self, task: str) -> Path:
        return self.root / _check_task(task)

    def _version_dirs(self, task_dir: Path) -> list[tuple[int, str, Path]]:
        """All directories named like a version (valid or corrupt), by number."""
        out = []
        try:
            entries = list(os.scandir(task_dir))
        except FileNotFoundError:
            return []
        for e in entries:
            if _VERSION_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                out.append((_version_number(e.name), e.name, Path(e.path)))
        out.sort()
        return out

    def _has_versions(self, task: str) -> bool:
        return any((p / META_FILE).is_file() for _, _, p in self._version_dirs(self._task_dir(task)))

    def _require_task(self, task: str) -> Path:
        task_dir = self._task_dir(task)
        if not self._has_versions(task):
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return task_dir

    def _cleanup_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        try:
            task_entries = [e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for task_entry in task_entries:
            if not _TASK_RE.fullmatch(task_entry.name):
                continue
            try:
                entries = list(os.scandir(task_entry.path))
            except OSError:
                continue
            for e in entries:
                if not e.name.startswith(TMP_PREFIX):
                    continue
                try:
                    if e.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                    logger.info("removed stale temp entry %s", e.path)
                except OSError:
                    pass

    @contextmanager
    def _locked(self, task_dir: Path) -> Iterator[None]:
        fd = os.open(task_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reading

    def _load(self, task: str, version: str, vdir: Path) -> VersionInfo:
        """Read one version dir; RegistryError if it is corrupt."""
        meta_path = vdir / META_FILE
        if not meta_path.is_file():
            raise RegistryError(f"version {task}@{version} is corrupt: {META_FILE} missing in {vdir}")
        docs: dict[str, dict] = {}
        for name in (META_FILE, CONFIG_FILE, METRICS_FILE, LINEAGE_FILE):
            try:
                with open(vdir / name, encoding="utf-8") as f:
                    doc = json.load(f)
            except FileNotFoundError:
                doc = {}
            except (OSError, ValueError) as exc:
                raise RegistryError(f"version {task}@{version} is corrupt: cannot read {name}: {exc}") from exc
            if not isinstance(doc, dict):
                raise RegistryError(f"version {task}@{version} is corrupt: {name} is not a JSON object")
            docs[name] = doc
        return VersionInfo(
            task=task,
            version=version,
            path=vdir,
            config=docs[CONFIG_FILE],
            metrics=docs[METRICS_FILE],
            lineage=docs[LINEAGE_FILE],
            created_at=str(docs[META_FILE].get("created_at", "")),
        )

    def tasks(self) -> list[str]:
        """Sorted names of tasks that have at least one (non-corrupt-meta) version."""
        out = []
        for e in os.scandir(self.root):
            if e.is_dir(follow_symlinks=False) and _TASK_RE.fullmatch(e.name) and self._has_versions(e.name):
                out.append(e.name)
        return sorted(out)

    def versions(self, task: str) -> list[VersionInfo]:
        """All valid versions of ``task``, ascending by number; corrupt ones are skipped with a warning.

        Raises UnknownTaskError if the task has no valid version.
        """
        task_dir = self._task_dir(task)
        out = []
        for _, version, vdir in self._version_dirs(task_dir):
            try:
                out.append(self._load(task, version, vdir))
            except RegistryError as exc:
                logger.warning("skipping %s", exc)
        if not out:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return out

    def get(self, task: str, version: str | None = None) -> VersionInfo:
        """One version; ``version=None`` means CURRENT.

        UnknownTaskError if the task has no versions; UnknownVersionError if the
        version does not exist or (for None) nothing is promoted yet;
        RegistryError if the version directory is corrupt.
        """
        task_dir = self._require_task(task)
        if version is None:
            version = self.current(task)
            if version is None:
                raise UnknownVersionError(f"task {task!r} has no CURRENT version (nothing promoted yet)")
        _check_version(version)
        vdir = task_dir / version
        if not vdir.is_dir():
            raise UnknownVersionError(f"unknown version {task}@{version}")
        return self._load(task, version, vdir)

    def current(self, task: str) -> str | None:
        """The live version name of ``task``, or None if nothing was promoted (or the task is unknown)."""
        path = self._task_dir(task) / CURRENT_FILE
        try:
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not value:
            return None
        if not _VERSION_RE.fullmatch(value):
            raise RegistryError(f"task {task!r} has a corrupt {CURRENT_FILE} file: {value!r}")
        return value

    def history(self, task: str) -> list[dict]:
        """Pointer moves of ``task``, oldest first ([] if none). Unparseable lines are skipped with a warning."""
        path = self._task_dir(task) / HISTORY_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return parse_history(text, path)

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
        """Atomically publish a new version ``v<N>`` (N = 1 + highest existing) of ``task``.

        ``write_artifacts(dir)`` writes the adapter files into a hidden temp dir;
        it must not write config.json / metrics.json / lineage.json / meta.json.
        If it raises, the temp dir is removed and the exception re-raised.
        The new version is NOT promoted.
        """
        task_dir = self._task_dir(task)
        metrics, lineage = check_new_version(task, config, metrics, lineage)
        task_dir.mkdir(parents=True, exist_ok=True)

        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=task_dir))
        try:
            created_at = stage_version(tmp, task, write_artifacts, config, metrics, lineage)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; servers may run as another user

            highest = max((n for n, _, _ in self._version_dirs(task_dir)), default=0)
            number = highest + 1
            for _ in range(_MAX_PUBLISH_ATTEMPTS):
                version = f"v{number}"
                # meta.json names the version, so (re)write it for each attempt.
                _write_file(tmp / META_FILE, _dumps({"version": version, "task": task, "created_at": created_at}))
                fsync_dir(tmp)
                try:
                    os.rename(tmp, task_dir / version)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                        raise
                    highest = max((n for n, _, _ in self._version_dirs(task_dir)), default=0)
                    number = max(number + 1, highest + 1)
                    continue
                break
            else:
                raise RegistryError(
                    f"could not publish a new version of task {task!r}: "
                    f"{_MAX_PUBLISH_ATTEMPTS} version numbers taken by concurrent writers"
                )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(task_dir)
        logger.info("created %s@%s", task, version)
        return VersionInfo(
            task=task,
            version=version,
            path=task_dir / version,
            config=json.loads(_dumps(config)),
            metrics=json.loads(_dumps(metrics)),
            lineage=json.loads(_dumps(lineage)),
            created_at=created_at,
        )

    # ---- storage primitives of the pointer operations (ObjectStoreRegistry overrides these) ----

    def _guard(self, task: str):
        """Mutual exclusion of pointer and metrics writers of one task: a file lock here."""
        return self._locked(self._task_dir(task))

    def _is_complete(self, task: str, version: str) -> bool:
        return (self._task_dir(task) / version / META_FILE).is_file()

    def _move_pointer(self, task: str, action: str, old: str | None, new: str, reason: str) -> None:
        """Write CURRENT then append the history line. Caller holds the guard."""
        task_dir = self._task_dir(task)
        _atomic_write(task_dir / CURRENT_FILE, new + "\n")
        entry = {"ts": _utcnow(), "action": action, "from": old, "to": new, "reason": reason}
        with open(task_dir / HISTORY_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _write_metrics(self, task: str, version: str, metrics: dict) -> None:
        _atomic_write(self._task_dir(task) / version / METRICS_FILE, _dumps(metrics))

    # ---- pointer operations -----------------------------------------------------------------

    def promote(self, task: str, version: str, *, reason: str = "", expected_current: str | None = None) -> None:
        """Make ``version`` CURRENT and record it in history.

        UnknownTaskError / UnknownVersionError if it does not exist. Promoting the
        version that is already CURRENT is a no-op and records nothing.
        ``expected_current``: compare-and-swap; RegistryError if CURRENT is not that
        version any more (an update gated against a version an admin has since replaced).
        """
        self._require_task(task)
        _check_version(version)
        with self._guard(task):
            if not self._is_complete(task, version):
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
        self._require_task(task)
        with self._guard(task):
            target = rollback_target(self.history(task))
            if target is None:
                raise RegistryError(f"no earlier version to roll back to for task {task}")
            if not self._is_complete(task, target):
                raise UnknownVersionError(f"cannot roll back task {task} to {target}: version missing or corrupt")
            old = self.current(task)
            self._move_pointer(task, "rollback", old, target, reason)
        logger.info("rolled back %s: %s -> %s (%s)", task, old, target, reason)
        return target

    def update_metrics(self, task: str, version: str, metrics: dict) -> None:
        """Merge ``metrics`` into the version's metrics.json (atomic replace, under the guard)."""
        self._require_task(task)
        _check_version(version)
        new = _check_metrics(metrics, model_id(task, version))
        with self._guard(task):
            if not self._is_complete(task, version):
                raise UnknownVersionError(f"cannot update metrics of unknown version {task}@{version}")
            merged = self.get(task, version).metrics
            merged.update(new)
            self._write_metrics(task, version, merged)
