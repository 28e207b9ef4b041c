"""Publishing a job's output directory: written aside, then swapped in (atomically on a filesystem)."""

from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core import storage

MARKERS = ("report.json", "_meta.json")
"""Files an output's readers may take as 'complete': on an object store they are copied last."""


def swap_into_place(staging: Path | str, final: Path | str) -> None:
    """Replace the previous output in two renames, so readers see old or new, never half of each.

    On an object store (`final` is an s3:// URI) there is no rename: the old objects are deleted,
    the staged ones copied in server-side (MARKERS last) and the staging prefix deleted. That is
    not atomic: a reader listing `final` meanwhile can find it empty or partly copied.
    """
    if storage.is_remote(final):
        storage.delete(final)
        storage.copy_tree(staging, final, last=MARKERS)
        storage.delete(staging)
        return
    staging, final = Path(staging), Path(final)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(final: str) -> Iterator[str]:
    """Yields a staging directory beside `final` (a path or s3:// URI); when the block ends without
    an error the staging output replaces `final` (swap_into_place). The staging is removed either way."""
    staging = storage.sibling(final, f".{storage.name_of(final)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
        swap_into_place(staging, final)
    finally:
        if storage.is_remote(staging):
            storage.delete(staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)
