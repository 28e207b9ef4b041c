"""Stream events: the one validation of a click/impression/purchase record, for every source.

The HTTP endpoint, `aisle replay` and the Redis consumer all hand raw dicts to the FeedbackLog,
which calls `normalize_event` on each: a record is either accepted in its normal form or rejected
with a reason (counted, never silently dropped). User and session ids are replaced by salted hashes
here, so no raw user id is ever written to the log or to a training file.

Raw event (what a shop sends):
    event_id    client-supplied id (UUID), the idempotency key; 1..128 printable characters
    ts          unix seconds (number) or ISO-8601 string
    user_id     1..128 characters        session_id  1..128 characters
    type        impression | click | add_to_cart | purchase
    product_id  1..64 characters
    query       optional search query the product was shown for (<= 512 characters)
    position    optional 0-based rank in the result list (integer 0..1000)
    score       optional score the product was served with (the `score` of its `/v1/search` answer;
                finite, |score| <= 1e6): the online click model expects fewer clicks on a low score
Unknown keys are ignored (forward compatibility).

Normal form (what the log stores): event_id, ts (float), user, session (salted hashes), type,
product_id, query (normalised text or None), position (int or None), and score (a float) when sent.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from core.text import normalize_text, salted_hash

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")
POSITIVE_TYPES = ("click", "add_to_cart", "purchase")
MAX_ID_CHARS = 128
MAX_PRODUCT_ID_CHARS = 64
MAX_QUERY_CHARS = 512
MAX_POSITION = 1000
MAX_ABS_SCORE = 1e6
MIN_TS = 946_684_800.0  # 2000-01-01: anything older is a unit mistake (milliseconds, days)


def _id(raw: dict, key: str, limit: int) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: missing or not a non-empty string")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{key}: longer than {limit} characters")
    if not value.isprintable():
        raise ValueError(f"{key}: contains control characters")
    return value


def _ts(value: Any, now: float | None) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError("ts: missing or not a number or ISO-8601 string")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("ts: not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError("ts: an ISO-8601 timestamp needs a timezone (e.g. 'Z')")
        ts = parsed.timestamp()
    else:
        raise ValueError("ts: missing or not a number or ISO-8601 string")
    if not math.isfinite(ts) or ts < MIN_TS:
        raise ValueError("ts: not a plausible unix time in seconds")
    if now is not None and ts > now + 86_400:
        raise ValueError("ts: more than a day in the future")
    return ts


def _position(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError("position: not an integer")
    if not 0 <= int(value) <= MAX_POSITION:
        raise ValueError(f"position: outside 0..{MAX_POSITION}")
    return int(value)


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("score: not a finite number")
    if abs(value) > MAX_ABS_SCORE:
        raise ValueError(f"score: outside -{MAX_ABS_SCORE:g}..{MAX_ABS_SCORE:g}")
    return float(value)


def normalize_event(raw: Any, salt: str, now: float | None = None) -> dict:
    """A raw event in normal form; ValueError('<field>: <problem>') if it cannot be used."""
    if not isinstance(raw, dict):
        raise ValueError("event: not a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind.strip().lower() not in EVENT_TYPES:
        raise ValueError(f"type: must be one of {', '.join(EVENT_TYPES)}")
    query = raw.get("query")
    if query is not None:
        if not isinstance(query, str):
            raise ValueError("query: not a string")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query: longer than {MAX_QUERY_CHARS} characters")
        query = normalize_text(query) or None
    event = {
        "event_id": _id(raw, "event_id", MAX_ID_CHARS),
        "ts": _ts(raw.get("ts"), now),
        "user": pseudonym(_id(raw, "user_id", MAX_ID_CHARS), salt),
        "session": pseudonym(_id(raw, "session_id", MAX_ID_CHARS), salt),
        "type": kind.strip().lower(),
        "product_id": _id(raw, "product_id", MAX_PRODUCT_ID_CHARS),
        "query": query,
        "position": _position(raw.get("position")),
    }
    score = _score(raw.get("score"))
    if score is not None:  # kept only when sent: most sources never send one
        event["score"] = score
    return event


def pseudonym(user_or_session_id: str, salt: str) -> str:
    """The salted hash that stands for a user or session id everywhere after ingest."""
    return salted_hash(user_or_session_id.strip(), salt)


def rejection_field(reason: str) -> str:
    """'position: not an integer' -> 'position' (the field a 4xx body names)."""
    return reason.split(":", 1)[0]
