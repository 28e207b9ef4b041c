"""Bad input through the real command line: one clear error line, exit 2, nothing written or registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=170)


def _prepare(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _run("-m", "data_pipelines.prepare", "--config", str(ROOT / "configs/prepare.yaml"),
                f"output_dir={tmp_path / 'out'}", "tasks=[intent]", *overrides)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_file(tmp_path):
    proc = _prepare(tmp_path, f"sources.intent={tmp_path / 'nope.csv'}")
    _assert_one_line_error(proc, "file not found", "nope.csv")
    assert not (tmp_path / "out").exists()


def test_missing_column(tmp_path):
    src = tmp_path / "intents.csv"
    pd.DataFrame({"instruction": ["where is my order"], "category": ["ORDER"]}).to_csv(src, index=False)
    _assert_one_line_error(_prepare(tmp_path, f"sources.intent={src}"), "missing column 'intent'")
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path):
    src = tmp_path / "intents.csv"
    src.write_bytes(b"")
    _assert_one_line_error(_prepare(tmp_path, f"sources.intent={src}"), "is empty")


def test_header_only_file(tmp_path):
    src = tmp_path / "intents.csv"
    src.write_text("instruction,intent\n")
    _assert_one_line_error(_prepare(tmp_path, f"sources.intent={src}"), "no data rows")


def test_non_utf8_file(tmp_path):
    src = tmp_path / "intents.csv"
    src.write_bytes("instruction,intent\ncancel my café order,cancel_order\n".encode("latin-1"))
    _assert_one_line_error(_prepare(tmp_path, f"sources.intent={src}"), "not UTF-8", "0xe9")
    assert not (tmp_path / "out").exists()


def test_unknown_config_key(tmp_path):
    _assert_one_line_error(_prepare(tmp_path, "sourcez.intent=x.csv"), "unknown config key 'sourcez'")


def test_unknown_config_key_in_training_leaves_registry_empty(tmp_path):
    proc = _run("-m", "aisle.cli", "train", "intent", f"registry={tmp_path / 'reg'}", "train.lrate=1")
    _assert_one_line_error(proc, "train.lrate")
    assert not (tmp_path / "reg" / "intent").exists()


def test_training_without_prepared_data_registers_nothing(tmp_path):
    proc = _run("-m", "aisle.cli", "train", "intent", f"data_dir={tmp_path / 'nodata'}", f"registry={tmp_path / 'reg'}")
    _assert_one_line_error(proc, "no prepared train data", "run data_pipelines.prepare first")
    assert not (tmp_path / "reg" / "intent").exists()


def test_evaluate_unknown_version(tmp_path):
    proc = _run("-m", "aisle.cli", "evaluate", "intent", f"registry={tmp_path / 'reg'}", "version=v9")
    _assert_one_line_error(proc, "intent")
