"""One workspace root from which every artifact path is derived.

Every job config has a ``workspace`` key (default ``$AISLE_WORKSPACE``, else ``artifacts``, relative to
where the command runs; a URI such as ``s3://bucket/aisle`` works where the job reads through
core.storage). Its path keys default to a place under it, written ``{workspace}/prepared`` in
`aisle config`; `resolve_paths` fills them in when the config is built. A path given in a preset or
an override is used as written; it may start with ``{workspace}`` too.

    workspace/catalog               the generated catalog (products, queries, judgements)
    workspace/prepared              prepared splits per task, and the preparation report
    workspace/registry              the adapter registry
    workspace/runs                  Ray Train run storage (checkpoints per epoch)
    workspace/embeddings/catalog    catalog embeddings (`aisle embed`)
    workspace/embeddings/recommend  recommendation item vectors (`aisle embed recommend`)
    workspace/lm                    the packaged instruct LM, converted once
    workspace/stream/...            the feedback log, per-update data, the update audit
    workspace/demo_stream, demo_results.json, report.html, bench/ (the benchmarks' working files)

No Ray imports.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from core import storage

ENV = "AISLE_WORKSPACE"
DEFAULT_ROOT = "artifacts"
MARK = "{workspace}"

LAYOUT = {
    "catalog": "catalog",
    "prepared": "prepared",
    "registry": "registry",
    "runs": "runs",
    "embeddings": "embeddings/catalog",
    "recommend_vectors": "embeddings/recommend",
    "lm": "lm",
    "cache": "cache",
    "stream_log": "stream/log",
    "stream_updates": "stream/updates",
    "stream_audit": "stream/audit.jsonl",
    "demo_stream": "demo_stream",
    "demo_results": "demo_results.json",
    "report": "report.html",
    "bench": "bench",
}
"""What lives where under the root; the one place an artifact's default path is written."""


def default_root(base: str | os.PathLike | None = None) -> str:
    """``$AISLE_WORKSPACE`` if set, else ``artifacts`` (under `base` if given: scripts that run from anywhere)."""
    return os.environ.get(ENV) or (os.path.join(base, DEFAULT_ROOT) if base is not None else DEFAULT_ROOT)


def path(part: str, root: str | None = None) -> str:
    """Where `part` (a LAYOUT key) lives under `root` (default: `default_root()`)."""
    return storage.join(root or default_root(), LAYOUT[part])


def template(part: str) -> str:
    """A path key's default as `aisle config` shows it: ``{workspace}/prepared``."""
    return f"{MARK}/{LAYOUT[part]}"


def path_field(part: str, text: str) -> Any:
    """A config field whose default is `part`'s place in the workspace."""
    return dataclasses.field(default=template(part), metadata={"doc": text})


def root_field() -> Any:
    """The ``workspace`` key of a job config."""
    return dataclasses.field(default=None, metadata={
        "doc": f"root of every artifact path left at its default (null: ${ENV}, else {DEFAULT_ROOT})"})


def resolve_paths(cfg: Any) -> None:
    """Fill `cfg.workspace` (when null) and every ``{workspace}``-prefixed string of the config tree.

    For a job config's ``__post_init__``. Nested sections are built before their parent, so the parent
    fills them: plain sections from its own workspace, and a nested job config (the stream's serve
    section) too unless that one was given a workspace of its own."""
    given = cfg.workspace is not None
    root = cfg.workspace or default_root()
    cfg.workspace = root
    templates = _fill(cfg, root)
    cfg.__dict__["_workspace"] = (given, templates)  # not a field: to_dict and equality ignore it


def _fill(node: Any, root: str) -> dict[str, str]:
    """Resolve the templates of node's tree; returns {dotted field: template} of those it resolved."""
    templates = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, str) and value.startswith(MARK):
            templates[f.name] = value
            rest = value[len(MARK):].lstrip("/")
            setattr(node, f.name, storage.join(root, rest) if rest else root)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            given, own = value.__dict__.get("_workspace", (False, None))
            if own is None:  # a plain section
                templates.update({f"{f.name}.{k}": v for k, v in _fill(value, root).items()})
            elif not given:  # a nested job config resolved alone: move it under this workspace
                value.workspace = root
                for dotted, template in own.items():
                    *parents, name = dotted.split(".")
                    target = value
                    for part in parents:
                        target = getattr(target, part)
                    setattr(target, name, template)
                value.__dict__["_workspace"] = (False, _fill(value, root))
    return templates
