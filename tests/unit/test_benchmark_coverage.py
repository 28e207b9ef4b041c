"""Every script in benchmarks/ runs in CI: a benchmark has a smoke run (tests/smoke_runs.py, checked by
tests/integration/test_benchmarks.py), and a helper module (a leading underscore, not a benchmark of
its own) is imported by a benchmark that has one, so a helper that breaks fails that smoke run."""

from __future__ import annotations

import ast
from pathlib import Path

from smoke_runs import SMOKES

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TEST_MODULE = Path(__file__).resolve().parents[1] / "integration" / "test_benchmarks.py"


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {part for a in node.names for part in a.name.split(".")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= set(node.module.split("."))  # `from _probe import` and `from benchmarks._probe import`
    return names


def test_every_benchmark_has_a_smoke_test_and_every_helper_is_used_by_one():
    scripts = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
    assert scripts and [s for s in scripts if s not in SMOKES] == []
    tests = TEST_MODULE.read_text()
    assert [s for s in scripts if f"def test_{s.removesuffix('.py')}_smoke(" not in tests] == []
    smoked = set().union(*(_imported(BENCHMARKS / s) for s in scripts))
    helpers = sorted(p.stem for p in BENCHMARKS.glob("_*.py"))
    assert {"_freshness_probe", "_recommend_serving"} <= set(helpers)
    assert [h for h in helpers if h not in smoked] == []
