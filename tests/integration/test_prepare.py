"""Data tests on the output of the real prepare job (Ray Data): schema, labels, nulls, duplicates,
leakage, pseudonymised user ids, and every dropped row counted by reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.config import load_config
from core.job_configs import PrepareConfig
from core.tasks import GRADES, TASKS
from core.text import dedupe_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
RAW_USERS = [f"shopper-{i:03d}@example.com" for i in range(40)]


def _messy_reviews(path: Path) -> None:
    rows = []
    for i in range(120):
        rows.append({"Clothing ID": 1000 + i % 30, "Title": f"Title {i}", "Review Text": f"Review number {i} is about fit and fabric",
                     "Rating": 1 + i % 5, "Age": 30})
    rows.append({"Clothing ID": 1001, "Title": "x", "Review Text": None, "Rating": 5, "Age": 30})      # missing text
    rows.append({"Clothing ID": 1002, "Title": "x", "Review Text": "ok", "Rating": 5, "Age": 30})      # too short
    rows.append({"Clothing ID": 1003, "Title": "x", "Review Text": "fine dress", "Rating": 9, "Age": 30})  # bad rating
    rows.append(dict(rows[0]))                                                                        # exact duplicate
    rows.append({**rows[1], "Title": "Other title", "Review Text": rows[1]["Review Text"].upper()})   # same text, case differs
    pd.DataFrame(rows).to_parquet(path)


def _messy_intents(path: Path) -> None:
    rows = [{"instruction": f"please help me with request number {i}", "intent": ("track_order", "cancel_order", "get_refund")[i % 3]}
            for i in range(90)]
    rows.append({"instruction": "please help me with request number 0", "intent": "track_order"})   # duplicate
    rows.append({"instruction": "where is it", "intent": "track_order"})
    rows.append({"instruction": "Where is it?", "intent": "get_refund"})                           # conflicts with the one above
    rows.append({"instruction": "", "intent": "track_order"})                                       # empty text
    pd.DataFrame(rows).to_csv(path, index=False)


def _events(path: Path) -> None:
    rows = []
    for i in range(200):
        rows.append({"event_id": f"e{i}", "ts": f"2026-11-01T10:{i % 60:02d}:00Z", "user_id": RAW_USERS[i % 40],
                     "session_id": f"sess-{RAW_USERS[i % 40]}-{i % 3}", "type": ("impression", "click", "purchase")[i % 3],
                     "product_id": f"P{i % 50:05d}", "query": "navy sneakers", "position": i % 10})
    rows.append({**rows[0]})                                        # re-sent event (same id)
    rows.append({**rows[1], "event_id": "bad-type", "type": "hover"})
    rows.append({**rows[2], "event_id": "bad-ts", "ts": "yesterday-ish"})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def prepared(ray_session, tmp_path_factory):
    from data_pipelines import prepare

    tmp = tmp_path_factory.mktemp("prep")
    _messy_reviews(tmp / "reviews.parquet")
    _messy_intents(tmp / "intents.csv")
    _events(tmp / "events.jsonl")
    cfg = load_config(PrepareConfig, ROOT / "configs" / "prepare.yaml", [
        f"output_dir={tmp / 'out'}", "tasks=[sentiment,intent,relevance]", f"sources.sentiment={tmp / 'reviews.parquet'}",
        f"sources.intent={tmp / 'intents.csv'}", f"sources.events={tmp / 'events.jsonl'}",
        f"sources.catalog_dir={tmp / 'catalog'}", "sources.catalog.n_products=300", "sources.catalog.n_queries=60",
        "sources.catalog.candidates_per_query=20", "split.val_fraction=0.2", "split.test_fraction=0.2",
    ])
    reports = {r.name: r for r in prepare.run(cfg)}
    return tmp / "out", reports


def _split(out: Path, task: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(out / task / split)


def test_drops_are_counted_by_reason(prepared):
    out, reports = prepared
    assert reports["sentiment"].dropped == {"missing_review_text": 1, "text_too_short": 1,
                                            "rating_out_of_range": 1, "duplicate": 2}
    assert reports["intent"].dropped == {"missing_text": 1, "duplicate": 1, "conflicting_label": 2}
    assert reports["events"].dropped == {"duplicate": 1, "unknown_event_type": 1, "bad_timestamp": 1}
    for name, r in reports.items():
        kept = sum(r.kept.values())
        assert kept + r.dropped_total == r.rows_read, name
        rejected = pd.read_parquet(out / name / "rejected")
        assert len(rejected) == r.dropped_total
        if r.dropped_total:  # an empty rejected/ holds no file, hence no columns
            assert rejected["drop_reason"].notna().all()
        on_disk = json.loads((out / name / "report.json").read_text())
        assert on_disk["dropped"] == r.dropped


@pytest.mark.parametrize("task", ["sentiment", "intent", "relevance"])
def test_schema_labels_nulls_duplicates_and_leakage(prepared, task):
    out, _ = prepared
    frames = {s: _split(out, task, s) for s in ("train", "val", "test")}
    fields = {"sentiment": ["title", "text"], "intent": ["text"], "relevance": ["query", "product_text"]}[task]
    for split, df in frames.items():
        assert len(df) > 0, split
        assert {"example_id", "label", "split_group", *fields} <= set(df.columns)
        assert not {"drop_reason", "dedupe_key", "split"} & set(df.columns)
        for col in ["example_id", "label", *fields]:
            assert df[col].notna().all(), (split, col)
        if TASKS[task].labels:
            assert set(df["label"]) <= set(TASKS[task].labels)
    everything = pd.concat(frames.values())
    assert everything["example_id"].is_unique
    groups = {s: set(df["split_group"]) for s, df in frames.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    if task == "relevance":
        assert set(everything["label"]) == set(GRADES)
        assert not set(frames["train"]["query_id"]) & set(frames["test"]["query_id"])
    if task == "sentiment":
        assert not set(frames["train"]["product_id"]) & set(frames["test"]["product_id"])


def test_no_raw_user_id_in_any_output_file(prepared):
    out, reports = prepared
    assert sum(reports["events"].kept.values()) == 200  # 203 sent: one re-sent, one bad type, one bad time
    blobs = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for raw in RAW_USERS:
        assert raw.encode() not in blobs
    events = pd.concat(_split(out, "events", s) for s in ("train", "val", "test"))
    assert "user_id" not in events.columns and "session_id" not in events.columns
    assert events["user"].str.fullmatch(r"[0-9a-f]{16}").all()
    # One shopper's events all land on one side of the split.
    assert events.groupby("user")["split_group"].nunique().max() == 1


@pytest.fixture(scope="module")
def bundled(ray_session, tmp_path_factory):
    """The real job on the shipped reviews and support messages and on the default generated catalog."""
    from data_pipelines import prepare

    out = tmp_path_factory.mktemp("bundled")
    cfg = load_config(PrepareConfig, ROOT / "configs" / "prepare.yaml",
                      [f"output_dir={out}", "tasks=[sentiment,intent,relevance]", f"sources.catalog_dir={out / 'catalog'}",
                       f"sources.sentiment={ROOT / 'data/reviews/womens_clothing_reviews.parquet'}",
                       f"sources.intent={ROOT / 'data/intent/bitext_customer_support.csv'}"])
    return out, {r.name: r for r in prepare.run(cfg)}


def test_real_bundled_data(bundled):
    """The shipped reviews and support messages go through with only the expected, counted drops."""
    out, reports = bundled
    s, i = reports["sentiment"], reports["intent"]
    assert s.rows_read == 19539 and i.rows_read == 4514
    assert s.dropped["missing_review_text"] >= 700  # the README's 845 blank texts, less rows with only a title
    assert set(s.labels["test"]) == {"negative", "neutral", "positive"}
    assert len(i.labels["train"]) == 27
    test = _split(out, "intent", "test")
    train = _split(out, "intent", "train")
    assert not set(test["text"].str.lower()) & set(train["text"].str.lower())


def _in_two_splits(frames: dict[str, pd.DataFrame], values) -> list:
    """Values (a function of a split's frame -> Series) found in more than one split."""
    seen = pd.concat([pd.DataFrame({"value": values(df), "split": split}) for split, df in frames.items()])
    per_value = seen.drop_duplicates().groupby("value")["split"].nunique()
    return sorted(per_value[per_value > 1].index)


def test_nothing_a_model_could_memorise_crosses_splits_in_the_bundled_data(bundled):
    """Relevance: no normalised query text and no hidden intent (catalog constraints) in two splits;
    intent: no normalised message text; sentiment: no product and no normalised review text."""
    out, _ = bundled
    frames = {t: {s: _split(out, t, s) for s in ("train", "val", "test")} for t in ("sentiment", "intent", "relevance")}
    for task, by_split in frames.items():
        assert all(len(df) for df in by_split.values()), task
    norm = lambda col: (lambda df: df[col].map(dedupe_key))  # noqa: E731

    rel = frames["relevance"]
    intents = pd.read_parquet(out / "catalog" / "queries.parquet").set_index("query_id")["constraints"]
    assert _in_two_splits(rel, norm("query")) == []
    assert _in_two_splits(rel, lambda df: df["query_id"].map(intents)) == []
    assert _in_two_splits(rel, lambda df: df["split_group"]) == []
    # Every query's group is the smallest normalised text among the queries it is linked to.
    everything = pd.concat(rel.values())
    assert (everything["split_group"] <= everything["query"].map(dedupe_key)).all()

    assert _in_two_splits(frames["intent"], norm("text")) == []
    assert _in_two_splits(frames["sentiment"], lambda df: df["product_id"]) == []
    assert _in_two_splits(frames["sentiment"], norm("text")) == []
    # One normalised review text is one kept row (5 texts are posted under 2-3 products each).
    sentiment = pd.concat(frames["sentiment"].values())
    assert sentiment["text"].map(dedupe_key).is_unique


def test_a_local_file_is_read_into_equal_blocks_the_way_ray_data_reads_it(ray_session, tmp_path):
    from core.errors import InputError
    from data_pipelines.sources import read_source

    frame = pd.DataFrame({"text": [f"row {i}" for i in range(250)], "rating": range(250)})
    frame.to_csv(tmp_path / "x.csv", index=False)
    ds = read_source(tmp_path / "x.csv", ["text", "rating"], rows_per_block=100)
    blocks = [len(b) for b in ds.iter_batches(batch_size=None, batch_format="pandas")]
    assert sorted(blocks) == [82, 84, 84]  # three near-equal blocks, not 100 + 100 + 50
    assert [str(t) for t in ds.schema().types] == ["string", "string"]  # CSV columns as strings, as read_csv does
    assert ds.take(1)[0] == {"text": "row 0", "rating": "0"}
    limited = read_source(tmp_path / "x.csv", ["text", "rating"], max_rows=120, rows_per_block=100)
    assert sorted(len(b) for b in limited.iter_batches(batch_size=None, batch_format="pandas")) == [60, 60]

    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"bad\.parquet could not be read as parquet"):
        read_source(tmp_path / "bad.parquet", ["text"])


