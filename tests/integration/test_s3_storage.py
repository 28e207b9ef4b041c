"""Object storage end to end against a local S3 server (moto, 127.0.0.1, started here): the adapter
registry on s3:// (create, promote, compare-and-swap, rollback, history, the weights' local copy),
a dataset written to and read back from s3://, and the feedback log archiving a sealed segment.

No Ray: everything here goes through core.storage and pyarrow's S3 filesystem.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from parts import require

from core import modeling, storage
from core.modeling import AdapterMeta, LoraSpec
from core.registry import ADAPTER_DIR, AdapterRegistry, RegistryError, UnknownVersionError
from ops.runtime import free_port

try:
    import boto3  # moto[server] brings boto3
    from moto.server import ThreadedMotoServer
except ImportError:
    boto3 = ThreadedMotoServer = None

pytestmark = pytest.mark.integration

BUCKET = "aisle-test"
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; the AWS environment points pyarrow at it."""
    require("moto's S3 server (moto[server])", ThreadedMotoServer is not None,
            "pip install -e '.[dev]' (or pip install 'moto[server]>=5.1')")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": endpoint, "AISLE_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    patch.delenv("AWS_ENDPOINT_URL", raising=False)
    patch.delenv("AWS_SESSION_TOKEN", raising=False)
    patch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield client
    patch.undo()
    server.stop()


