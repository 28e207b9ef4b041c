"""The README's commands point at real modules, presets and CLI subcommands (docs that run)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from core.config import load_config
from core.job_configs import EmbedCatalogConfig, EvaluateConfig, FinetuneConfig, PrepareConfig, RecommendEvalConfig, RecommendTrainConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG_OF = {"data_pipelines.prepare": PrepareConfig, "train.finetune": FinetuneConfig, "train.evaluate": EvaluateConfig,
             "data_pipelines.embed_catalog": EmbedCatalogConfig, "train.recommend": RecommendTrainConfig,
             "train.recommend_eval": RecommendEvalConfig}


def test_quick_start_shows_the_two_commands_first():
    quick = README.split("## Quick start", 1)[1]
    commands = re.findall(r"^make (\w+)", quick, flags=re.M)
    assert commands[:2] == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _python_m_lines():
    docs = [README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))]
    for line in "\n".join(docs).splitlines():
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


# ---- every figure has a command: docs/results.md and the benchmark scripts the docs name ----------------

DOCS = {p.relative_to(ROOT).as_posix(): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
RESULTS = (ROOT / "docs" / "results.md").read_text()


def _benchmark_mentions():
    """(doc, script, flags) for each `benchmarks/<name>.py` in README.md or docs/*.md; flags are the
    `--options` written after it, up to the end of its code span or line."""
    for doc, text in DOCS.items():
        for line in text.splitlines():
            for m in re.finditer(r"benchmarks/(\w+\.py)([^`\n]*)", line):
                yield doc, m.group(1), re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2))


@pytest.mark.parametrize("doc,script,flags", list(_benchmark_mentions()))
def test_named_benchmark_scripts_and_flags_exist(doc, script, flags):
    path = ROOT / "benchmarks" / script
    assert path.is_file(), f"{doc} names benchmarks/{script}, which does not exist"
    source = path.read_text()
    for flag in flags:
        assert f'"{flag}"' in source, f"{doc}: benchmarks/{script} has no {flag} option"


def _figure_blocks(text: str):
    """(first line, the paragraph right above) of each table and fenced block of a markdown text."""
    lines, i = text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") or line.startswith("```"):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            above = []
            while j >= 0 and lines[j].strip() and not lines[j].startswith(("#", "|", "```")):
                above.insert(0, lines[j])
                j -= 1
            yield line, " ".join(above)
            if line.startswith("```"):
                i += 1
                while i < len(lines) and not lines[i].startswith("```"):
                    i += 1
                i += 1
            else:
                while i < len(lines) and lines[i].startswith("|"):
                    i += 1
        else:
            i += 1


def test_readme_points_at_results_and_holds_no_measured_section():
    assert "docs/results.md" in README
    assert not re.search(r"^## Measured", README, re.M)


def test_every_results_table_and_transcript_names_its_command_and_commit():
    blocks = list(_figure_blocks(RESULTS))
    assert len(blocks) >= 5
    for first, above in blocks:
        has_column = first.startswith("|") and "command" in first.lower()
        assert has_column or re.search(r"\bCommands?\b[^`]*`[^`]+`", above), f"no command above: {first[:80]}"
        assert re.search(r"`[0-9a-f]{7,40}`", above), f"no commit (`abc1234`) in the paragraph above: {first[:80]}"


def test_the_readme_is_a_front_page_and_its_links_resolve():
    assert len(README.splitlines()) <= 200
    for doc, text in DOCS.items():
        base = (ROOT / doc).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (base / target).exists(), f"{doc} links to {target}, which does not exist"
