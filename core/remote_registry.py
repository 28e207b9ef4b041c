"""The adapter registry on an object store (``s3://bucket/prefix``): same layout and API as the local one.

``AdapterRegistry("s3://...")`` builds this class (see core.registry). Objects::

    <root>/<task>/v1/...             artifact files, config.json, metrics.json, lineage.json,
    <root>/<task>/v1/meta.json       written LAST: the completion marker
    <root>/<task>/CURRENT            the live version name, one object
    <root>/<task>/history.jsonl      pointer moves, one JSON line each (same format as local)
    <root>/<task>/.lock/<id>         lease objects of pointer moves in progress
    <root>/<task>/vN/.claim-<id>     a version number being claimed by a writer

What holds, and how it differs from the local registry
------------------------------------------------------
* A version appears whole. An object store cannot rename a directory, so a version is uploaded
  under its own prefix and ``meta.json`` is written last; readers (``versions``, ``get``,
  ``tasks``) list only versions that have it. A crashed upload leaves a prefix without
  ``meta.json``: never listed, its number skipped, its objects left for an operator to delete
  (the local registry's stale temp-dir cleanup has no counterpart here).
* Distinct version numbers for concurrent writers. A writer claims ``vN`` by writing
  ``vN/.claim-<random id>`` and then listing ``vN/``: it owns the number only if its claim is the
  only object there; otherwise it deletes its claim and tries a higher number. With a store that
  lists strongly after a write (AWS S3, MinIO), two writers cannot both own a number: whichever
  lists second sees the other's claim.
* ``CURRENT`` is one object and a PUT is atomic: readers see the old or the new pointer.
* Pointer moves and metric updates are serialised by a lease instead of ``flock``: a writer puts
  ``.lock/<random id>`` and holds the lease if it is the only object under ``.lock/`` (same
  argument as the claim). A lease left by a crashed process is broken by a waiter that has seen
  it unchanged for ``LEASE_STALE_S``, measured on the waiter's own clock (no clock skew). Inside
  the lease ``promote(expected_current=)`` is a real compare-and-swap. Two caveats, both outside
  the design (one writer: the update coordinator, plus an operator now and then): a holder stalled
  longer than ``LEASE_STALE_S`` can lose its exclusivity, and a store without strong list
  consistency makes the lease and the claim best-effort (the compare-and-swap then has a race
  window between reading CURRENT and writing it).
* History has no append on an object store: ``history.jsonl`` is read, extended and rewritten
  under the lease (one PUT). As locally, CURRENT is written first and the history line second.
* Weights are read from a local copy: ``VersionInfo.path`` is the cache directory
  (``$AISLE_CACHE_DIR/registry/<scheme>/<bucket>/<prefix>/<task>/<version>``, default
  ``~/.cache/aisle``) and ``VersionInfo.local_dir()`` fills it on first use (download into a temp
  dir, then one rename). The cached copy is reused while its meta.json has the version's
  ``created_at``; its metrics.json may be older than the store's (``VersionInfo.metrics`` is
  authoritative).

Endpoint and credentials: the AWS environment variables, see core.storage.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from core import storage
from core.registry import AdapterRegistry
from core.registry_format import (
    CONFIG_FILE,
    CURRENT_FILE,
    HISTORY_FILE,
    LINEAGE_FILE,
    META_FILE,
    METRICS_FILE,
    RegistryError,
    UnknownTaskError,
    UnknownVersionError,
    VersionInfo,
    _MAX_PUBLISH_ATTEMPTS,
    _TASK_RE,
    _VERSION_RE,
    _check_task,
    _check_version,
    _dumps,
    _utcnow,
    _version_number,
    check_new_version,
    parse_history,
    stage_version,
)

__all__ = ["ObjectStoreRegistry", "download_version", "CLAIM_PREFIX", "LEASE_DIR"]

logger = logging.getLogger("aisle.registry")

CLAIM_PREFIX = ".claim-"
LEASE_DIR = ".lock"
LEASE_STALE_S = 60.0
"""A lease seen unchanged this long by a waiter is taken to be a crashed holder's and removed."""
LEASE_WAIT_S = 300.0
"""A pointer move gives up (RegistryError) after waiting this long for the lease."""


