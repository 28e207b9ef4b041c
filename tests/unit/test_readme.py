"""The README's commands point at real modules, presets and CLI subcommands (docs that run)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from core.config import load_config
from core.job_configs import EmbedCatalogConfig, EvaluateConfig, FinetuneConfig, PrepareConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG_OF = {"data_pipelines.prepare": PrepareConfig, "train.finetune": FinetuneConfig, "train.evaluate": EvaluateConfig,
             "data_pipelines.embed_catalog": EmbedCatalogConfig}


def test_quick_start_shows_the_two_commands_first():
    quick = README.split("## Quick start", 1)[1]
    commands = re.findall(r"^make (\w+)", quick, flags=re.M)
    assert commands[:2] == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _python_m_lines():
    for line in README.splitlines():
        m = re.search(r"python -m ([\w.]+) --config (\S+)(.*)", line)
        if m:
            rest = m.group(3).split("#")[0].replace("\\", " ")
            yield m.group(1), m.group(2), [t for t in shlex.split(rest) if "=" in t]


@pytest.mark.parametrize("module,config,overrides", list(_python_m_lines()))
def test_python_m_commands_name_real_modules_and_presets(module, config, overrides):
    assert importlib.util.find_spec(module) is not None, module
    cfg = load_config(CONFIG_OF[module], ROOT / config, [o for o in overrides if not o.startswith("$")])
    assert cfg is not None


def test_aisle_subcommands_exist():
    from aisle.cli import main

    used = set(re.findall(r"aisle (\w+)", README)) - {"demo"}
    assert {"prepare", "train", "evaluate", "catalog", "config", "embed", "serve"} <= used
    for sub in used:
        with pytest.raises(SystemExit) as exit_info:
            main([sub, "--help"])
        assert exit_info.value.code == 0, sub


def test_every_preset_header_names_its_command():
    for path in (ROOT / "configs").glob("*.yaml"):
        header = path.read_text().splitlines()[:4]
        assert any(("python -m" in line or "aisle " in line) for line in header), path.name
