"""One workspace root: every job config's artifact paths derive from it, unless a path is given."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from aisle.demo import DemoConfig
from core import workspace
from core.config import load_config, to_dict
from core.gen_config import GenerateConfig, GenEvalConfig
from core.job_configs import DistillConfig, EmbedCatalogConfig, EvaluateConfig, FinetuneConfig, PrepareConfig, RecItemVectorsConfig, RecommendEvalConfig, RecommendTrainConfig
from core.serve_config import ServeConfig
from core.stream_config import StreamConfig
from ops.config import OpsConfig

ROOT = Path(__file__).resolve().parents[2]
JOB_CONFIGS = [PrepareConfig, FinetuneConfig, DistillConfig, EvaluateConfig, RecommendTrainConfig, RecommendEvalConfig,
               EmbedCatalogConfig, RecItemVectorsConfig, ServeConfig, StreamConfig, GenerateConfig, GenEvalConfig,
               OpsConfig, DemoConfig]


def _strings(node, prefix=""):
    """(dotted key, value) of every string in a config tree."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, str):
            yield prefix + f.name, value
        elif dataclasses.is_dataclass(value):
            yield from _strings(value, f"{prefix}{f.name}.")


def _defaults(cls, prefix=""):
    """{dotted key: part} of every field whose default is a place in the workspace."""
    out = {}
    for f in dataclasses.fields(cls):
        if isinstance(f.default, str) and f.default.startswith(workspace.MARK):
            out[prefix + f.name] = f.default[len(workspace.MARK) + 1:]
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.update(_defaults(f.default_factory, f"{prefix}{f.name}."))
    return out


@pytest.mark.parametrize("cls", JOB_CONFIGS, ids=lambda c: c.__name__)
def test_every_artifact_path_derives_from_the_workspace(cls, tmp_path, monkeypatch):
    monkeypatch.delenv(workspace.ENV, raising=False)
    expected = _defaults(cls)
    assert expected, f"{cls.__name__} has no artifact path"
    for root, cfg in (("artifacts", cls()), (str(tmp_path), cls(workspace=str(tmp_path)))):
        values = dict(_strings(cfg))
        assert cfg.workspace == root
        assert {k: values[k] for k in expected} == {k: str(Path(root) / rel) for k, rel in expected.items()}
        assert not [k for k, v in values.items() if workspace.MARK in v]


def test_the_environment_moves_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv(workspace.ENV, str(tmp_path))
    cfg = FinetuneConfig()
    assert (cfg.workspace, cfg.registry, cfg.data_dir) == (str(tmp_path), str(tmp_path / "registry"),
                                                           str(tmp_path / "prepared"))


def test_a_given_path_wins_and_may_name_the_workspace(tmp_path):
    cfg = load_config(FinetuneConfig, ROOT / "configs/relevance.yaml",
                      [f"workspace={tmp_path}", "registry=/elsewhere/registry", "storage_path={workspace}/my-runs"])
    assert cfg.registry == "/elsewhere/registry"
    assert cfg.storage_path == str(tmp_path / "my-runs")
    assert cfg.data_dir == str(tmp_path / "prepared")
    again = load_config(FinetuneConfig, None, [f"{k}={v}" for k, v in to_dict(cfg).items() if isinstance(v, str)])
    assert (again.registry, again.data_dir) == (cfg.registry, cfg.data_dir)  # what a version records reloads as is


def test_a_nested_job_config_follows_its_parents_workspace_unless_given_its_own(tmp_path):
    stream = load_config(StreamConfig, ROOT / "configs/stream.yaml", [f"workspace={tmp_path}"])
    assert stream.serve.workspace == str(tmp_path)
    assert (stream.serve.registry, stream.serve.lm_cache_dir) == (str(tmp_path / "registry"), str(tmp_path / "lm"))
    assert stream.log_dir == str(tmp_path / "stream" / "log")
    own = load_config(StreamConfig, None, [f"workspace={tmp_path}", "serve.workspace=/srv/shop"])
    assert (own.serve.registry, own.registry) == ("/srv/shop/registry", str(tmp_path / "registry"))
    prepare = PrepareConfig(workspace=str(tmp_path))
    assert prepare.sources.catalog_dir == str(tmp_path / "catalog")  # a plain section: the parent's root


def test_an_object_store_workspace_joins_with_slashes():
    cfg = FinetuneConfig(workspace="s3://shop-bucket/aisle/")
    assert cfg.registry == "s3://shop-bucket/aisle/registry"


def test_presets_and_code_write_no_default_path_out():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        code = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
        assert not [line for line in code if "artifacts/" in line], path.name
    literal = re.compile(r"""["']artifacts/""")
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", "build") or rel == Path("core/workspace.py"):
            continue
        assert not literal.search(path.read_text()), f"{rel} writes an artifact path out: use core.workspace"
