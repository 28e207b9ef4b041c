"""core.fingerprint and the reuse it serves (train.fitting.reusable): what counts as the same inputs
and what does not. No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.fingerprint import data_digest, fingerprint, frame_digest, load_result, save_result, settings_of
from core.job_configs import FinetuneConfig
from core.registry import AdapterRegistry
from train import fitting

ROOT = Path(__file__).resolve().parents[2]


def _frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"example_id": [f"e{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)],
                         "label": ["a", "b"] * (n // 2)})


def _task_dir(root: Path, frame: pd.DataFrame, name: str = "part-1.parquet", rejected: bool = False) -> Path:
    for split, rows in (("train", frame.iloc[:4]), ("val", frame.iloc[4:])):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows.to_parquet(root / split / name)
    (root / "report.json").write_text('{"seconds": %f}' % np.random.rand())
    if rejected:
        (root / "rejected").mkdir(exist_ok=True)
        frame.iloc[:1].assign(drop_reason="duplicate").to_parquet(root / "rejected" / name)
    return root


def test_a_task_directory_digest_ignores_file_names_row_order_rejected_rows_and_the_report(tmp_path):
    frame = _frame()
    first = data_digest(str(_task_dir(tmp_path / "a", frame)))
    shuffled = frame.iloc[[1, 0, 3, 2, 5, 4]]  # rows moved within each split
    second = data_digest(str(_task_dir(tmp_path / "b", shuffled, name="part-other.parquet", rejected=True)))
    assert first == second


def test_a_changed_row_moved_row_or_new_column_changes_the_digest(tmp_path):
    frame = _frame()
    base = data_digest(str(_task_dir(tmp_path / "base", frame)))
    edited = frame.copy()
    edited.loc[2, "label"] = "b"
    moved = frame.iloc[[0, 1, 2, 4, 3, 5]]  # one row from train to val
    wider = frame.assign(extra=1)
    digests = {data_digest(str(_task_dir(tmp_path / name, f)))
               for name, f in (("edited", edited), ("moved", moved), ("wider", wider))}
    assert base not in digests and len(digests) == 3


def test_list_cells_and_raw_files_can_be_digested(tmp_path):
    probs = pd.DataFrame({"q": ["a", "b"], "teacher_probs": [np.array([0.1, 0.9], "float32"), np.array([0.5, 0.5], "float32")]})
    changed = probs.assign(teacher_probs=[np.array([0.1, 0.9], "float32"), np.array([0.4, 0.6], "float32")])
    assert frame_digest(probs) != frame_digest(changed) and frame_digest(probs) == frame_digest(probs.iloc[::-1])
    log = tmp_path / "later.csv"
    log.write_text("user,item\n1,A\n")
    before = data_digest(str(log))
    log.write_text("user,item\n1,B\n")
    assert data_digest(str(log)) != before
    with pytest.raises(FileNotFoundError):
        data_digest(str(tmp_path / "empty"))


def test_settings_of_drops_nested_keys_without_touching_the_config():
    config = {"workspace": "/w", "model": {"cache_dir": "/c", "lora_r": 8}, "train": {"lr": 0.1}}
    assert settings_of(config, ("workspace", "model.cache_dir", "missing.key")) == {"model": {"lora_r": 8}, "train": {"lr": 0.1}}
    assert config["model"]["cache_dir"] == "/c"


def _finetune(tmp_path: Path, *overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, ROOT / "configs" / "intent.yaml", [f"workspace={tmp_path / 'ws'}", *overrides])


def test_a_training_fingerprint_follows_what_is_trained_not_where_it_goes(tmp_path):
    data = _task_dir(tmp_path / "prepared" / "intent", _frame())
    fp = fitting.training_fingerprint("finetune", _finetune(tmp_path), str(data))
    same = fitting.training_fingerprint("finetune", _finetune(
        tmp_path, f"registry={tmp_path / 'elsewhere'}", "run_name=other", "promote=false", "reuse=true",
        f"storage_path={tmp_path / 'runs2'}"), str(data))
    assert fp is not None and fp == same
    assert fitting.training_fingerprint("finetune", _finetune(tmp_path, "train.lr=0.01"), str(data)) != fp
    assert fitting.training_fingerprint("recommend", _finetune(tmp_path), str(data)) != fp  # another job
    assert fitting.training_fingerprint("finetune", _finetune(tmp_path), str(tmp_path / "none")) is None


def test_reusable_returns_the_newest_version_with_the_fingerprint(tmp_path, capsys):
    registry = AdapterRegistry(tmp_path / "registry")
    assert fitting.reusable(str(registry.root), "intent", "f" * 64) is None  # no versions yet

    def create(fp: str | None):
        return registry.create_version("intent", lambda d: (d / "adapter").mkdir(), config={}, metrics={},
                                       lineage={"fingerprint": fp} if fp else {})

    create("a" * 64), create("b" * 64)
    newest = create("a" * 64)
    create(None)
    found = fitting.reusable(str(registry.root), "intent", "a" * 64)
    assert found is not None and found.version == newest.version == "v3"
    assert f"reusing intent@v3" in capsys.readouterr().out
    assert fitting.reusable(str(registry.root), "intent", "c" * 64) is None
    assert fitting.reusable(str(registry.root), "intent", None) is None


def test_a_kept_result_comes_back_with_plain_numbers(tmp_path):
    result = {"n": np.int64(3), "results": {"model": {"ndcg@10": np.float32(0.5)}}}
    save_result(str(tmp_path), "evaluate", "d" * 64, result)
    assert load_result(str(tmp_path), "evaluate", "d" * 64) == {"n": 3, "results": {"model": {"ndcg@10": 0.5}}}
    assert load_result(str(tmp_path), "evaluate", "e" * 64) is None and load_result(str(tmp_path), "evaluate", None) is None


def test_the_fingerprint_covers_extra_identities():
    assert fingerprint("evaluate", {}, extra={"version": "intent@v1"}) != fingerprint("evaluate", {}, extra={"version": "intent@v2"})


def test_the_task_declarations_in_use_are_part_of_every_fingerprint(tmp_path, monkeypatch):
    declarations = tmp_path / "tasks.yaml"
    declarations.write_text("tasks: []\n")
    monkeypatch.setenv("AISLE_TASKS", str(declarations))
    before = fingerprint("finetune", {"task": "mine"})
    declarations.write_text("tasks: []  # edited\n")
    assert fingerprint("finetune", {"task": "mine"}) != before
