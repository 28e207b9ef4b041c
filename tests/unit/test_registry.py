"""Unit tests for core.registry (filesystem only, no Ray)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from core.registry import (
    AdapterRegistry,
    RegistryError,
    UnknownTaskError,
    UnknownVersionError,
    VersionInfo,
    parse_model_id,
)


def _writer(content: str = "weights", name: str = "adapter_model.safetensors"):
    def write(d: Path) -> None:
        (d / name).write_text(content)

    return write


def _create(reg: AdapterRegistry, task: str = "relevance", **kw) -> VersionInfo:
    kw.setdefault("config", {"lr": 1e-4})
    kw.setdefault("metrics", {"val_loss": 0.5})
    return reg.create_version(task, _writer(), **kw)


@pytest.fixture
def reg(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "registry")


# ---------------------------------------------------------------- create / get


def test_root_created(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    AdapterRegistry(root)
    assert root.is_dir()


def test_create_get_round_trip(reg: AdapterRegistry) -> None:
    info = reg.create_version(
        "relevance",
        _writer("w0"),
        config={"lr": 1e-4, "rank": 8, "nested": {"a": [1, 2]}},
        metrics={"val_ndcg": 0.71, "val_loss": 0.42},
        lineage={"parent": None, "data_span": ["2024-01-01", "2024-02-01"], "trigger": "drift"},
    )
    assert info.task == "relevance" and info.version == "v1"
    assert info.model_id == "relevance@v1"

    got = reg.get("relevance", "v1")
    assert got.config == {"lr": 1e-4, "rank": 8, "nested": {"a": [1, 2]}}
    assert got.metrics == {"val_ndcg": 0.71, "val_loss": 0.42}
    assert got.lineage["trigger"] == "drift"
    assert got.lineage["data_span"] == ["2024-01-01", "2024-02-01"]
    assert got.created_at == info.created_at
    assert got.path == reg.root / "relevance" / "v1"
    assert (got.path / "adapter_model.safetensors").read_text() == "w0"
    meta = json.loads((got.path / "meta.json").read_text())
    assert meta["version"] == "v1" and meta["task"] == "relevance"
    assert meta["created_at"].endswith("+00:00")
    for name in ("config.json", "metrics.json", "lineage.json", "meta.json"):
        assert (got.path / name).is_file()
    assert got == info


def test_lineage_defaults_to_empty(reg: AdapterRegistry) -> None:
    _create(reg)
    assert reg.get("relevance", "v1").lineage == {}


def test_version_numbers_increase(reg: AdapterRegistry) -> None:
    assert [_create(reg).version for _ in range(3)] == ["v1", "v2", "v3"]
    assert [v.version for v in reg.versions("relevance")] == ["v1", "v2", "v3"]


def test_versions_sorted_numerically(reg: AdapterRegistry) -> None:
    for _ in range(11):
        _create(reg)
    assert [v.version for v in reg.versions("relevance")] == [f"v{i}" for i in range(1, 12)]
    assert _create(reg).version == "v12"


def test_tasks_are_independent(reg: AdapterRegistry) -> None:
    _create(reg, "relevance")
    _create(reg, "relevance")
    assert _create(reg, "query_intent").version == "v1"
    assert reg.tasks() == ["query_intent", "relevance"]


def test_failing_write_artifacts_leaves_nothing(reg: AdapterRegistry) -> None:
    def boom(d: Path) -> None:
        (d / "partial.bin").write_text("x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        reg.create_version("relevance", boom, config={}, metrics={})
    task_dir = reg.root / "relevance"
    assert list(task_dir.iterdir()) == []
    assert reg.tasks() == []
    with pytest.raises(UnknownTaskError):
        reg.versions("relevance")
    # The next successful create is still v1.
    assert _create(reg).version == "v1"


def test_reserved_artifact_name_rejected(reg: AdapterRegistry) -> None:
    with pytest.raises(RegistryError, match="config.json"):
        reg.create_version("relevance", _writer(name="config.json"), config={}, metrics={})
    assert [p.name for p in (reg.root / "relevance").iterdir()] == []


def test_bad_metrics_rejected(reg: AdapterRegistry) -> None:
    with pytest.raises(TypeError, match="val_loss"):
        reg.create_version("relevance", _writer(), config={}, metrics={"val_loss": [1, 2]})
    assert reg.tasks() == []


def test_get_errors(reg: AdapterRegistry) -> None:
    with pytest.raises(UnknownTaskError, match="nosuch"):
        reg.get("nosuch", "v1")
    with pytest.raises(UnknownTaskError):
        reg.versions("nosuch")
    _create(reg)
    with pytest.raises(UnknownVersionError, match="relevance@v9"):
        reg.get("relevance", "v9")
    with pytest.raises(UnknownVersionError, match="relevance"):
        reg.get("relevance")  # nothing promoted yet
    # Both are LookupErrors and RegistryErrors.
    with pytest.raises(LookupError):
        reg.get("relevance", "v9")
    with pytest.raises(RegistryError):
        reg.get("nosuch")


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "task", ["../x", "Relevance", "1task", "", "a/b", "a-b", "x" * 65, ".tmp-x", "rel evance", "a\n", None]
)
def test_invalid_task_names(reg: AdapterRegistry, task) -> None:
    with pytest.raises(ValueError, match="invalid task name"):
        reg.create_version(task, _writer(), config={}, metrics={})
    with pytest.raises(ValueError):
        reg.get(task, "v1")
    with pytest.raises(ValueError):
        reg.current(task)
    assert not (reg.root.parent / "x").exists()


@pytest.mark.parametrize("version", ["../x", "v0", "v01", "1", "V1", "v", "v1/..", "v1\n", "latest"])
def test_invalid_version_names(reg: AdapterRegistry, version) -> None:
    _create(reg)
    with pytest.raises(ValueError, match="invalid version name"):
        reg.get("relevance", version)
    with pytest.raises(ValueError):
        reg.promote("relevance", version)
    with pytest.raises(ValueError):
        reg.update_metrics("relevance", version, {"a": 1})


def test_valid_edge_names(reg: AdapterRegistry) -> None:
    task = "a" + "_" * 63
    assert reg.create_version(task, _writer(), config={}, metrics={}).model_id == f"{task}@v1"


def test_parse_model_id_good() -> None:
    assert parse_model_id("relevance@v7") == ("relevance", "v7")
    assert parse_model_id("query_intent2@v123") == ("query_intent2", "v123")


@pytest.mark.parametrize(
    "bad", ["relevance", "relevance@", "@v1", "relevance@v0", "relevance@7", "a@b@v1", "../x@v1", "Rel@v1", "", None]
)
def test_parse_model_id_bad(bad) -> None:
    with pytest.raises(ValueError) as exc:
        parse_model_id(bad)
    assert repr(bad) in str(exc.value)


def test_model_id_round_trip(reg: AdapterRegistry) -> None:
    info = _create(reg)
    assert parse_model_id(info.model_id) == (info.task, info.version)


# ---------------------------------------------------------------- promote / rollback


def test_current_none_before_promote(reg: AdapterRegistry) -> None:
    assert reg.current("relevance") is None
    _create(reg)
    assert reg.current("relevance") is None
    assert reg.history("relevance") == []


def test_promote_and_get_current(reg: AdapterRegistry) -> None:
    _create(reg)
    _create(reg)
    reg.promote("relevance", "v2", reason="better ndcg")
    assert reg.current("relevance") == "v2"
    assert reg.get("relevance").version == "v2"
    assert (reg.root / "relevance" / "CURRENT").read_text().strip() == "v2"


def test_promote_unknown_version(reg: AdapterRegistry) -> None:
    _create(reg)
    with pytest.raises(UnknownVersionError, match="relevance@v5"):
        reg.promote("relevance", "v5")
    with pytest.raises(UnknownTaskError, match="nosuch"):
        reg.promote("nosuch", "v1")
    assert reg.current("relevance") is None
    assert reg.history("relevance") == []


def test_a_version_folder_without_its_meta_is_never_promoted_rolled_back_to_or_updated(reg: AdapterRegistry) -> None:
    """A writer that died before meta.json (written last) leaves a folder that looks like a version:
    the pointer operations check the meta file itself, and refuse it."""
    _create(reg)
    _create(reg)
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v2")
    (reg.root / "relevance" / "v1" / "meta.json").unlink()
    (reg.root / "relevance" / "v3").mkdir()
    (reg.root / "relevance" / "v3" / "adapter_model.safetensors").write_text("half written")
    with pytest.raises(UnknownVersionError, match="relevance@v3"):
        reg.promote("relevance", "v3")
    with pytest.raises(UnknownVersionError, match="relevance@v3"):
        reg.update_metrics("relevance", "v3", {"test_ndcg": 0.9})
    with pytest.raises(UnknownVersionError, match="to v1"):
        reg.rollback("relevance")
    assert reg.current("relevance") == "v2"
    assert [h["to"] for h in reg.history("relevance")] == ["v1", "v2"]


def test_promote_same_version_is_noop(reg: AdapterRegistry) -> None:
    _create(reg)
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v1", reason="again")
    assert reg.current("relevance") == "v1"
    assert len(reg.history("relevance")) == 1


def test_rollback(reg: AdapterRegistry) -> None:
    for _ in range(3):
        _create(reg)
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v2")
    reg.promote("relevance", "v3")
    assert reg.rollback("relevance", reason="latency regression") == "v2"
    assert reg.current("relevance") == "v2"
    assert reg.get("relevance").version == "v2"


def test_rollback_twice(reg: AdapterRegistry) -> None:
    for _ in range(3):
        _create(reg)
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v2")
    reg.promote("relevance", "v3")
    assert reg.rollback("relevance") == "v2"
    assert reg.rollback("relevance") == "v1"
    assert reg.current("relevance") == "v1"
    with pytest.raises(RegistryError, match="no earlier version to roll back to for task relevance"):
        reg.rollback("relevance")
    assert reg.current("relevance") == "v1"


def test_rollback_after_rollback_then_promote(reg: AdapterRegistry) -> None:
    for _ in range(4):
        _create(reg)
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v2")
    assert reg.rollback("relevance") == "v1"
    reg.promote("relevance", "v3")
    reg.promote("relevance", "v4")
    assert reg.rollback("relevance") == "v3"
    assert reg.rollback("relevance") == "v1"


def test_rollback_with_nothing(reg: AdapterRegistry) -> None:
    with pytest.raises(UnknownTaskError):
        reg.rollback("relevance")
    _create(reg)
    with pytest.raises(RegistryError, match="no earlier version to roll back to for task relevance"):
        reg.rollback("relevance")
    reg.promote("relevance", "v1")
    with pytest.raises(RegistryError, match="no earlier version to roll back to for task relevance"):
        reg.rollback("relevance")
    assert reg.current("relevance") == "v1"
    assert len(reg.history("relevance")) == 1


def test_history_lines(reg: AdapterRegistry) -> None:
    _create(reg)
    _create(reg)
    reg.promote("relevance", "v1", reason="first")
    reg.promote("relevance", "v2", reason="second")
    reg.rollback("relevance", reason="oops")
    hist = reg.history("relevance")
    assert [(h["action"], h["from"], h["to"], h["reason"]) for h in hist] == [
        ("promote", None, "v1", "first"),
        ("promote", "v1", "v2", "second"),
        ("rollback", "v2", "v1", "oops"),
    ]
    for h in hist:
        assert set(h) == {"ts", "action", "from", "to", "reason"}
        assert h["ts"].endswith("+00:00")
    lines = (reg.root / "relevance" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == hist


def test_concurrent_promotes_keep_history_consistent(reg: AdapterRegistry) -> None:
    for _ in range(8):
        _create(reg)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            reg.promote("relevance", f"v{i + 1}", reason=str(i))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    hist = reg.history("relevance")
    assert len(hist) == 8
    # Each move starts from where the previous one ended: no interleaved read-modify-write.
    assert hist[0]["from"] is None
    for prev, nxt in zip(hist, hist[1:]):
        assert nxt["from"] == prev["to"]
    assert reg.current("relevance") == hist[-1]["to"]


# ---------------------------------------------------------------- metrics


def test_update_metrics_merges(reg: AdapterRegistry) -> None:
    _create(reg, metrics={"val_loss": 0.5, "val_ndcg": 0.7})
    reg.update_metrics("relevance", "v1", {"test_ndcg": 0.69, "val_loss": 0.45})
    assert reg.get("relevance", "v1").metrics == {"val_loss": 0.45, "val_ndcg": 0.7, "test_ndcg": 0.69}
    on_disk = json.loads((reg.root / "relevance" / "v1" / "metrics.json").read_text())
    assert on_disk == {"val_loss": 0.45, "val_ndcg": 0.7, "test_ndcg": 0.69}
    # No temp files left behind.
    assert not [p for p in (reg.root / "relevance" / "v1").iterdir() if p.name.startswith(".tmp-")]


def test_update_metrics_errors(reg: AdapterRegistry) -> None:
    _create(reg)
    with pytest.raises(UnknownVersionError, match="relevance@v3"):
        reg.update_metrics("relevance", "v3", {"a": 1})
    with pytest.raises(UnknownTaskError):
        reg.update_metrics("nosuch", "v1", {"a": 1})
    with pytest.raises(TypeError, match="bad"):
        reg.update_metrics("relevance", "v1", {"bad": {"nested": 1}})
    assert reg.get("relevance", "v1").metrics == {"val_loss": 0.5}


def test_metrics_accept_numpy_like_scalars(reg: AdapterRegistry) -> None:
    class FakeScalar:  # quacks like np.float32
        def item(self) -> float:
            return 0.25

    _create(reg, metrics={"val_loss": FakeScalar()})
    assert reg.get("relevance", "v1").metrics == {"val_loss": 0.25}


# ---------------------------------------------------------------- concurrency


def test_concurrent_create_threads(reg: AdapterRegistry) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            def write(d: Path) -> None:
                barrier.wait()  # all writers race for the same version number
                (d / "adapter.bin").write_text(f"writer-{i}")

            info = reg.create_version("relevance", write, config={"writer": i}, metrics={"i": i})
            results[i] = info.version
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results.values(), key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, n + 1)]
    infos = reg.versions("relevance")
    assert [v.version for v in infos] == [f"v{i}" for i in range(1, n + 1)]
    for info in infos:
        writer = info.config["writer"]
        assert results[writer] == info.version
        assert (info.path / "adapter.bin").read_text() == f"writer-{writer}"
        assert json.loads((info.path / "meta.json").read_text())["version"] == info.version
    assert not [p for p in (reg.root / "relevance").iterdir() if p.name.startswith(".tmp-")]


def _proc_create(root: str, i: int, barrier) -> None:
    reg = AdapterRegistry(root)

    def write(d: Path) -> None:
        barrier.wait()
        (d / "adapter.bin").write_text(f"proc-{i}")

    reg.create_version("relevance", write, config={"writer": i}, metrics={})


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_create_processes(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    AdapterRegistry(root)
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_proc_create, args=(root, i, barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    infos = AdapterRegistry(root).versions("relevance")
    assert [v.version for v in infos] == [f"v{i}" for i in range(1, n + 1)]
    assert sorted(v.config["writer"] for v in infos) == list(range(n))
    for info in infos:
        assert (info.path / "adapter.bin").read_text() == f"proc-{info.config['writer']}"


# ---------------------------------------------------------------- listing / recovery


def test_leftover_tmp_dir_not_listed(reg: AdapterRegistry) -> None:
    _create(reg)
    leftover = reg.root / "relevance" / ".tmp-crashed"
    leftover.mkdir()
    (leftover / "adapter.bin").write_text("half")
    assert [v.version for v in reg.versions("relevance")] == ["v1"]
    assert reg.tasks() == ["relevance"]
    assert _create(reg).version == "v2"
    # A fresh temp dir may belong to a live writer: re-opening must not delete it.
    AdapterRegistry(reg.root)
    assert leftover.is_dir()


def test_stale_tmp_dir_cleaned_on_open(reg: AdapterRegistry) -> None:
    _create(reg)
    stale = reg.root / "relevance" / ".tmp-old"
    stale.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    AdapterRegistry(reg.root)
    assert not stale.exists()
    assert [v.version for v in reg.versions("relevance")] == ["v1"]


def test_task_with_only_tmp_dir_is_unknown(reg: AdapterRegistry) -> None:
    (reg.root / "ranking" / ".tmp-x").mkdir(parents=True)
    assert reg.tasks() == []
    with pytest.raises(UnknownTaskError):
        reg.versions("ranking")


def test_corrupt_version_skipped_with_warning(reg: AdapterRegistry, caplog) -> None:
    _create(reg)
    _create(reg)
    (reg.root / "relevance" / "v1" / "meta.json").unlink()
    with caplog.at_level(logging.WARNING, logger="aisle.registry"):
        infos = reg.versions("relevance")
    assert [v.version for v in infos] == ["v2"]
    assert any("relevance@v1" in r.getMessage() and r.name == "aisle.registry" for r in caplog.records)
    with pytest.raises(RegistryError, match="corrupt"):
        reg.get("relevance", "v1")
    with pytest.raises(UnknownVersionError):
        reg.promote("relevance", "v1")
    # The corrupt directory's number is never reused.
    assert _create(reg).version == "v3"


def test_reopen_sees_everything(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    reg = AdapterRegistry(root)
    _create(reg, "relevance")
    _create(reg, "relevance")
    _create(reg, "query_intent")
    reg.promote("relevance", "v1")
    reg.promote("relevance", "v2", reason="r")
    reg.update_metrics("relevance", "v2", {"test_ndcg": 0.9})

    again = AdapterRegistry(str(root))
    assert again.tasks() == ["query_intent", "relevance"]
    assert [v.version for v in again.versions("relevance")] == ["v1", "v2"]
    assert again.current("relevance") == "v2"
    assert again.current("query_intent") is None
    assert again.get("relevance").metrics["test_ndcg"] == 0.9
    assert again.history("relevance") == reg.history("relevance")
    assert again.rollback("relevance") == "v1"
    assert reg.current("relevance") == "v1"
    assert _create(again, "relevance").version == "v3"
