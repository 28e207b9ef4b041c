"""Where model code runs: the CPU (default) or a CUDA GPU, chosen by a config's `use_gpu`. No Ray.

Three pieces, shared by training (`core.training`, `train.finetune`) and serving (`core.adapter_bank`):

- `resolve_device(use_gpu, key)`: `cpu`, or `cuda` when `use_gpu` is set; `use_gpu` with no CUDA
  device visible to this process is a `DeviceError` naming the config key (never a silent CPU run).
- `autocast(device, cpu_bf16=False)`: bf16 autocast on a CUDA device that supports bf16 natively
  (Ampere and newer), and on the CPU when asked (`cpu_bf16`: serving, on a CPU whose matrix units
  do bf16, `cpu_bf16_supported`); a no-op otherwise, so CPU numerics are those of a plain fp32 forward.
  bf16 keeps fp32's exponent range, so training needs no GradScaler; parameters (and so saved
  adapters) stay fp32.
- `to_device(tensors, device)`: a batch (a tensor or a dict of them) onto the device; on CUDA via
  pinned (page-locked) host memory with `non_blocking=True`, so the copy is asynchronous. On the
  CPU the tensors are returned as they are (not pinned, not copied).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, TypeVar

import torch

from core.errors import AisleError

T = TypeVar("T", torch.Tensor, dict)


class DeviceError(AisleError):
    """A config asks for a GPU that this process cannot see."""


def resolve_device(use_gpu: bool, key: str = "use_gpu", where: str = "") -> torch.device:
    """torch.device("cuda") for `use_gpu` (the current CUDA device: the one Ray assigned this worker or
    replica), else cpu. `key` is the config key named in the error, e.g. "scaling.use_gpu"; `where`
    (optional) says where the device was looked for and what to check."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"{key}=true but no CUDA device is visible{f' {where}' if where else ''} "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                          f"set {key}=false to run on the CPU")
    return torch.device("cuda", torch.cuda.current_device())


def bf16_supported(device: str | torch.device) -> bool:
    """Native bf16 on this CUDA device (not emulated: emulation would be slower than fp32)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch without the argument
        return bool(torch.cuda.is_bf16_supported())


def cpu_bf16_supported() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16): there a bf16
    forward of MiniLM is ~3x faster than fp32 (measured: docs/results.md); elsewhere bf16 is emulated
    and slower, so serving keeps fp32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def use_cpu_bf16(mode: str, int8: bool = False, use_gpu: bool = False) -> bool:
    """Whether CPU forwards (serving's, training's) run under bf16 autocast, by a config's cpu_bf16
    `mode`: always; never; auto = on this CPU's bf16 matrix units, unless int8 or a GPU runs instead."""
    return mode == "always" or (mode == "auto" and not int8 and not use_gpu and cpu_bf16_supported())


def autocast(device: str | torch.device, cpu_bf16: bool = False) -> ContextManager:
    """bf16 autocast on a bf16-capable CUDA device, and on the CPU when `cpu_bf16`; else a
    nullcontext (fp32)."""
    if bf16_supported(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16 and torch.device(device).type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensors: T, device: str | torch.device) -> T:
    """A tensor, or a dict of tensors (a tokenised batch), moved to `device`. CUDA: from pinned host
    memory, non-blocking. CPU: unchanged objects (no pinning, no copy)."""
    device = torch.device(device)
    if isinstance(tensors, dict):
        return {k: _move(v, device) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    return _move(tensors, device)


def _move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return tensor.to(device)
    if tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def cpu_float32_state(module: torch.nn.Module, only: str | None = None) -> dict[str, torch.Tensor]:
    """`module`'s state dict on the CPU, floating tensors in float32 (keys containing `only`, if given):
    what a checkpoint saved from a GPU must be to load anywhere."""
    out = {}
    for name, value in module.state_dict().items():
        if only is not None and only not in name:
            continue
        value = value.detach().to("cpu")
        out[name] = value.float() if value.is_floating_point() else value
    return out
