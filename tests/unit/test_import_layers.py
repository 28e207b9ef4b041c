"""The floor plan, checked on every module: imports run downward only.

LAYERS is the one place the order is written. A module may import from its own package and from
the packages listed before it, never from one after it (a job that reached up into the CLI package
would make every job depend on the launchers). Function-level imports count as much as top-level
ones: deferring an import does not change which way it runs. core/ is pure: no Ray.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "ops", "data_pipelines", "train", "actors", "serve", "aisle", "benchmarks")
"""Bottom to top: the pure logic, process glue (metrics, the Ray runtime helpers, reports), batch
jobs, training jobs, stateful actors, Serve deployments, the CLI and the demo, the benchmarks."""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_layer_is_a_package_of_the_tree():
    assert all((ROOT / layer).is_dir() for layer in LAYERS)
    assert len(modules()) > 100


def test_no_module_imports_a_layer_above_its_own():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in modules():
        own = path.relative_to(ROOT).parts[0]
        for line, module in imports(path):
            top = module.split(".")[0]
            if top in rank and rank[top] > rank[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({top} is above {own})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_core_imports_no_ray():
    offending = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in (ROOT / "core").rglob("*.py")
                 for line, m in imports(p) if m.split(".")[0] == "ray"]
    assert not offending, "core/ must stay free of Ray:\n" + "\n".join(offending)


@pytest.mark.parametrize("source", ["import aisle.cli\n", "from aisle.demo import main\n",
                                    "def f():\n    from serve.app import build\n"])
def test_the_check_sees_upward_imports_at_any_depth(tmp_path, source):
    path = tmp_path / "job.py"
    path.write_text(source)
    found = [m.split(".")[0] for _, m in imports(path)]
    assert found and all(LAYERS.index(top) > LAYERS.index("train") for top in found)