def test_the_same_file_gives_the_same_rows_in_the_same_order_keeping_the_first_copy(ray_session, tmp_path):
    """Of identical copies the first in the file is kept, so two runs write the same rows in the
    same order (a random pick moved the kept copy, and so the training data's order, between runs)."""
    from data_pipelines import prepare

    messages = [f"how do I change thing number {i} on my order" for i in range(60)]
    rows = [{"instruction": m, "intent": ("track_order", "cancel_order", "get_refund")[i % 3]} for i, m in enumerate(messages)]
    pd.DataFrame(rows + rows[:40]).to_csv(tmp_path / "intents.csv", index=False)  # 40 exact copies, far from their first
    runs = []
    for name in ("first", "second"):
        prepare.run(load_config(PrepareConfig, ROOT / "configs" / "prepare.yaml", [
            f"output_dir={tmp_path / name}", "tasks=[intent]", f"sources.intent={tmp_path / 'intents.csv'}"]))
        runs.append({split: _split(tmp_path / name, "intent", split) for split in ("train", "val", "test")})
    for split, frame in runs[0].items():
        pd.testing.assert_frame_equal(frame, runs[1][split])
        order = [messages.index(text) for text in frame["text"]]
        assert order == sorted(order), split  # each message where its first copy stands in the file
    assert sum(len(f) for f in runs[0].values()) == 60
