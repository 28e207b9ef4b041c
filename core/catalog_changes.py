"""A durable log of catalog changes made while serving (POST/DELETE /v1/products). No Ray.

One JSON line per change, `{"op": "upsert", "items": [{"item_id", "text", "title"}]}` or
`{"op": "delete", "item_ids": [...]}`, appended and fsynced before the change is applied, so an
acknowledged change survives a crash; a deployment replays the log over its catalog at start.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def append(path: str | Path, change: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"   # a crash mid-write: end that line, or this change joins it
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps({**change, "ts": time.time()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: str | Path) -> list[dict]:
    """Every complete change in order (a torn last line, from a crash mid-write, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def replay(table: dict[str, dict], changes: list[dict]) -> dict[str, dict]:
    """{item_id: item} with the changes applied in order."""
    table = dict(table)
    for change in changes:
        if change["op"] == "upsert":
            for item in change["items"]:
                table[item["item_id"]] = item
        else:
            for item_id in change["item_ids"]:
                table.pop(item_id, None)
    return table
