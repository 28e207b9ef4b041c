"""Where a registry's files live: a local directory or an object-store prefix, behind one small protocol.

`core.registry.AdapterRegistry` holds the rules (names, versions, the pointer, its history, rollback)
once, and asks a store for what only the storage can say: which versions exist, how a staged version
is published atomically, how two writers of one task's pointer are kept apart, and where a reader
finds a version's files on this machine. `open_store(root)` picks the store from the root: a URI
with a scheme (``s3://bucket/prefix``, see core.storage) gets an `ObjectStore`, anything else a
`LocalStore`. The layout (file names, the adapter folder) is core.registry_format's, for both.

Local directory (`LocalStore`)
    A version is built in a hidden temp directory (``.tmp-*``) next to the versions and published
    with one ``os.rename``; a reader never sees a partial version, and a writer that loses a race
    for ``vN`` renames to a higher number. ``CURRENT`` and metrics are replaced atomically (temp
    file + fsync + ``os.replace``); history lines are appended and fsynced. Pointer writers hold an
    exclusive ``fcntl.flock`` on ``<task>/.lock``. Temp directories older than an hour (a crashed
    writer's) are removed when the store is opened. A version directory without ``meta.json`` can
    only be a damaged one: it is reported as broken and its number is never reused.

Object store (`ObjectStore`)
    No rename, no append, no lock. A version is uploaded under its own prefix and ``meta.json`` is
    written last: readers list only versions that have it; a crashed upload leaves a prefix that is
    never listed and whose number is skipped (its objects are left for an operator). A writer owns
    a version number when its claim ``vN/.claim-<id>`` is the only object under ``vN/``, and the
    pointer lease when its ``.lock/<id>`` is the only object under ``.lock/`` (stores that list
    strongly after a write, AWS S3 and MinIO, make both exclusive; a weaker store makes them
    best-effort). A lease seen unchanged for ``LEASE_STALE_S`` by a waiter, on the waiter's own
    clock, is a crashed holder's and is broken. ``CURRENT`` is one object (a PUT is atomic);
    ``history.jsonl`` is read, extended and rewritten under the lease. Weights are read from a local
    copy: the version's cache directory (``$AISLE_CACHE_DIR/registry/<scheme>/<bucket>/<prefix>/
    <task>/<version>``, default ``~/.cache/aisle``), filled on first use (a download into a temp
    directory, then one rename) and reused while its meta.json has the version's ``created_at``.

No Ray imports. Endpoint and credentials of an object store: the AWS environment, see core.storage.
"""

from __future__ import annotations

import errno
import fcntl
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
from typing import Callable, ContextManager, Iterator, Protocol
from urllib.parse import urlsplit

from core import storage
from core.registry_format import (
    LOCK_FILE,
    MAX_PUBLISH_ATTEMPTS,
    META_FILE,
    STALE_TMP_SECONDS,
    TASK_RE,
    TMP_PREFIX,
    VERSION_RE,
    RegistryError,
    UnknownVersionError,
    VersionInfo,
    utcnow,
    version_number,
)

__all__ = ["RegistryStore", "LocalStore", "ObjectStore", "open_store", "CLAIM_PREFIX", "LEASE_DIR"]

logger = logging.getLogger("aisle.registry")

CLAIM_PREFIX = ".claim-"
LEASE_DIR = ".lock"
LEASE_STALE_S = 60.0
"""A lease seen unchanged this long by a waiter is taken to be a crashed holder's and removed."""
LEASE_WAIT_S = 300.0
"""A pointer move gives up (RegistryError) after waiting this long for the lease."""