class ObjectStoreRegistry(AdapterRegistry):
    """Registry of adapter versions on an object store (see module docstring)."""

    def __init__(self, root: str | os.PathLike):
        from pyarrow import fs as pafs

        text = os.fspath(root)
        if not storage.is_remote(text):
            raise ValueError(f"{text!r} is not an object-store URI; use AdapterRegistry for local paths")
        self.root = text.rstrip("/")
        fs, path = storage.resolve(self.root)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise RegistryError(f"registry {self.root}: bucket {bucket!r} does not exist "
                                "(or is not visible with the AWS_* environment in use)")
        parts = urlsplit(self.root)
        self._cache = storage.cache_root() / "registry" / parts.scheme / parts.netloc / parts.path.strip("/")

    def __repr__(self) -> str:
        return f"AdapterRegistry({self.root!r})"

    # ------------------------------------------------------------------ names

    def _uri(self, task: str, *parts: str) -> str:
        return storage.join(self.root, _check_task(task), *parts)

    def _scan(self, task: str) -> tuple[set[int], list[str]]:
        """(every version number with any object, complete version names sorted by number)."""
        numbers, complete = set(), []
        for rel in storage.list_files(self._uri(task)):
            head, _, rest = rel.partition("/")
            if not rest or not _VERSION_RE.fullmatch(head):
                continue
            numbers.add(_version_number(head))
            if rest == META_FILE:
                complete.append(head)
        return numbers, sorted(complete, key=_version_number)

    def _require_task(self, task: str) -> list[str]:
        complete = self._scan(task)[1]
        if not complete:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return complete

    def _is_complete(self, task: str, version: str) -> bool:
        return storage.is_file(self._uri(task, version, META_FILE))

    # ------------------------------------------------------------------ reading

    def _load(self, task: str, version: str) -> VersionInfo:
        vuri = self._uri(task, version)
        docs: dict[str, dict] = {}
        for name in (META_FILE, CONFIG_FILE, METRICS_FILE, LINEAGE_FILE):
            try:
                doc = json.loads(storage.read_text(storage.join(vuri, name)))
            except FileNotFoundError:
                if name == META_FILE:
                    raise UnknownVersionError(f"unknown version {task}@{version} (no {META_FILE}: "
                                              "never completed)") from None
                doc = {}
            except (OSError, ValueError) as exc:
                raise RegistryError(f"version {task}@{version} is corrupt: cannot read {name}: {exc}") from exc
            if not isinstance(doc, dict):
                raise RegistryError(f"version {task}@{version} is corrupt: {name} is not a JSON object")
            docs[name] = doc
        return VersionInfo(
            task=task, version=version, path=self._cache / task / version, config=docs[CONFIG_FILE],
            metrics=docs[METRICS_FILE], lineage=docs[LINEAGE_FILE],
            created_at=str(docs[META_FILE].get("created_at", "")), uri=vuri,
        )

    def tasks(self) -> list[str]:
        return sorted(name for name, is_dir in storage.list_dir(self.root)
                      if is_dir and _TASK_RE.fullmatch(name) and self._scan(name)[1])

    def versions(self, task: str) -> list[VersionInfo]:
        out = []
        for version in self._scan(task)[1]:
            try:
                out.append(self._load(task, version))
            except RegistryError as exc:
                logger.warning("skipping %s", exc)
        if not out:
            raise UnknownTaskError(f"unknown task {task!r}: no versions registered under {self.root}")
        return out

    def get(self, task: str, version: str | None = None) -> VersionInfo:
        complete = self._require_task(task)
        if version is None:
            version = self.current(task)
            if version is None:
                raise UnknownVersionError(f"task {task!r} has no CURRENT version (nothing promoted yet)")
        _check_version(version)
        if version not in complete:
            raise UnknownVersionError(f"unknown version {task}@{version}")
        return self._load(task, version)

    def current(self, task: str) -> str | None:
        try:
            value = storage.read_text(self._uri(task, CURRENT_FILE)).strip()
        except FileNotFoundError:
            return None
        if not value:
            return None
        if not _VERSION_RE.fullmatch(value):
            raise RegistryError(f"task {task!r} has a corrupt {CURRENT_FILE} object: {value!r}")
        return value

    def history(self, task: str) -> list[dict]:
        uri = self._uri(task, HISTORY_FILE)
        try:
            return parse_history(storage.read_text(uri), uri)
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ writing

    def create_version(self, task: str, write_artifacts: Callable[[Path], None], *, config: dict,
                       metrics: dict, lineage: dict | None = None) -> VersionInfo:
        """Upload a new version ``v<N>``; it becomes visible when its meta.json (written last) lands."""
        _check_task(task)
        metrics, lineage = check_new_version(task, config, metrics, lineage)
        with tempfile.TemporaryDirectory(prefix="aisle-version-") as tmp_name:
            tmp = Path(tmp_name)
            created_at = stage_version(tmp, task, write_artifacts, config, metrics, lineage)
            version, claim = self._claim_version(task)
            vuri = self._uri(task, version)
            try:
                storage.upload_dir(tmp, vuri)
                storage.write_text(storage.join(vuri, META_FILE),
                                   _dumps({"version": version, "task": task, "created_at": created_at}))
            except BaseException:
                _quietly(storage.delete, vuri)
                raise
        _quietly(storage.delete, claim)
        logger.info("created %s@%s at %s", task, version, vuri)
        return VersionInfo(
            task=task, version=version, path=self._cache / task / version,
            config=json.loads(_dumps(config)), metrics=json.loads(_dumps(metrics)),
            lineage=json.loads(_dumps(lineage)), created_at=created_at, uri=vuri,
        )

    def _claim_version(self, task: str) -> tuple[str, str]:
        """(version name, claim object URI) of a number this writer now owns (see module docstring)."""
        number = max(self._scan(task)[0], default=0) + 1
        for _ in range(_MAX_PUBLISH_ATTEMPTS):
            version = f"v{number}"
            name = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
            claim = self._uri(task, version, name)
            storage.write_bytes(claim, b"")
            if set(storage.list_files(self._uri(task, version))) == {name}:
                return version, claim
            storage.delete(claim)
            number = max(number + 1, max(self._scan(task)[0], default=0) + 1)
            time.sleep(random.uniform(0.0, 0.05))
        raise RegistryError(f"could not publish a new version of task {task!r}: "
                            f"{_MAX_PUBLISH_ATTEMPTS} version numbers taken by concurrent writers")

    @contextmanager
    def _lease(self, task: str) -> Iterator[None]:
        """Exclusive lease on the task's pointer (see module docstring)."""
        lease_dir = self._uri(task, LEASE_DIR)
        name = uuid.uuid4().hex
        mine = storage.join(lease_dir, name)
        first_seen: dict[str, float] = {}
        deadline = time.monotonic() + LEASE_WAIT_S
        while True:
            storage.write_text(mine, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "ts": _utcnow()}))
            others = set(storage.list_files(lease_dir)) - {name}
            if not others:
                break
            storage.delete(mine)
            now = time.monotonic()
            for other in others:
                if now - first_seen.setdefault(other, now) > LEASE_STALE_S:
                    logger.warning("breaking the lease %s of %s: unchanged for %.0f s (a crashed holder)",
                                   other, task, now - first_seen[other])
                    storage.delete(storage.join(lease_dir, other))
            if now > deadline:
                raise RegistryError(f"could not take the pointer lease of task {task} in {LEASE_WAIT_S:.0f} s: "
                                    f"held by {sorted(others)} under {lease_dir}")
            time.sleep(random.uniform(0.05, 0.2))
        try:
            yield
        finally:
            _quietly(storage.delete, mine)

    def _move_pointer(self, task: str, action: str, old: str | None, new: str, reason: str) -> None:
        """Write CURRENT, then rewrite history.jsonl with one more line. Caller holds the lease."""
        storage.write_text(self._uri(task, CURRENT_FILE), new + "\n")
        uri = self._uri(task, HISTORY_FILE)
        try:
            text = storage.read_text(uri)
        except FileNotFoundError:
            text = ""
        if text and not text.endswith("\n"):
            text += "\n"
        entry = {"ts": _utcnow(), "action": action, "from": old, "to": new, "reason": reason}
        storage.write_text(uri, text + json.dumps(entry, sort_keys=True, default=str) + "\n")

    def _guard(self, task: str):
        return self._lease(task)

    def _write_metrics(self, task: str, version: str, metrics: dict) -> None:
        storage.write_text(self._uri(task, version, METRICS_FILE), _dumps(metrics))