def _keys(client, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix`, read with boto3 (not through the code under test)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _adapter(seed: int):
    meta = AdapterMeta(task="sentiment", labels=LABELS, backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = modeling.build_task_model(meta, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():  # LoRA B starts at zero: give it weights so versions differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval(), meta


def _create(reg, seed: int, adapter: bool = False, **lineage):
    """A new sentiment version: a real tiny LoRA adapter, or (faster) a stand-in weights file."""
    if adapter:
        model, meta = _adapter(seed)
        write = lambda d: modeling.save_adapter(model, meta, d / ADAPTER_DIR)  # noqa: E731
    else:
        write = lambda d: ((d / ADAPTER_DIR).mkdir(), (d / ADAPTER_DIR / "adapter_meta.json").write_text(str(seed)))  # noqa: E731
    return reg.create_version("sentiment", write, config={"labels": LABELS, "seed": seed},
                              metrics={"val_accuracy": 0.5 + seed / 100}, lineage=lineage)


# --------------------------------------------------------------------------- registry


def test_s3_registry_promote_and_rollback(s3):
    root = f"s3://{BUCKET}/registry"
    reg = AdapterRegistry(root)
    assert reg.root == root  # a URI, not a local Path: the object store was chosen
    assert reg.tasks() == [] and reg.current("sentiment") is None

    v1, v2, v3 = (_create(reg, seed, parent=None) for seed in (1, 2, 3))
    assert [v.version for v in (v1, v2, v3)] == ["v1", "v2", "v3"]
    assert v1.uri == f"{root}/sentiment/v1"

    objects = _keys(s3, "registry/sentiment/")
    for version in ("v1", "v2", "v3"):
        for name in ("meta.json", "config.json", "metrics.json", "lineage.json", "adapter/adapter_meta.json"):
            assert f"registry/sentiment/{version}/{name}" in objects
    assert not [k for k in objects if ".claim-" in k or "/.lock/" in k]  # claims and leases cleaned up
    assert json.loads(objects["registry/sentiment/v2/meta.json"])["version"] == "v2"

    reg.promote("sentiment", "v1", reason="first")
    reg.promote("sentiment", "v2", reason="better")
    assert _keys(s3, "registry/sentiment/CURRENT")["registry/sentiment/CURRENT"] == b"v2\n"
    with pytest.raises(RegistryError, match="moved to v2"):
        reg.promote("sentiment", "v3", expected_current="v1")
    assert reg.current("sentiment") == "v2"
    reg.promote("sentiment", "v3", reason="gate passed", expected_current="v2")
    reg.promote("sentiment", "v3")  # already CURRENT: no history line
    with pytest.raises(UnknownVersionError):
        reg.promote("sentiment", "v9")

    assert reg.rollback("sentiment", reason="regression") == "v2"
    assert reg.rollback("sentiment") == "v1"
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("sentiment")
    assert _keys(s3, "registry/sentiment/CURRENT")["registry/sentiment/CURRENT"] == b"v1\n"
    moves = [(h["action"], h["from"], h["to"]) for h in reg.history("sentiment")]
    assert moves == [("promote", None, "v1"), ("promote", "v1", "v2"), ("promote", "v2", "v3"),
                     ("rollback", "v3", "v2"), ("rollback", "v2", "v1")]
    stored = _keys(s3, "registry/sentiment/history.jsonl")["registry/sentiment/history.jsonl"].decode()
    assert [json.loads(line)["to"] for line in stored.splitlines()] == ["v1", "v2", "v3", "v2", "v1"]

    # A fresh registry object (another process) sees the same state.
    again = AdapterRegistry(root)
    assert again.tasks() == ["sentiment"]
    assert [v.version for v in again.versions("sentiment")] == ["v1", "v2", "v3"]
    got = again.get("sentiment")
    assert got.version == "v1" and got.config == {"labels": LABELS, "seed": 1}
    assert got.metrics == {"val_accuracy": 0.51} and got.created_at == v1.created_at
    again.update_metrics("sentiment", "v1", {"test_accuracy": 0.7})
    assert reg.get("sentiment", "v1").metrics == {"val_accuracy": 0.51, "test_accuracy": 0.7}
    with pytest.raises(UnknownVersionError):
        again.get("sentiment", "v7")


def test_s3_registry_weights_load_from_local_copy(s3):
    reg = AdapterRegistry(f"s3://{BUCKET}/weights")
    info = _create(reg, seed=4, adapter=True)
    local = info.local_dir()
    assert local == info.path and local.is_relative_to(storage.cache_root())
    assert (local / ADAPTER_DIR / "adapter_meta.json").is_file() and not list(local.glob(".claim-*"))

    expected_model, _ = _adapter(4)
    loaded, meta = modeling.load_adapter(reg.local_dir("sentiment", "v1") / "adapter")
    assert meta.labels == LABELS
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    texts = ["love these shoes", "the dress runs small"]
    want = modeling.predict_proba(expected_model, tokenizer, texts, 32)
    got = modeling.predict_proba(loaded, tokenizer, texts, 32)
    assert torch.allclose(torch.as_tensor(got), torch.as_tensor(want), atol=1e-6)

    # The cached copy is reused (no second download), and a stale one (store rebuilt) is replaced.
    marker = local / ADAPTER_DIR / "touched"
    marker.write_text("x")
    assert reg.get("sentiment", "v1").local_dir() == local and marker.exists()
    (local / "meta.json").write_text(json.dumps({"created_at": "long ago"}))
    assert reg.get("sentiment", "v1").local_dir() == local and not marker.exists()


def test_s3_registry_concurrent_writers_get_distinct_versions(s3):
    reg = AdapterRegistry(f"s3://{BUCKET}/concurrent")
    versions, errors = [], []

    def write(seed: int) -> None:
        try:
            versions.append(AdapterRegistry(reg.root).create_version(
                "intent", lambda d: (d / "w.bin").write_bytes(bytes([seed])), config={}, metrics={}).version)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Distinct numbers (a writer that loses a claim moves up, so numbers may skip), all listed.
    assert len(set(versions)) == 4
    assert [v.version for v in reg.versions("intent")] == sorted(versions, key=lambda v: int(v[1:]))
    weights = {k: v for k, v in _keys(s3, "concurrent/intent/").items() if k.endswith("w.bin")}
    assert len(weights) == 4 and sorted(weights.values()) == [bytes([i]) for i in range(4)]


def test_s3_registry_ignores_incomplete_versions(s3):
    reg = AdapterRegistry(f"s3://{BUCKET}/partial")
    _create(reg, seed=5)
    # A crashed upload: files but no meta.json (the completion marker).
    s3.put_object(Bucket=BUCKET, Key="partial/sentiment/v2/adapter/adapter_model.safetensors", Body=b"half")
    assert [v.version for v in reg.versions("sentiment")] == ["v1"]
    with pytest.raises(UnknownVersionError):
        reg.get("sentiment", "v2")
    with pytest.raises(UnknownVersionError):
        reg.promote("sentiment", "v2")
    assert _create(reg, seed=6).version == "v3"  # the incomplete number is skipped, never reused


def test_s3_registry_failed_write_leaves_nothing(s3):
    reg = AdapterRegistry(f"s3://{BUCKET}/failing")

    def boom(d: Path) -> None:
        (d / "partial.bin").write_text("x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        reg.create_version("sentiment", boom, config={}, metrics={})
    assert _keys(s3, "failing/") == {} and reg.tasks() == []


def test_missing_bucket_is_a_clear_error(s3):
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist"):
        AdapterRegistry("s3://no-such-bucket/registry")


def test_query_string_uris_are_refused(s3):
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL_S3"):
        AdapterRegistry(f"s3://{BUCKET}/r?endpoint_override=127.0.0.1:1")


# --------------------------------------------------------------------------- datasets


def test_dataset_round_trip_through_s3(s3):
    frame = pd.DataFrame({"text": ["love these shoes", "runs small", "great fit"], "label": ["positive", "negative", "positive"]})
    split = f"s3://{BUCKET}/prepared/sentiment/train"
    storage.write_parquet(frame.iloc[:2], storage.join(split, "part-0.parquet"))
    storage.write_parquet(frame.iloc[2:], storage.join(split, "part-1.parquet"))
    storage.write_text(f"s3://{BUCKET}/prepared/sentiment/report.json", json.dumps({"kept": {"train": 3}}))

    assert sorted(_keys(s3, "prepared/")) == ["prepared/sentiment/report.json", "prepared/sentiment/train/part-0.parquet",
                                              "prepared/sentiment/train/part-1.parquet"]
    stored = _keys(s3, "prepared/sentiment/train/")
    assert storage.list_files(split) == {k.rsplit("/", 1)[1]: len(v) for k, v in stored.items()}
    back = storage.read_parquet(split).sort_values("text").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, frame.sort_values("text").reset_index(drop=True))
    assert storage.read_parquet(split, columns=["label"])["label"].tolist().count("positive") == 2
    assert json.loads(storage.read_text(f"s3://{BUCKET}/prepared/sentiment/report.json")) == {"kept": {"train": 3}}
    storage.delete(f"s3://{BUCKET}/prepared/sentiment")
    assert [k for k in _keys(s3, "prepared/") if not k.endswith("/")] == []  # pyarrow may leave a "dir/" marker
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{BUCKET}/prepared/sentiment/report.json")


def test_remote_sources_are_checked_before_reading(s3):
    from core.errors import InputError
    from data_pipelines.sources import check_source

    uri = f"s3://{BUCKET}/sources/reviews.parquet"
    storage.write_parquet(pd.DataFrame({"Review Text": ["fits well"], "Rating": [5]}), uri)
    assert check_source(uri, ["Review Text", "Rating"], what="sentiment") == ["Review Text", "Rating"]
    with pytest.raises(InputError, match="missing column 'Title'"):
        check_source(uri, ["Title"], what="sentiment")
    with pytest.raises(InputError, match="not found"):
        check_source(f"s3://{BUCKET}/sources/none.parquet", [], what="sentiment")
    with pytest.raises(InputError, match="only Parquet"):
        check_source(f"s3://{BUCKET}/sources/reviews.csv", [], what="sentiment")


def test_output_swap_and_embeddings_on_s3(s3):
    import numpy as np

    from core.retrieval import EmbeddingIndex
    from data_pipelines.outputs import swap_into_place

    final, staging = f"s3://{BUCKET}/emb/catalog", f"s3://{BUCKET}/emb/.catalog.tmp-1"
    storage.write_text(storage.join(final, "part-old.parquet"), "stale")
    ids = ["p2", "p1", "p3"]
    vectors = np.eye(3, 4, dtype=np.float32)
    frame = pd.DataFrame({"product_id": ids, "embedding": list(vectors), "title": ["b", "a", "c"]})
    storage.write_parquet(frame, storage.join(staging, "part-0.parquet"))
    storage.write_text(storage.join(staging, "_meta.json"), json.dumps({"dim": 4, "backbone": "tiny-random-bert"}))

    swap_into_place(staging, final)
    assert sorted(k for k in _keys(s3, "emb/") if not k.endswith("/")) == ["emb/catalog/_meta.json",
                                                                           "emb/catalog/part-0.parquet"]
    index = EmbeddingIndex.from_parquet(final)
    assert index.info == {"dim": 4, "backbone": "tiny-random-bert"}
    assert [p for p, _ in index.search(vectors[1][None, :], 1)[0]] == ["p1"]
    with pytest.raises(FileNotFoundError):
        EmbeddingIndex.from_parquet(f"s3://{BUCKET}/emb/missing")


# --------------------------------------------------------------------------- feedback log archive


def _event(i: int) -> dict:
    return {"event_id": f"e-{i:04d}", "ts": 1_700_000_000.0, "user_id": "u1", "session_id": "s1", "type": "click",
            "product_id": f"p{i}", "query": "red shoes", "position": 1}


def test_sealed_wal_segment_is_archived(s3, tmp_path):
    from core.feedback_store import FeedbackStore

    archive = f"s3://{BUCKET}/feedback-archive"
    store = FeedbackStore(tmp_path / "log", "salt", segment_bytes=600, archive_uri=archive,
                          clock=lambda: 1_700_000_010.0)
    try:
        for i in range(4):  # ~250 bytes a record: the segment rolls after the third batch
            store.append([_event(i)])
        assert store.stats()["segments"] == 2
        assert store.wait_archived(timeout=30)
        segments = sorted((tmp_path / "log" / "wal").glob("segment-*.wal"))
        sealed, live = segments[0], segments[1]
        objects = _keys(s3, "feedback-archive/")
        assert list(objects) == [f"feedback-archive/{sealed.name}"]  # the live segment is not archived
        assert objects[f"feedback-archive/{sealed.name}"] == sealed.read_bytes()
        manifest = json.loads((tmp_path / "log" / "archive.json").read_text())
        assert manifest["archives"][archive][sealed.name]["bytes"] == sealed.stat().st_size
        stats = store.stats()["archive"]
        assert stats["archived"] == 1 and stats["pending"] == 0 and stats["last_error"] is None
        assert sealed.exists() and live.exists()  # local segments stay: the log replays them
    finally:
        store.close()

    # Reopened: nothing is uploaded again, and events are all still there.
    s3.put_object(Bucket=BUCKET, Key=f"feedback-archive/{sealed.name}", Body=b"sentinel")
    store = FeedbackStore(tmp_path / "log", "salt", segment_bytes=600, archive_uri=archive,
                          clock=lambda: 1_700_000_010.0)
    try:
        assert store.wait_archived(timeout=30)
        assert _keys(s3, "feedback-archive/")[f"feedback-archive/{sealed.name}"] == b"sentinel"
        assert store.read(0, 10)["end_offset"] == 4
    finally:
        store.close()


def test_archive_failure_never_blocks_appends_and_is_retried(s3, tmp_path):
    from core.feedback_store import FeedbackStore

    archive = f"s3://{BUCKET}-missing/archive"  # no such bucket: every upload fails
    store = FeedbackStore(tmp_path / "log", "salt", segment_bytes=600, archive_uri=archive,
                          clock=lambda: 1_700_000_010.0)
    try:
        results = [store.append([_event(i)]) for i in range(7)]
        assert [r["new"] for r in results] == [1] * 7  # every append acknowledged
        assert store.wait_archived(timeout=30)
        stats = store.stats()["archive"]
        assert stats["archived"] == 0 and stats["pending"] == 2 and stats["failures"] >= 1
        assert "segment-" in stats["last_error"]
    finally:
        store.close()
    assert not (tmp_path / "log" / "archive.json").exists()

    # The bucket appears; the next open uploads both sealed segments.
    s3.create_bucket(Bucket=f"{BUCKET}-missing")
    store = FeedbackStore(tmp_path / "log", "salt", segment_bytes=600, archive_uri=archive,
                          clock=lambda: 1_700_000_010.0)
    try:
        assert store.wait_archived(timeout=30)
        assert store.stats()["archive"]["archived"] == 2
        listed = s3.list_objects_v2(Bucket=f"{BUCKET}-missing", Prefix="archive/")["Contents"]
        assert len(listed) == 2
    finally:
        store.close()


# --------------------------------------------------------------------------- the jobs on s3://


@pytest.mark.timeout(600)
def test_jobs_on_s3(s3):
    """prepare (catalog generated into the bucket), embed_catalog, train, an update from the registered
    adapter, evaluate: the real Ray jobs with every location on s3:// (in a child process, so its Ray
    inherits the AWS environment)."""
    import os
    import subprocess
    import sys

    base = f"s3://{BUCKET}/jobs"
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("s3_train_job.py")), base],
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"},
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    objects = _keys(s3, "jobs/")
    for split in ("train", "val", "test"):
        assert any(k.startswith(f"jobs/prepared/intent/{split}/part-") and k.endswith(".parquet") for k in objects)
    assert json.loads(objects["jobs/prepared/intent/report.json"])["kept"]["train"] > 0
    assert not [k for k in objects if ".tmp-" in k]  # the staging prefixes are gone
    for name in ("products", "queries", "judgements"):  # the catalog was generated into the bucket
        assert f"jobs/catalog/{name}.parquet" in objects
    assert any(k.startswith("jobs/prepared/relevance/train/part-") for k in objects)
    assert out["embedded"] == 80 and out["embeddings_output"] == f"{base}/embeddings/catalog"
    assert "jobs/embeddings/catalog/_meta.json" in objects
    assert out["index_size"] == 80 and out["index_dim"] == 32  # the retriever's loader reads it from s3://

    assert out["first"] == "v1" and out["first_uri"] == f"{base}/registry/intent/v1"
    assert objects["jobs/registry/intent/CURRENT"] == b"v1\n"  # the first version became CURRENT
    assert "jobs/registry/intent/v2/meta.json" in objects and "jobs/registry/intent/v1/adapter/adapter_meta.json" in objects
    lineage = out["first_lineage"]
    assert lineage["data"]["dir"] == f"{base}/prepared/intent" and lineage["data"]["train_examples"] > 0
    assert lineage["run"].startswith(f"{base}/runs/") and lineage["checkpoint"].startswith(f"s3://{BUCKET}/jobs/runs/")
    assert any(k.startswith("jobs/runs/") for k in objects)  # Ray Train wrote its checkpoints to the bucket
    assert out["second"] == "v2" and out["second_parent"] == "v1"
    assert out["evaluated"] == "intent@v2" and out["n"] == 40
    assert "test_accuracy" in json.loads(objects["jobs/registry/intent/v2/metrics.json"])  # evaluate wrote back