class RegistryStore(Protocol):
    """What the registry asks of the storage under it. Task and version names arrive checked."""

    root: str | Path

    def task_names(self) -> list[str]:
        """Names of the task folders under the root (with or without versions)."""

    def scan(self, task: str) -> tuple[set[int], list[str], list[str]]:
        """(every version number in use, complete versions, broken versions), the lists by number."""

    def is_complete(self, task: str, version: str) -> bool:
        """Whether the version's meta.json is there: one stat or HEAD, not a listing of the task."""

    def read_text(self, task: str, *parts: str) -> str:
        """A file of the task (``CURRENT``) or of a version (``v3``, ``metrics.json``); FileNotFoundError."""

    def write_text(self, task: str, *parts: str, text: str) -> None:
        """Replace a file atomically."""

    def append_line(self, task: str, name: str, line: str) -> None:
        """Add one line to a task file. The caller holds `guard(task)`."""

    def guard(self, task: str) -> ContextManager[None]:
        """Exclusive access of one writer to the task's pointer, history and metrics."""

    def staging(self, task: str) -> ContextManager[Path]:
        """A local directory to build a new version in; removed on exit unless published."""

    def publish(self, task: str, staged: Path, meta: Callable[[str], str]) -> str:
        """Make the staged files version ``vN`` (a number no other writer gets) with ``meta(vN)`` as its
        meta.json, written last; returns ``vN``."""

    def version_path(self, task: str, version: str) -> Path:
        """The local directory readers load the version from (its cache directory on an object store)."""

    def version_uri(self, task: str, version: str) -> str:
        """The version's URI on an object store; "" for a local one."""

    def where(self, task: str, *parts: str) -> str:
        """How messages name a location."""


def open_store(root: str | os.PathLike) -> RegistryStore:
    """The store for a registry root: an object store for a URI with a scheme, else a local directory."""
    return ObjectStore(os.fspath(root)) if storage.is_remote(root) else LocalStore(root)


# --------------------------------------------------------------------------- local directory


