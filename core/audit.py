"""The audit log of update decisions: one JSON line per decision, appended with fsync.

Written by the UpdateCoordinator (promoted, rejected, skipped, failed, interrupted), read by
`aisle status`, the demo and the benchmarks. Append-only: a decision once written is never edited.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def append(path: str | Path, record: dict) -> dict:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"ts": round(time.time(), 3), **record}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return line


def read(path: str | Path, last: int | None = None) -> list[dict]:
    """Decisions, oldest first; a torn last line (crash mid-append) is skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out[-last:] if last else out


def format_line(d: dict) -> str:
    """One readable line per decision: what, why, with its numbers."""
    m, ex = d.get("metrics") or {}, d.get("examples") or {}
    parts = [f"{d.get('update_id', '?')}" + (f" (released {d['released']})" if d.get("released") else ""),
             f"{d.get('decision', '?'):<11}",
             f"{d.get('parent') or '-'} -> {d.get('candidate') or '-'}",
             f"events {(ex.get('span') or {}).get('events', ex.get('events', '?'))}",
             f"examples {ex.get('examples', '?')} (flagged events {ex.get('flagged', 0)})"]
    if "original_ndcg_current" in m:
        parts.append(f"original nDCG@10 {m['original_ndcg_current']:.4f} -> {m['original_ndcg_candidate']:.4f}")
    if "fresh_ndcg_current" in m:
        parts.append(f"fresh nDCG@10 {m['fresh_ndcg_current']:.4f} -> {m['fresh_ndcg_candidate']:.4f}")
    parts.append(f"{d.get('seconds', 0):.1f} s")
    return " | ".join(parts) + f" | {d.get('reason', '')}"
