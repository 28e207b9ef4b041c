"""Typed configs: presets load, overrides apply, unknown keys and wrong types are named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, apply_overrides, describe, load_config
from core.job_configs import DistillConfig, EvaluateConfig, FinetuneConfig, PrepareConfig
from core.stream_config import StreamConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name,cls", [("prepare", PrepareConfig), ("sentiment", FinetuneConfig),
                                      ("intent", FinetuneConfig), ("relevance", FinetuneConfig),
                                      ("evaluate", EvaluateConfig), ("distill", DistillConfig)])
def test_every_preset_loads(name, cls):
    cfg = load_config(cls, CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, cls)
    if cls is FinetuneConfig:
        assert cfg.task == name


def test_dotted_overrides_are_typed():
    cfg = load_config(FinetuneConfig, None, ["train.lr=1e-4", "train.epochs=3", "model.lora_targets=[query,key]",
                                             "scaling.use_gpu=true", "resume_from=null"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.model.lora_targets == ["query", "key"]
    assert cfg.scaling.use_gpu is True and cfg.resume_from is None


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(FinetuneConfig, None, ["train.learning_rate=1e-4"])


def test_unknown_top_level_key_in_yaml(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("task: intent\nepochs: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'epochs'"):
        load_config(FinetuneConfig, p)


@pytest.mark.parametrize("override,key", [("train.epochs=two", "train.epochs"), ("task=pricing", "task"),
                                          ("scaling.use_gpu=maybe", "scaling.use_gpu"),
                                          ("model.lora_targets=query", "model.lora_targets")])
def test_wrong_type_is_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(FinetuneConfig, None, [override])


def test_cross_field_validation_is_a_config_error():
    with pytest.raises(ConfigError, match="split fractions"):
        load_config(PrepareConfig, None, ["split.val_fraction=0.6", "split.test_fraction=0.5"])
    for cls, key in ((FinetuneConfig, "train.top_layers"), (StreamConfig, "update.top_layers")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must be >= 1"):
            load_config(cls, None, [f"{key}=0"])


def test_a_training_length_is_checked_against_the_model_length():
    cfg = load_config(FinetuneConfig, None, ["model.max_length=144", "train.max_length=96"])
    assert (cfg.train_length, cfg.model.max_length) == (96, 144)
    assert load_config(FinetuneConfig, None, ["model.max_length=144"]).train_length == 144  # null: the model's
    with pytest.raises(ConfigError, match=r"train\.max_length \(160\) must not exceed model\.max_length \(144\)"):
        load_config(FinetuneConfig, None, ["model.max_length=144", "train.max_length=160"])
    with pytest.raises(ConfigError, match=r"train\.max_length must be within 8\.\.512"):
        load_config(FinetuneConfig, None, ["train.max_length=4"])


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(PrepareConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [sentiment\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PrepareConfig, bad)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["train.lr"])


def test_describe_lists_docs_for_every_leaf():
    rows = describe(FinetuneConfig)
    keys = {k for k, _, _ in rows}
    assert {"train.lr", "model.backbone", "scaling.num_workers", "task"} <= keys
    assert all(doc for _, _, doc in rows)


def test_scaling_settings_become_ray_train_configs_with_custom_resources_and_failures():
    """`scaling.worker_resources` and `scaling.max_failures`, set as overrides, reach Ray Train's
    ScalingConfig (beside the CPUs) and FailureConfig (ops.runtime), as every training job builds them."""
    from ops.runtime import train_failures, train_scaling, train_worker_env

    cfg = load_config(FinetuneConfig, CONFIGS / "intent.yaml", [
        "scaling.num_workers=2", "scaling.cpus_per_worker=0", "scaling.worker_resources={aisle_worker: 1}",
        "scaling.max_failures=1", "scaling.threads_per_worker=3"])
    scaling = train_scaling(cfg.scaling)
    assert (scaling.num_workers, scaling.use_gpu) == (2, False)
    assert scaling.resources_per_worker == {"CPU": 0, "aisle_worker": 1}
    assert train_failures(cfg.scaling).max_failures == 1
    assert train_worker_env(cfg.scaling) == {"env_vars": {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}}
    defaults = load_config(FinetuneConfig, CONFIGS / "intent.yaml", [])
    assert train_scaling(defaults.scaling).resources_per_worker == {"CPU": defaults.scaling.cpus_per_worker}
    assert train_failures(defaults.scaling).max_failures == 0


def test_the_demo_presets_load_and_hand_reuse_to_the_jobs_that_have_it():
    from aisle.demo import DemoConfig, load_job
    from core.gen_config import GenerateConfig

    small, full = (load_config(DemoConfig, CONFIGS / f"{name}.yaml") for name in ("demo", "demo_full"))
    assert small.train["sentiment"] and not full.train and not full.generate_train and not full.evaluate
    assert small.tasks == full.tasks and small.generate == full.generate and small.reuse and full.reuse
    assert load_job(small, FinetuneConfig, "intent", ["task=intent"]).reuse is True
    assert load_job(small, GenerateConfig, "generate", ["task=reply"]).reuse is True
    assert load_job(load_config(DemoConfig, CONFIGS / "demo.yaml", ["reuse=false"]), EvaluateConfig, "evaluate", []).reuse is False
    assert isinstance(load_job(small, PrepareConfig, "prepare", []), PrepareConfig)  # no reuse key: none passed
