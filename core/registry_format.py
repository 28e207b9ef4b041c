"""The adapter registry's format: the names and files of a version (defined here once, for the
registry that writes them and every reader that loads them), the errors, VersionInfo, validation,
the pointer history, and how a new version's files are staged before a store publishes them.

Imported by core.registry (the rules) and core.registry_store (where the files live); imports
neither.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from core import storage
from core.errors import AisleError

logger = logging.getLogger("aisle.registry")

TASK_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
VERSION_RE = re.compile(r"v[1-9][0-9]*")

TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600.0
MAX_PUBLISH_ATTEMPTS = 1000

ADAPTER_DIR = "adapter"
"""The folder of a version that holds the model files (what peft and torch load): every writer saves
there and every reader loads ``info.local_dir() / ADAPTER_DIR``."""

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
_RESERVED_FILES = (CONFIG_FILE, METRICS_FILE, LINEAGE_FILE, META_FILE)


# --------------------------------------------------------------------------- errors


class RegistryError(AisleError):
    """Base class for registry errors (messages name the task/version)."""


class UnknownTaskError(RegistryError, LookupError):
    """The task has no (valid) versions in this registry."""


class UnknownVersionError(RegistryError, LookupError):
    """The requested version does not exist, or the task has no CURRENT version."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class VersionInfo:
    task: str
    version: str
    path: Path
    config: dict
    metrics: dict
    lineage: dict
    created_at: str
    uri: str = ""
    """Where the version lives in a remote registry (``s3://bucket/root/task/v3``); "" when local.
    Then ``path`` is the local cache directory that :meth:`local_dir` fills."""
    fetch: Callable[["VersionInfo"], Path] | None = field(default=None, repr=False, compare=False)
    """Fills ``path`` from ``uri`` (the store's download; set by the registry for a remote version)."""

    @property
    def model_id(self) -> str:
        """The Ray Serve multiplexed model id, e.g. ``"relevance@v7"``."""
        return model_id(self.task, self.version)

    def local_dir(self) -> Path:
        """A local directory holding this version's files (what peft and torch load from).

        Local registry: ``path`` itself. Remote registry: a download into the cache
        (``$AISLE_CACHE_DIR`` or ``~/.cache/aisle``), made on first use and reused while its
        meta.json matches this version's ``created_at``.
        """
        if not self.uri:
            return self.path
        if self.fetch is None:
            raise RegistryError(f"{self.model_id} lives at {self.uri}: get it from its registry to read its files")
        return self.fetch(self)


# --------------------------------------------------------------------------- names


def check_task(task: Any) -> str:
    if not isinstance(task, str) or not TASK_RE.fullmatch(task):
        raise ValueError(f"invalid task name {task!r}: must match ^[a-z][a-z0-9_]{{0,63}}$")
    return task


def check_version(version: Any) -> str:
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid version name {version!r}: must look like 'v1', 'v2', ...")
    return version


def version_number(version: str) -> int:
    return int(version[1:])


def model_id(task: str, version: str) -> str:
    """``("relevance", "v7")`` -> ``"relevance@v7"``, the inverse of `parse_model_id`."""
    return f"{task}@{version}"


def parse_model_id(model_id: str) -> tuple[str, str]:
    """``"relevance@v7"`` -> ``("relevance", "v7")``; ValueError naming the bad id otherwise."""
    if not isinstance(model_id, str) or model_id.count("@") != 1:
        raise ValueError(f"invalid model id {model_id!r}: expected '<task>@v<N>'")
    task, version = model_id.split("@")
    if not TASK_RE.fullmatch(task) or not VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid model id {model_id!r}: expected '<task>@v<N>'")
    return task, version


def parse_history(text: str, where: Any) -> list[dict]:
    """The entries of a history.jsonl text; unparseable lines are skipped with a warning naming `where`."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            logger.warning("skipping unparseable line %d of %s", lineno, where)
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def rollback_target(history: list[dict]) -> str | None:
    """The version a rollback returns to: history replayed as a stack (promote pushes ``from``,
    rollback pops); None if nothing is left to roll back to."""
    stack: list[str | None] = []
    for entry in history:
        if entry.get("action") == "promote":
            stack.append(entry.get("from"))
        elif entry.get("action") == "rollback" and stack:
            stack.pop()
    return stack[-1] if stack else None


# --------------------------------------------------------------------------- text


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def check_metrics(metrics: Any, where: str) -> dict:
    """Metrics must be a dict of str -> number/string (bool/None allowed).

    Numpy-style scalars (anything with ``.item()`` returning a plain scalar) are
    converted so trainers can pass e.g. ``np.float32`` directly.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics for {where} must be a dict, got {type(metrics).__name__}")
    out: dict = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric key {key!r} for {where} must be a string")
        if not isinstance(value, (str, int, float, type(None))) and hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, (str, int, float, type(None))):
            raise TypeError(
                f"metric {key!r} for {where} must be a number or string, "
                f"got {type(value).__name__}"
            )
        out[key] = value
    return out


# --------------------------------------------------------------------------- registry


def check_new_version(task: str, config: Any, metrics: Any, lineage: Any) -> tuple[dict, dict]:
    """The (checked metrics, lineage) of a version about to be created; TypeError on a wrong type."""
    metrics = check_metrics(metrics, f"new version of task {task!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config for new version of task {task!r} must be a dict")
    lineage = {} if lineage is None else lineage
    if not isinstance(lineage, dict):
        raise TypeError(f"lineage for new version of task {task!r} must be a dict")
    return metrics, lineage


def stage_version(tmp: Path, task: str, write_artifacts: Callable[[Path], None], config: dict, metrics: dict,
                  lineage: dict) -> str:
    """Write a new version's files into `tmp` (the caller's artifacts, then config, metrics and lineage;
    meta.json is the publisher's, written last). Returns its created_at."""
    write_artifacts(tmp)
    for name in _RESERVED_FILES:
        if (tmp / name).exists():
            raise RegistryError(
                f"write_artifacts for task {task!r} wrote reserved file {name!r}; "
                "the registry writes it (save model files in a subdirectory)"
            )
    storage.write_text(tmp / CONFIG_FILE, dumps(config))
    storage.write_text(tmp / METRICS_FILE, dumps(metrics))
    storage.write_text(tmp / LINEAGE_FILE, dumps(lineage))
    return utcnow()