class LocalStore:
    """A registry in a local directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()

    def _dir(self, task: str, *parts: str) -> Path:
        return self.root.joinpath(task, *parts)

    def where(self, task: str, *parts: str) -> str:
        return str(self._dir(task, *parts))

    def task_names(self) -> list[str]:
        return [e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False) and TASK_RE.fullmatch(e.name)]

    def scan(self, task: str) -> tuple[set[int], list[str], list[str]]:
        try:
            entries = [e for e in os.scandir(self._dir(task))
                       if VERSION_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return set(), [], []
        names = sorted((e.name for e in entries), key=version_number)
        complete = [n for n in names if (self._dir(task, n, META_FILE)).is_file()]
        return {version_number(n) for n in names}, complete, [n for n in names if n not in complete]

    def is_complete(self, task: str, version: str) -> bool:
        directory = self._dir(task, version)
        return not directory.is_symlink() and (directory / META_FILE).is_file()  # as `scan` sees it

    def read_text(self, task: str, *parts: str) -> str:
        return self._dir(task, *parts).read_text(encoding="utf-8")

    def write_text(self, task: str, *parts: str, text: str) -> None:
        storage.write_text(self._dir(task, *parts), text)

    def append_line(self, task: str, name: str, line: str) -> None:
        with open(self._dir(task, name), "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    @contextmanager
    def guard(self, task: str) -> Iterator[None]:
        self._dir(task).mkdir(parents=True, exist_ok=True)
        fd = os.open(self._dir(task, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def staging(self, task: str) -> Iterator[Path]:
        self._dir(task).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._dir(task)))  # same filesystem: rename works
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already once published

    def publish(self, task: str, staged: Path, meta: Callable[[str], str]) -> str:
        os.chmod(staged, 0o755)  # mkdtemp makes 0700; servers may run as another user
        number = max(self.scan(task)[0], default=0) + 1
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            version = f"v{number}"
            storage.write_text(staged / META_FILE, meta(version))  # it names the version: written per attempt
            storage.fsync_dir(staged)
            try:
                os.rename(staged, self._dir(task, version))
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                number = max(number + 1, max(self.scan(task)[0], default=0) + 1)
                continue
            storage.fsync_dir(self._dir(task))
            return version
        raise RegistryError(f"could not publish a new version of task {task!r}: "
                            f"{MAX_PUBLISH_ATTEMPTS} version numbers taken by concurrent writers")

    def version_path(self, task: str, version: str) -> Path:
        return self._dir(task, version)

    def version_uri(self, task: str, version: str) -> str:
        return ""

    def _remove_stale_staging(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for task in self.task_names():
            try:
                entries = [e for e in os.scandir(self._dir(task)) if e.name.startswith(TMP_PREFIX)]
            except OSError:
                continue
            for e in entries:
                try:
                    if e.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue  # may be a live writer's
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                    logger.info("removed stale temp entry %s", e.path)
                except OSError:
                    pass


# --------------------------------------------------------------------------- object store


class ObjectStore:
    """A registry under an object-store prefix (see the module docstring)."""

    def __init__(self, root: str):
        from pyarrow import fs as pafs

        self.root = root.rstrip("/")
        fs, path = storage.resolve(self.root)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise RegistryError(f"registry {self.root}: bucket {bucket!r} does not exist "
                                "(or is not visible with the AWS_* environment in use)")
        parts = urlsplit(self.root)
        self._cache = storage.cache_root() / "registry" / parts.scheme / parts.netloc / parts.path.strip("/")

    def _uri(self, task: str, *parts: str) -> str:
        return storage.join(self.root, task, *parts)

    def where(self, task: str, *parts: str) -> str:
        return self._uri(task, *parts)

    def task_names(self) -> list[str]:
        return [name for name, is_dir in storage.list_dir(self.root) if is_dir and TASK_RE.fullmatch(name)]

    def scan(self, task: str) -> tuple[set[int], list[str], list[str]]:
        numbers, complete = set(), []
        for rel in storage.list_files(self._uri(task)):
            head, _, rest = rel.partition("/")
            if not rest or not VERSION_RE.fullmatch(head):
                continue
            numbers.add(version_number(head))
            if rest == META_FILE:
                complete.append(head)
        return numbers, sorted(complete, key=version_number), []  # no meta.json: an upload, never broken

    def is_complete(self, task: str, version: str) -> bool:
        return storage.is_file(self._uri(task, version, META_FILE))

    def read_text(self, task: str, *parts: str) -> str:
        return storage.read_text(self._uri(task, *parts))

    def write_text(self, task: str, *parts: str, text: str) -> None:
        storage.write_text(self._uri(task, *parts), text)

    def append_line(self, task: str, name: str, line: str) -> None:
        try:
            text = self.read_text(task, name)
        except FileNotFoundError:
            text = ""
        if text and not text.endswith("\n"):
            text += "\n"
        self.write_text(task, name, text=text + line + "\n")

    @contextmanager
    def guard(self, task: str) -> Iterator[None]:
        lease_dir = self._uri(task, LEASE_DIR)
        name = uuid.uuid4().hex
        mine = storage.join(lease_dir, name)
        first_seen: dict[str, float] = {}
        deadline = time.monotonic() + LEASE_WAIT_S
        while True:
            storage.write_text(mine, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "ts": utcnow()}))
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

    @contextmanager
    def staging(self, task: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="aisle-version-") as tmp:
            yield Path(tmp)

    def publish(self, task: str, staged: Path, meta: Callable[[str], str]) -> str:
        version, claim = self._claim_version(task)
        vuri = self._uri(task, version)
        try:
            storage.upload_dir(staged, vuri)
            storage.write_text(storage.join(vuri, META_FILE), meta(version))
        except BaseException:
            _quietly(storage.delete, vuri)
            raise
        _quietly(storage.delete, claim)
        return version

    def _claim_version(self, task: str) -> tuple[str, str]:
        """(version name, claim object URI) of a number this writer now owns."""
        number = max(self.scan(task)[0], default=0) + 1
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            version = f"v{number}"
            name = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
            claim = self._uri(task, version, name)
            storage.write_bytes(claim, b"")
            if set(storage.list_files(self._uri(task, version))) == {name}:
                return version, claim
            storage.delete(claim)
            number = max(number + 1, max(self.scan(task)[0], default=0) + 1)
            time.sleep(random.uniform(0.0, 0.05))
        raise RegistryError(f"could not publish a new version of task {task!r}: "
                            f"{MAX_PUBLISH_ATTEMPTS} version numbers taken by concurrent writers")

    def version_path(self, task: str, version: str) -> Path:
        return self._cache / task / version

    def version_uri(self, task: str, version: str) -> str:
        return self._uri(task, version)


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
    """``info.path`` filled with the version's files from ``info.uri`` (reused if already there).

    What `VersionInfo.local_dir` calls for a version on an object store."""
    target = Path(info.path)
    if _cached_created_at(target) == info.created_at:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=target.parent))
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
