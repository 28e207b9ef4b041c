"""The floor plan, checked on every module: imports run downward only, and no two modules import each
other (directly or through others; at b84edd2 this found core.registry -> core.remote_registry ->
core.registry_format -> core.registry).

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


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """The project modules `path` imports at run time (any depth; `if TYPE_CHECKING:` blocks only
    name types), relative imports resolved; `from pkg import mod` counts as importing pkg.mod."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for stmt in node.body for n in ast.walk(stmt)}
    package = module_name(path, root).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {m for m in found if m in known} - {module_name(path, root)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                out.append(sorted([v, *group]))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def import_graph(paths: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    known = {module_name(p, root) for p in paths}
    return {module_name(p, root): project_imports(p, known, root) for p in paths}


def test_no_two_modules_import_each_other_even_through_others():
    found = cycles(import_graph(modules()))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(group) for group in found)


def test_the_cycle_check_sees_a_cycle_through_a_deferred_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import x\n")
    (tmp_path / "pkg" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                           "def f():\n    from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    graph = import_graph(sorted((tmp_path / "pkg").glob("*.py")), tmp_path)
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (tmp_path / "pkg" / "c.py").write_text("x = 1\n")
    assert cycles(import_graph(sorted((tmp_path / "pkg").glob("*.py")), tmp_path)) == []
