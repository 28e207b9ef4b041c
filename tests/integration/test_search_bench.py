"""benchmarks/search_bench.py --smoke runs every part (raw levers, three served configurations,
overload) on the tiny model and prints the four summary lines the issue's check reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

LINES = [r"^search default: p50 \d+ ms, p99 \d+ ms at half load; [\d.]+ searches/s; nDCG@10 [\d.]+$",
         r"^search no-cache: p50 \d+ ms, p99 \d+ ms at half load; [\d.]+ searches/s; nDCG@10 [\d.]+$",
         r"^search reference: p50 \d+ ms, p99 \d+ ms at half load; [\d.]+ searches/s; nDCG@10 [\d.]+$",
         r"^overload 2x: 503 share [\d.]+, 503 p99 (\d+|nan) ms, accepted p99 (\d+|nan) ms, recovered in ([\d.]+|nan) s$"]


def test_search_bench_smoke_prints_the_summary():
    """A subprocess (its own Ray, as a user runs it), not the session fixture's."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    out = subprocess.run([sys.executable, "benchmarks/search_bench.py", "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=380)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("SMOKE RUN")
    for pattern in LINES:
        assert any(re.match(pattern, line) for line in lines), (pattern, out.stdout[-2000:])
    assert "other 5xx" not in out.stdout
