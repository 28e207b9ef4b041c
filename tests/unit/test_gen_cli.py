"""The generation jobs through the one CLI: what a user who got something wrong sees (one line, exit 2)."""

from __future__ import annotations

import pytest

from aisle.cli import main


def test_train_and_evaluate_without_prepared_data_say_what_to_run(tmp_path, capsys):
    assert main(["train", "describe", f"data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no prepared train data for task 'describe' at {tmp_path}/describe/train: run "
                   "`aisle prepare tasks=[describe]` first"]
    assert main(["evaluate", "reply", f"data_dir={tmp_path}", f"registry={tmp_path}"]) == 2
    assert "reply" in capsys.readouterr().err


def test_an_empty_prepared_split_is_refused_like_a_missing_one(tmp_path, capsys):
    import pandas as pd

    from core import storage

    for split, rows in (("train", 3), ("val", 0)):
        (tmp_path / "summarize" / split).mkdir(parents=True)
        frame = pd.DataFrame({"prompt": ["a review"] * rows, "target": ["a title"] * rows})
        storage.write_parquet(frame, tmp_path / "summarize" / split / "part-0.parquet")
    assert storage.parquet_rows(tmp_path / "summarize" / "train") == 3
    assert main(["train", "summarize", f"data_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no prepared val data for task 'summarize'")


@pytest.mark.parametrize("argv,needle", [
    (["train", "summarize", "model.max_length=4"], "model.max_length"),
    (["train", "summarize", "train.bach_size=4"], "bach_size"),
    (["evaluate", "describe", "max_examples=0"], "max_examples"),
])
def test_bad_generation_settings_are_refused_naming_the_key(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_config_lists_the_generation_keys(capsys):
    assert main(["config", "generate"]) == 0
    out = capsys.readouterr().out
    assert "model.lm" in out and "train.max_train_examples" in out
    assert main(["config", "evaluate-generate"]) == 0
    assert "baselines" in capsys.readouterr().out