def _quietly(fn: Callable[[str], None], uri: str) -> None:
    """Best-effort clean-up: a failure is logged, never raised over the error being handled."""
    try:
        fn(uri)
    except Exception as exc:  # noqa: BLE001 - the network may be what failed
        logger.warning("could not clean up %s: %s", uri, exc)


def _cached_created_at(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / META_FILE).read_text(encoding="utf-8")).get("created_at"))
    except (OSError, ValueError, AttributeError):
        return None


def download_version(info: VersionInfo) -> Path:
    """``info.path`` filled with the version's files from ``info.uri`` (reused if already there)."""
    target = Path(info.path)
    if _cached_created_at(target) == info.created_at:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        storage.download_dir(info.uri, tmp, exclude_prefix=CLAIM_PREFIX)
        got = _cached_created_at(tmp)
        if got is None:
            raise UnknownVersionError(f"{info.model_id}: nothing complete at {info.uri}")
        if got != info.created_at:
            raise RegistryError(f"{info.model_id} at {info.uri} was replaced (created_at {got}, "
                                f"expected {info.created_at}); get the version again")
        if target.exists():  # a stale copy (the store was rebuilt): set it aside, then drop it
            stale = target.with_name(f".stale-{uuid.uuid4().hex[:8]}-{target.name}")
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or _cached_created_at(target) != info.created_at:
                raise  # otherwise another process put the same version there first: use it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("downloaded %s from %s to %s", info.model_id, info.uri, target)
    return target
