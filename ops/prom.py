"""Prometheus text exposition format: parse samples, pick metrics by name, estimate quantiles.

`parse(text)` reads the format an endpoint serves (`# HELP`, `# TYPE`, `name{label="v",...} value
[timestamp]`; label values with `\\\\`, `\\"`, `\\n` escapes; `+Inf`, `-Inf`, `NaN`). Names are matched
tolerantly (`select`): Ray exports a custom metric `aisle_requests` as `ray_aisle_requests_total`,
so a leading `ray_` and a counter's trailing `_total` are ignored on both sides.

`histogram_quantile(q, buckets)` is PromQL's estimate from cumulative `le` buckets: find the bucket
holding the q-th observation and interpolate linearly inside it (the lowest bucket starts at 0 when
its bound is positive); a rank in the `+Inf` bucket returns the highest finite bound, because
nothing is known above it. `quantiles_by` sums buckets over every label but the ones kept, like
`histogram_quantile(q, sum by (le, route) (rate(...)))` without the rate: these are totals since
the process started.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Sample", "Exposition", "PromParseError", "parse", "base_name", "histogram_quantile", "quantiles_by"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"\s*({_NAME})\s*(?:\{{(.*)\}})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class PromParseError(ValueError):
    """A line of the exposition is not a comment, a blank line or a sample; names the line."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Exposition:
    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)  # metric family name -> counter | gauge | histogram ...
    help: dict[str, str] = field(default_factory=dict)

    def select(self, name: str, suffix: str = "") -> list[Sample]:
        """Samples of metric `name` (tolerant of `ray_` and `_total`), with `suffix` such as `_bucket`."""
        want = base_name(name)
        out = []
        for s in self.samples:
            if suffix:
                if not s.name.endswith(suffix):
                    continue
                stem = s.name[: -len(suffix)]
            else:
                stem = s.name
            if base_name(stem) == want:
                out.append(s)
        return out

    def total(self, name: str, **labels: str) -> float | None:
        """Sum of `name`'s samples whose labels include `labels`; None when there are none."""
        picked = [s.value for s in self.select(name) if all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(picked) if picked else None


def base_name(name: str) -> str:
    """`ray_aisle_requests_total` -> `aisle_requests`: the name as the code records it."""
    if name.startswith("ray_"):
        name = name[4:]
    if name.endswith("_total"):
        name = name[: -len("_total")]
    return name


def _value(text: str, lineno: int) -> float:
    try:
        return float(text)  # float() reads +Inf, -Inf, NaN and exponents
    except ValueError:
        raise PromParseError(f"line {lineno}: {text!r} is not a sample value") from None


def _labels(text: str, lineno: int) -> dict[str, str]:
    labels, pos = {}, 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if m is None:
            raise PromParseError(f"line {lineno}: cannot read labels {{{text}}}")
        labels[m.group(1)] = re.sub(r"\\[\\\"n]", lambda e: _ESCAPES[e.group(0)], m.group(2))
        pos = m.end()
    return labels


def parse(text: str) -> Exposition:
    """Every sample of a Prometheus text exposition, with the declared types (see module docstring)."""
    out = Exposition()
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            parts = stripped[1:].split(None, 2)  # "# TYPE name kind", "# HELP name text"; other comments
            if len(parts) == 3 and parts[0] == "TYPE":
                out.types[parts[1]] = parts[2].strip()
            elif len(parts) >= 2 and parts[0] == "HELP":
                out.help[parts[1]] = parts[2] if len(parts) == 3 else ""
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            raise PromParseError(f"line {lineno}: not a sample: {line[:120]!r}")
        name, label_text, value = m.group(1), m.group(2), m.group(3)
        out.samples.append(Sample(name, _labels(label_text or "", lineno), _value(value, lineno)))
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile (0..1) from (upper bound `le`, cumulative count) pairs, as PromQL estimates it.

    NaN without a `+Inf` bucket, with fewer than two buckets or no observations.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    bounds = [b for b, _ in ordered]
    counts, running = [], 0.0
    for _, c in ordered:  # scrapes of separate series can be a little non-monotonic: PromQL evens them out
        running = max(running, c)
        counts.append(running)
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start, count, rank = bounds[b - 1], counts[b] - counts[b - 1], rank - counts[b - 1]
    return start + (end - start) * (rank / count)


def quantiles_by(expo: Exposition, name: str, keep: tuple[str, ...], qs: tuple[float, ...] = (0.5, 0.95, 0.99)
                 ) -> list[dict]:
    """One row per combination of the `keep` labels: those labels, `count`, `mean` and `p50`.. for `qs`.

    Buckets (`<name>_bucket`), counts and sums are summed over every other label (replicas, nodes).
    """
    buckets: dict[tuple, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[tuple, float] = defaultdict(float)
    counts: dict[tuple, float] = defaultdict(float)
    for s in expo.select(name, "_bucket"):
        if "le" in s.labels:
            buckets[tuple(s.labels.get(k, "") for k in keep)][_value(s.labels["le"], 0)] += s.value
    for s in expo.select(name, "_sum"):
        sums[tuple(s.labels.get(k, "") for k in keep)] += s.value
    for s in expo.select(name, "_count"):
        counts[tuple(s.labels.get(k, "") for k in keep)] += s.value
    rows = []
    for key in sorted(buckets):
        pairs = sorted(buckets[key].items())
        count = counts.get(key, pairs[-1][1] if pairs else 0.0)
        row: dict = dict(zip(keep, key))
        row["count"] = count
        row["mean"] = sums[key] / count if count and key in sums else math.nan
        for q in qs:
            row[f"p{q * 100:g}"] = histogram_quantile(q, pairs)
        rows.append(row)
    return rows
