"""The GPU path (`core.device`): on the CPU nothing changes and use_gpu without CUDA is one clear error;
on a CUDA machine a tiny random BERT trains under bf16 autocast and the serving banks predict on the
GPU within bf16 tolerance of the CPU. The CUDA tests skip without a GPU. No Ray started."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from core import device as devices
from core import modeling, training
from core.adapter_bank import AdapterBank, make_bank
from core.config import ConfigError, load_config
from core.modeling import AdapterMeta, LoraSpec
from core.serve_config import ServeConfig
from core.stream_config import StreamConfig
from core.tasks import get_task

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TEXTS = ["where is my order", "cancel my subscription please", "i want a refund", "change my delivery address",
         "the dress runs small", "love these shoes", "track package", "reset my password"]
BF16_ATOL = 0.03
"""Probabilities from a bf16 forward vs fp32: bf16 keeps ~3 significant digits."""


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---- CPU: the default path is unchanged ------------------------------------------------------------

def test_use_gpu_false_is_the_cpu_with_no_autocast_and_no_pinning():
    device = devices.resolve_device(False, "scaling.use_gpu")
    assert device == torch.device("cpu")
    ctx = devices.autocast(device)
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    moved = devices.to_device(batch, device)
    assert all(moved[k] is batch[k] and not moved[k].is_pinned() for k in batch)  # no copy, no pinning
    target = torch.zeros(2, dtype=torch.long)
    assert devices.to_device(target, "cpu") is target


def test_autocast_is_a_no_op_for_cuda_device_names_without_cuda(no_cuda):
    assert not devices.bf16_supported("cuda")
    assert isinstance(devices.autocast("cuda:0"), contextlib.nullcontext)


@pytest.mark.parametrize("key", ["scaling.use_gpu", "update.use_gpu", "use_gpu"])
def test_use_gpu_without_cuda_is_a_clear_error_naming_the_key(no_cuda, key):
    with pytest.raises(devices.DeviceError, match=rf"^{key}=true but no CUDA device is visible in here .*{key}=false"):
        devices.resolve_device(True, key, where="in here")


def test_serve_config_rejects_use_gpu_with_int8():
    with pytest.raises(ValueError, match="int8 .* CPU-only"):
        ServeConfig(use_gpu=True, int8=True)
    with pytest.raises(ConfigError, match="CPU-only"):
        load_config(StreamConfig, None, ["serve.use_gpu=true", "serve.int8=true"])
    assert ServeConfig(use_gpu=True).use_gpu and ServeConfig(int8=True).int8


def test_cpu_bf16_is_auto_by_default_and_never_with_int8_forced():
    assert ServeConfig().cpu_bf16 == "auto" and ServeConfig(int8=True).int8   # auto yields to int8 in the replica
    with pytest.raises(ConfigError, match="choose one"):
        load_config(StreamConfig, None, ["serve.int8=true", "serve.cpu_bf16=always"])
    with pytest.raises(ConfigError):
        load_config(StreamConfig, None, ["serve.cpu_bf16=yes"])
    assert isinstance(devices.cpu_bf16_supported(), bool)
    with devices.autocast("cpu", cpu_bf16=True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with devices.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_int8_bank_refuses_a_gpu_device():
    with pytest.raises(ValueError, match="CPU inference option"):
        make_bank(modeling.TINY_BACKBONE, int8=True, device="cuda")


def test_gpu_serving_asks_serve_for_one_gpu_per_replica():
    from serve.app import model_deployment_options

    assert model_deployment_options(ServeConfig()) == {}
    assert model_deployment_options(ServeConfig(), {"num_replicas": 2}) == {"num_replicas": 2}
    options = model_deployment_options(ServeConfig(use_gpu=True), {"num_replicas": 2})
    assert options == {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 1}}
    explicit = model_deployment_options(ServeConfig(use_gpu=True), {"ray_actor_options": {"num_gpus": 0.5}})
    assert explicit["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5}


def test_gpu_replica_without_a_gpu_says_what_to_check(no_cuda, tmp_path):
    from serve.model_server import TaskModelServer

    with pytest.raises(devices.DeviceError, match="use_gpu=true .* in this TaskModel replica .*num_gpus"):
        TaskModelServer.func_or_class(registry=str(tmp_path), backbone=modeling.TINY_BACKBONE, use_gpu=True)


def test_jobs_on_their_own_ray_without_a_gpu_fail_at_once(monkeypatch):
    """Ray Train and Serve would wait forever for a GPU that this machine's Ray does not have."""
    import ray

    from ops.runtime import check_gpu_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_actor_id=lambda: None))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    check_gpu_resources(False, "scaling.use_gpu")
    with pytest.raises(devices.DeviceError, match="^update.use_gpu=true but no CUDA device is visible to this machine's Ray"):
        check_gpu_resources(True, "update.use_gpu")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    check_gpu_resources(True, "scaling.use_gpu")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster may autoscale GPU workers: not checked
    check_gpu_resources(True, "scaling.use_gpu")


def test_saved_adapters_are_cpu_float32(tmp_path):
    model = _tiny_model()
    modeling.save_adapter(model, _meta(), tmp_path / "a")
    from safetensors.torch import load_file

    lora = load_file(str(tmp_path / "a" / "lora" / "adapter_model.safetensors"))
    head = load_file(str(tmp_path / "a" / "head.safetensors"))
    assert lora and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (*lora.values(), *head.values()))


# ---- CUDA: really train and serve on the GPU --------------------------------------------------------

def _meta():
    return AdapterMeta(task="intent", labels=["a", "b", "c"], backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("query", "value")))


def _tiny_model(seed=0):
    return modeling.build_task_model(_meta(), seed=seed)


def _batches(tokenizer, n=32, batch=8):
    frame = pd.DataFrame({"text": [TEXTS[i % len(TEXTS)] for i in range(n)],
                          "label": [("a", "b", "c")[i % 3] for i in range(n)]})
    return [training.make_batch(get_task("intent"), tokenizer, ["a", "b", "c"], 32, frame.iloc[i:i + batch])
            for i in range(0, n, batch)]


@needs_cuda
def test_cuda_device_autocast_and_pinned_copies():
    device = devices.resolve_device(True, "scaling.use_gpu")
    assert device.type == "cuda"
    with devices.autocast(device):
        if devices.bf16_supported(device):
            assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
            out = torch.nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
            assert out.dtype == torch.bfloat16
    moved = devices.to_device({"x": torch.arange(6).view(2, 3)}, device)
    assert moved["x"].device.type == "cuda" and moved["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


@needs_cuda
def test_train_on_cuda_under_bf16_then_load_and_predict_on_cpu(tmp_path):
    device = devices.resolve_device(True, "scaling.use_gpu")
    tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    model = _tiny_model().to(device)
    opt = training.make_optimizer(model, 5e-2, 0.0)
    sched = training.make_scheduler(opt, 4, 0.0)
    stats = training.run_epoch(model, _batches(tokenizer), opt, sched, torch.nn.CrossEntropyLoss(), device=device)
    assert stats.steps == 4 and np.isfinite(stats.loss)
    # bf16 autocast changes the compute, not the weights: parameters and their updates stay fp32 on the GPU.
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in lora_b)
    assert sum(float(p.detach().abs().sum()) for p in lora_b) > 0  # the adapter actually trained
    on_gpu = modeling.predict_proba(model, tokenizer, TEXTS, 32, device=device)

    modeling.save_adapter(model, _meta(), tmp_path / "adapter")
    training.save_training_state(tmp_path, opt, sched, epoch=1, global_step=4)
    reloaded, _ = modeling.load_adapter(tmp_path / "adapter")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in reloaded.parameters())
    on_cpu = modeling.predict_proba(reloaded, tokenizer, TEXTS, 32)  # fp32 on the CPU
    np.testing.assert_allclose(on_gpu, on_cpu, atol=BF16_ATOL)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.75

    # A GPU run's training state resumes on the CPU (optimizer state is mapped to the parameters' device).
    resumed, _ = modeling.load_adapter(tmp_path / "adapter", trainable=True)
    opt2 = training.make_optimizer(resumed, 5e-2, 0.0)
    sched2 = training.make_scheduler(opt2, 4, 0.0)
    assert training.load_training_state(tmp_path, opt2, sched2) == (1, 4)
    training.run_epoch(resumed, _batches(tokenizer)[:1], opt2, sched2, torch.nn.CrossEntropyLoss())


@needs_cuda
@pytest.mark.parametrize("mode", ["multi", "merged"])
def test_bank_on_cuda_matches_the_cpu_bank(tmp_path, mode):
    paths = {}
    for i in (1, 2):
        model = _tiny_model(seed=i)
        torch.manual_seed(i)
        for p in model.parameters():  # distinct adapters, as training would make them
            if p.requires_grad:
                p.data.normal_(0, 0.2)
        paths[f"intent@v{i}"] = modeling.save_adapter(model, _meta(), tmp_path / f"v{i}")
    gpu = make_bank(modeling.TINY_BACKBONE, mode=mode, device=devices.resolve_device(True, "use_gpu"))
    cpu = make_bank(modeling.TINY_BACKBONE, mode=mode)
    for name, path in paths.items():
        gpu.load(name, path)
        cpu.load(name, path)
    if isinstance(gpu, AdapterBank):
        assert all(p.device.type == "cuda" for p in gpu._encoder.parameters())
    for name in paths:  # interleaved: the active adapter switches on the GPU too
        on_gpu, on_cpu = gpu.predict_proba(name, TEXTS), cpu.predict_proba(name, TEXTS)
        assert on_gpu.dtype == np.float32 and on_gpu.shape == (len(TEXTS), 3)
        np.testing.assert_allclose(on_gpu, on_cpu, atol=BF16_ATOL)
        np.testing.assert_allclose(on_gpu.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(gpu.predict_proba("intent@v1", TEXTS), gpu.predict_proba("intent@v2", TEXTS))


def test_hub_kernels_are_off_so_a_gpu_model_never_downloads_layers():
    """transformers 5 swaps layers for kernels downloaded from the Hub when a model is on CUDA; offline
    that failed the first evaluation on an H200. Importing `core.modeling` turns them off (unless the
    environment says otherwise), in every process that loads a model: jobs' workers and replicas too."""
    from transformers.integrations import hub_kernels

    assert modeling.os.environ["USE_HUB_KERNELS"] == "NO"
    assert not hub_kernels._kernels_enabled()


def test_model_replicas_only_ever_lower_their_priority():
    """ops.runtime.lower_priority (the model replicas', the learning actors'), in a child process (niceness cannot be undone): raised to
    the asked niceness, never lowered back (that needs privileges); ServeConfig keeps it in 0..19."""
    import subprocess
    import sys

    # a thread running before the call is lowered too (Linux niceness is per thread), and one after inherits it
    code = ("import os, threading; from ops.runtime import lower_priority as lp; "
            "go, seen = threading.Event(), []; "
            "t = threading.Thread(target=lambda: (go.wait(), seen.append(os.getpriority(os.PRIO_PROCESS, 0)))); "
            "t.start(); b = os.nice(0); print(lp(b) == b, lp(19), lp(b), end=' '); go.set(); t.join(); "
            "u = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0))); u.start(); u.join(); "
            "print(*seen)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["True", "19", "19", "19", "19"]
    with pytest.raises(ValueError, match="model_niceness"):
        ServeConfig(model_niceness=20)
