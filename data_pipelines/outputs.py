"""Publishing a job's output directory atomically: written aside, then swapped in."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def swap_into_place(staging: Path, final: Path) -> None:
    """Replace the previous output in two renames, so readers see old or new, never half of each."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
