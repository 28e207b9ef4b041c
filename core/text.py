"""Text normalisation and salted hashing shared by the batch pipeline and the stream path.

Pure functions over strings and pandas Series, so the Ray Data pipeline, the single-process
benchmark baseline and the stream path all clean text the same way.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

import pandas as pd

_TAGS = re.compile(r"<[^>]{1,200}>")
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\ufeff]")
_SPACE = re.compile(r"\s+")


def normalize_text(value: object) -> str:
    """NFKC, HTML entities and tags removed, control characters dropped, whitespace collapsed.

    Returns "" for missing values (None, NaN), so callers count them as empty instead of crashing.
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    text = unicodedata.normalize("NFKC", text)
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _TAGS.sub(" ", text)
    text = _CONTROL.sub("", text)
    return _SPACE.sub(" ", text).strip()


def normalize_series(values: pd.Series) -> pd.Series:
    return values.map(normalize_text).astype("string")


def dedupe_key(text: str) -> str:
    """Case- and punctuation-insensitive key: two texts that differ only in casing or spacing are one."""
    return re.sub(r"[^\w]+", " ", text.casefold()).strip()


def salted_hash(value: object, salt: str, length: int = 16) -> str:
    """A stable pseudonym for an identifier: the raw id cannot be read back, the same id maps the same."""
    digest = hashlib.blake2b(f"{salt}\x00{value}".encode("utf-8"), digest_size=16).hexdigest()
    return digest[:length]


def bucket(value: object, seed: int, buckets: int = 10_000) -> int:
    """Deterministic bucket of a group key, for splits that keep a whole group on one side."""
    digest = hashlib.blake2b(f"{seed}\x00{value}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets
