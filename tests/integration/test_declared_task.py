"""Bring your own data: a task declared in YAML alone (tests/conftest.py declares `ticket_topic`
over columns named nothing like the bundled ones) goes through prepare, train, evaluate and the
registry with no code; a built-in task reads a file with other column names through
`sources.columns`; a missing column is one error naming it and listing the file's columns."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from core.config import load_config
from core.errors import InputError
from core.job_configs import EvaluateConfig, FinetuneConfig, PrepareConfig
from core.registry import AdapterRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WORDS = {1: ["parcel", "courier", "delivery", "tracking", "late"], 2: ["return", "refund", "exchange", "label", "size"],
         3: ["invoice", "charge", "card", "vat", "payment"]}


def _tickets(path: Path) -> None:
    rows = []
    for i in range(240):
        code = 1 + i % 3
        words = WORDS[code]
        rows.append({"Subject": f"{words[i % 5]} question", "Body": f"my {words[(i + 1) % 5]} and {words[(i + 2) % 5]} #{i}",
                     "Topic Code": code, "Customer": f"cust-{i % 60}", "Channel": "email"})
    rows += [{"Subject": "", "Body": None, "Topic Code": 1, "Customer": "cust-1", "Channel": "email"},        # no text
             {"Subject": "card", "Body": "charged twice", "Topic Code": 7, "Customer": "cust-2", "Channel": "chat"},  # unmapped
             {"Subject": "hello", "Body": "anyone there", "Topic Code": None, "Customer": "cust-3", "Channel": "chat"}]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_declared_task_goes_through_prepare_train_evaluate_and_the_registry(ray_session, tmp_path):
    from core.tasks import forget_declared, get_task
    from data_pipelines import prepare
    from train import evaluate, finetune

    forget_declared()
    _tickets(Path(os.environ["AISLE_TASKS"]).parent / "tickets.csv")
    reports = prepare.run(load_config(PrepareConfig, None, [f"output_dir={tmp_path / 'prepared'}", "tasks=[ticket_topic]"]))
    report = reports[0]
    assert report.name == "ticket_topic" and report.dropped == {"missing_text": 1, "label_not_mapped": 1, "missing_label": 1}
    assert sum(report.kept.values()) == 240
    splits = {s: pd.read_parquet(tmp_path / "prepared" / "ticket_topic" / s) for s in ("train", "val", "test")}
    groups = [set(f["split_group"]) for f in splits.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])  # a customer in one split
    assert set(splits["train"]["label"]) == {"shipping", "returns", "billing"}

    version = finetune.run(load_config(FinetuneConfig, None, [
        "task=ticket_topic", f"data_dir={tmp_path / 'prepared'}", f"registry={tmp_path / 'registry'}",
        f"storage_path={tmp_path / 'runs'}", "model.backbone=tiny-random-bert", "model.max_length=32",
        "train.epochs=1", "train.batch_size=16", "scaling.cpus_per_worker=0.5", "scaling.threads_per_worker=1"]))
    registry = AdapterRegistry(tmp_path / "registry")
    assert registry.current("ticket_topic") == version.version and "val_macro_f1" in version.metrics
    ev = evaluate.evaluate_version(load_config(EvaluateConfig, None, [
        "task=ticket_topic", f"data_dir={tmp_path / 'prepared'}", f"registry={tmp_path / 'registry'}"]))
    assert ev["primary_metric"] == "macro_f1" and set(ev["results"]) == {version.model_id, "majority", "nearest_centroid", "tfidf_logreg"}
    assert ev["results"]["tfidf_logreg"]["macro_f1"] > 0.9  # the topics' words separate them
    assert get_task("ticket_topic").labels == ("shipping", "returns", "billing")


def test_a_built_in_task_reads_other_column_names_and_a_missing_one_is_named(ray_session, tmp_path):
    from data_pipelines import prepare

    reviews = pd.DataFrame({"product": [f"p{i % 20}" for i in range(100)], "headline": ["Nice"] * 100,
                            "body": [f"review {i} of the fit and fabric" for i in range(100)],
                            "stars": [1 + i % 5 for i in range(100)]})
    reviews.to_csv(tmp_path / "reviews.csv", index=False)
    columns = "sources.columns={sentiment: {Clothing ID: product, Title: headline, Review Text: body, Rating: stars}}"
    cfg = load_config(PrepareConfig, None, [f"output_dir={tmp_path / 'out'}", "tasks=[sentiment]",
                                            f"sources.sentiment={tmp_path / 'reviews.csv'}", columns])
    report = prepare.run(cfg)[0]
    assert sum(report.kept.values()) == 100 and report.dropped == {}
    train = pd.read_parquet(tmp_path / "out" / "sentiment" / "train")
    assert set(train["label"]) <= {"negative", "neutral", "positive"} and train["text"].str.startswith("review").all()

    cfg.sources.columns["sentiment"]["Rating"] = "score"
    with pytest.raises(InputError, match=r"missing column 'score' \(found: product, headline, body, stars\)"):
        prepare.run(cfg)
    cfg.sources.columns["sentiment"] = {"Stars": "stars"}
    with pytest.raises(InputError, match="'Stars' is not a column of task sentiment"):
        prepare.run(cfg)
