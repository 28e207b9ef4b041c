"""One backbone in memory, many LoRA adapters: the serving side of `core.modeling`.

Each adapter is a peft named adapter on the shared encoder plus its own head and metadata, keyed
by the served model id (`relevance@v7`). `predict_proba` runs one adapter; `predict_proba_many`
runs several in one forward pass (peft's mixed-adapter batch: each row through its own LoRA and
head), proven equal to one adapter at a time by tests/unit/test_adapter_bank.py. An adapter saved
with a spelling normaliser (`model.spelling`) reads its inputs through it, in either bank.
Loading an adapter costs ~0.3 MB and tens of milliseconds; the backbone
(~90 MB for MiniLM) is loaded once. Thread-safe: forwards and (un)loads hold one lock, because the
active adapter is state of the shared encoder.

`device="cuda"` (ServeConfig.use_gpu): backbone, LoRA weights and heads live on the GPU and a
forward runs under bf16 autocast (`core.device`); adapters saved on any device load the same way.
On the CPU, `cpu_bf16=True` runs the forward under bf16 autocast too (weights stay fp32): ~3x
faster on a CPU with bf16 matrix units (ServeConfig.cpu_bf16 auto). int8 quantization is CPU-only.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core import modeling
from core.device import autocast, to_device
from core.modeling import (FEED_FORWARD_LINEARS, AdapterMeta, ModelLoadError, load_backbone, load_head_state,
                           load_tokenizer, mean_pool, quantize_int8, read_adapter_meta, tokenize)
from core.spelling import SpellingNormaliser

_LORA = "lora"


@dataclass
class Prefix:
    """The hidden states entering encoder layer `start` for fixed inputs, batch by batch (with each
    batch's tokens), as the lower layers of the adapters whose `lower_key` is `key` make them.
    Stored as float16: half the memory, probabilities within ~1e-3 of a full forward."""
    start: int
    key: str
    batches: list[tuple[dict, torch.Tensor]]

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for _, h in self.batches)


class _Bank:
    """What both serving banks share: settings, tokenizer, adapter metadata by name."""

    def __init__(self, backbone: str, device: str | torch.device, threads: int | None, int8: bool,
                 cpu_bf16: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.backbone_name, self.device, self.int8 = backbone, torch.device(device), int8
        if int8 and self.device.type != "cpu":
            raise ValueError("int8 dynamic quantization is a CPU inference option")
        if int8 and cpu_bf16:
            raise ValueError("int8 and cpu_bf16 are two ways to a cheaper CPU forward: choose one")
        self.cpu_bf16 = cpu_bf16 and self.device.type == "cpu"
        self.tokenizer = load_tokenizer(backbone)
        self._metas: dict[str, AdapterMeta] = {}
        self._normalisers: dict[str, SpellingNormaliser] = {}
        self._lock = threading.Lock()

    def _read_meta(self, name: str, directory: str | Path) -> AdapterMeta:
        meta = read_adapter_meta(directory)
        if meta.backbone != self.backbone_name:
            raise ModelLoadError(f"adapter {name} was trained on backbone '{meta.backbone}', "
                                 f"this bank holds '{self.backbone_name}'")
        return meta

    def _keep(self, name: str, meta: AdapterMeta, normaliser: SpellingNormaliser | None) -> None:
        """Record a loaded adapter's meta and normaliser (callers hold the lock)."""
        self._metas[name] = meta
        if normaliser is not None:
            self._normalisers[name] = normaliser

    def _forget(self, name: str) -> None:
        self._metas.pop(name, None)
        self._normalisers.pop(name, None)

    def _inputs(self, name: str, inputs: Sequence) -> list:
        """`inputs` as adapter `name` reads them: through its spelling normaliser, if it has one."""
        normaliser = self._normalisers.get(name)
        return normaliser.batch(inputs) if normaliser is not None else list(inputs)

    def names(self) -> list[str]:
        return list(self._metas)

    def meta(self, name: str) -> AdapterMeta:
        try:
            return self._metas[name]
        except KeyError:
            raise KeyError(f"adapter {name} is not loaded") from None


class AdapterBank(_Bank):
    """`int8=True` (CPU): the backbone's feed-forward layers run int8 (`core.modeling.quantize_int8`);
    the attention projections LoRA adapts stay fp32, so adapters still load and switch as usual."""

    def __init__(self, backbone: str = "minilm", device: str | torch.device = "cpu", threads: int | None = None,
                 int8: bool = False, cpu_bf16: bool = False):
        super().__init__(backbone, device, threads, int8, cpu_bf16)
        self._base: nn.Module | None = load_backbone(backbone).to(self.device)
        if int8:
            quantize_int8(self._base, only=FEED_FORWARD_LINEARS)
        self._encoder = None  # the PeftModel, made when the first adapter arrives
        self._heads: dict[str, nn.Module] = {}

    # ---- adapters ----------------------------------------------------------------------------
    def load(self, name: str, directory: str | Path) -> AdapterMeta:
        """Add the adapter saved in `directory` (by `core.modeling.save_adapter`) under `name`."""
        from peft import PeftModel

        meta = self._read_meta(name, directory)
        normaliser = modeling.load_normaliser(directory, meta)
        if self.int8 and set(meta.lora.target_modules) & {"dense", *FEED_FORWARD_LINEARS}:
            raise ModelLoadError(f"adapter {name} adapts feed-forward layers, which int8 serving quantizes")
        head = nn.Sequential(nn.Dropout(0.0), nn.Linear(self._hidden_size(), len(meta.labels)))
        head.load_state_dict(load_head_state(directory))
        head = head.to(self.device).eval()
        with self._lock:
            if name in self._metas:
                return self._metas[name]
            if self.int8:  # peft's loader runs load_state_dict over every module, which int8 layers refuse
                self._attach_lora(name, Path(directory) / _LORA)
            elif self._encoder is None:
                self._encoder = PeftModel.from_pretrained(self._base, str(Path(directory) / _LORA),
                                                          adapter_name=name, is_trainable=False).eval()
            else:
                self._encoder.load_adapter(str(Path(directory) / _LORA), adapter_name=name, is_trainable=False)
            self._heads[name] = head
            self._keep(name, meta, normaliser)
        return meta

    def _attach_lora(self, name: str, directory: Path) -> None:
        """Inject an empty LoRA adapter and copy the saved A/B matrices into it, parameter by parameter."""
        from peft import PeftConfig, get_peft_model
        from safetensors.torch import load_file

        config = PeftConfig.from_pretrained(str(directory))
        # It names the hub model (for peft users elsewhere); here it goes onto this bank's backbone, as
        # peft would rename it (with a warning per adapter: "base_model_name_or_path was renamed").
        config.base_model_name_or_path = self._base.__dict__.get("name_or_path") or None
        if self._encoder is None:
            self._encoder = get_peft_model(self._base, config, adapter_name=name).eval()
        else:
            self._encoder.add_adapter(name, config)
        params = dict(self._encoder.named_parameters())
        wanted = {k for k in params if f".{name}." in k and ".lora_" in k}
        for key, value in load_file(str(directory / "adapter_model.safetensors")).items():
            target = re.sub(r"\.(lora_[AB])\.", rf".\1.{name}.", key)
            if target not in params:
                raise ModelLoadError(f"adapter {name}: saved weight {key} has no place in this backbone")
            params[target].data.copy_(value)
            wanted.discard(target)
        if wanted:
            raise ModelLoadError(f"adapter {name}: {len(wanted)} LoRA weights missing from {directory}")
        self._encoder.requires_grad_(False)

    def unload(self, name: str) -> None:
        """Drop an adapter (LRU eviction). The last adapter's LoRA weights stay until another replaces them."""
        with self._lock:
            if name not in self._metas:
                return
            del self._heads[name]
            self._forget(name)
            if self._metas:
                if name in self._encoder.active_adapters:
                    self._encoder.set_adapter(next(iter(self._metas)))
                self._encoder.delete_adapter(name)

    def nbytes(self, name: str) -> int:
        """Bytes of adapter `name`'s own tensors (its LoRA matrices and head), not the shared backbone."""
        self.meta(name)
        lora = (p for n, p in self._encoder.named_parameters() if f".{name}." in n)
        return sum(p.numel() * p.element_size() for p in (*lora, *self._heads[name].parameters()))

    # ---- inference ---------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, name: str, inputs: Sequence, batch_size: int = 64) -> np.ndarray:
        """Class probabilities from adapter `name` for each input (text, or (query, product) pair)."""
        meta, inputs = self.meta(name), self._inputs(name, inputs)
        with self._lock:
            self._encoder.set_adapter(name)
            out = [self._probs(name, batch) for batch in self._batches(inputs, batch_size, meta.max_length)]
        return np.concatenate(out) if out else np.zeros((0, len(meta.labels)), dtype=np.float32)

    @torch.inference_mode()
    def predict_proba_many(self, requests: Sequence[tuple[str, Sequence]], batch_size: int = 64) -> list[np.ndarray]:
        """Probabilities for several (adapter name, inputs) requests at once, one array per request.

        Requests whose adapters tokenize alike (same max_length, same input shape) share forward
        passes even when their adapters differ: peft's mixed-adapter batch runs each base layer on the
        whole batch and each LoRA pair only on its own adapter's rows, then every row goes through
        its own adapter's head. A row's result is what `predict_proba` gives it alone, within float
        noise (tested): the rows of other adapters change only the padding, which attention masks."""
        metas = [self.meta(name) for name, _ in requests]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, ((_, inputs), meta) in enumerate(zip(requests, metas)):
            pairs = bool(len(inputs)) and isinstance(inputs[0], (tuple, list))
            groups.setdefault((meta.max_length, pairs, meta.layers), []).append(i)
        out: list[np.ndarray | None] = [None] * len(requests)
        for (max_length, _, _), members in groups.items():
            names = [requests[i][0] for i in members for _ in requests[i][1]]
            inputs = [x for i in members for x in self._inputs(*requests[i])]
            rows: list[np.ndarray] = []
            with self._lock:
                for start, batch in zip(range(0, len(inputs), batch_size),
                                        self._batches(inputs, batch_size, max_length)):
                    rows.extend(self._mixed_probs(names[start:start + batch_size], batch))
            start = 0
            for i in members:
                n = len(requests[i][1])
                out[i] = (np.stack(rows[start:start + n]) if n
                          else np.zeros((0, len(metas[i].labels)), dtype=np.float32))
                start += n
        return out

    def _mixed_probs(self, names: list[str], batch: dict) -> list[np.ndarray]:
        """One forward over a batch whose row i belongs to adapter names[i]; a probability row each."""
        unique = list(dict.fromkeys(names))
        if len(unique) == 1:  # one adapter: the plain forward, without peft's per-call hooks
            self._encoder.set_adapter(unique[0])
            return list(self._probs(unique[0], batch))
        rows: list[np.ndarray | None] = [None] * len(names)
        with autocast(self.device, self.cpu_bf16), self._depth(unique[0]):  # one depth per batch (grouped above)
            hidden = self._encoder(**batch, adapter_names=names).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"])
            for name in unique:
                index = [i for i, n in enumerate(names) if n == name]
                logits = self._heads[name](pooled[index])
                for i, p in zip(index, torch.softmax(logits.float(), -1).cpu().numpy()):
                    rows[i] = p
        return rows

    def _batches(self, inputs: Sequence, batch_size: int, max_length: int):
        """`inputs` tokenized in batches of `batch_size`, on the bank's device."""
        for start in range(0, len(inputs), batch_size):
            yield to_device(tokenize(self.tokenizer, inputs[start:start + batch_size], max_length), self.device)

    # ---- scoring fixed inputs from a cached prefix (the stream gate) ------------------------
    def lower_key(self, name: str, start: int) -> str:
        """A fingerprint of adapter `name`'s LoRA weights in encoder layers below `start`: adapters
        with equal keys compute the same hidden states up to layer `start` (the backbone is shared)."""
        self.meta(name)
        digest = hashlib.sha1(str(start).encode())
        for key, param in sorted(self._encoder.named_parameters()):
            layer = modeling.layer_index(key)
            if f".{name}." in key and ".lora_" in key and layer is not None and layer < start:
                digest.update(key.replace(f".{name}.", ".").encode())
                digest.update(param.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()

    @torch.inference_mode()
    def encode_prefix(self, name: str, inputs: Sequence, start: int, batch_size: int = 64) -> tuple[Prefix, np.ndarray]:
        """A full forward of adapter `name` over `inputs` that also keeps the hidden states entering
        layer `start`: returns them (a Prefix) and the probabilities."""
        meta, layers, inputs = self.meta(name), self._layers(), self._inputs(name, inputs)
        if meta.layers:
            raise ValueError(f"adapter {name} is a student ({meta.layers} layers): no prefix scoring")
        if not 0 < start < len(layers):
            raise ValueError(f"prefix layer must be within 1..{len(layers) - 1} (got {start})")
        captured, batches, out = [], [], []
        hook = layers[start].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            with self._lock:
                self._encoder.set_adapter(name)
                for batch in self._batches(inputs, batch_size, meta.max_length):
                    out.append(self._probs(name, batch))
                    batches.append((batch, captured.pop().to(torch.float16)))
        finally:
            hook.remove()
        probs = np.concatenate(out) if out else np.zeros((0, len(meta.labels)), dtype=np.float32)
        return Prefix(start, self.lower_key(name, start), batches), probs

    @torch.inference_mode()
    def predict_proba_from(self, name: str, prefix: Prefix) -> np.ndarray:
        """Adapter `name`'s probabilities for the prefix's inputs, running only layers `prefix.start`
        and up: a third of the work for the top 2 of MiniLM's 6 layers. The adapter's lower layers
        must be the ones the prefix was made with (equal `lower_key`), else ValueError."""
        meta = self.meta(name)
        if self.lower_key(name, prefix.start) != prefix.key:
            raise ValueError(f"adapter {name}'s layers below {prefix.start} differ from the cached prefix's")
        out = []
        with self._lock, self._from_layer(prefix.start) as feed:
            self._encoder.set_adapter(name)
            for batch, hidden in prefix.batches:
                feed(hidden.to(torch.float32))
                out.append(self._probs(name, batch))
        return np.concatenate(out) if out else np.zeros((0, len(meta.labels)), dtype=np.float32)

    def _probs(self, name: str, batch: dict) -> np.ndarray:
        with autocast(self.device, self.cpu_bf16), self._depth(name):
            hidden = self._encoder(**batch).last_hidden_state
            logits = self._heads[name](mean_pool(hidden, batch["attention_mask"]))
        return torch.softmax(logits.float(), -1).cpu().numpy()

    def _depth(self, name: str):
        """While open, the shared backbone runs adapter `name`'s depth: a student's bottom layers
        alone (callers hold the lock), every layer for a full adapter."""
        layers = self.meta(name).layers
        return modeling.only_layers(self._base, slice(0, layers)) if layers else nullcontext()

    def _layers(self) -> nn.ModuleList:
        return modeling.encoder_layers(self._base)

    def _from_layer(self, start: int):
        """While open, a forward skips the embeddings' output and the layers below `start`: it runs
        from the hidden states last given to `feed` (core.modeling.from_layer)."""
        return modeling.from_layer(self._base, start)

    def scores_from_prefix(self) -> bool:
        """Whether `encode_prefix` / `predict_proba_from` work on this backbone (BERT-style layout)."""
        try:
            self._layers()
        except ValueError:
            return False
        return True

    def num_layers(self) -> int:
        return int(self._base.config.num_hidden_layers)

    def _hidden_size(self) -> int:
        return int(self._base.config.hidden_size)


class MergedBank(_Bank):
    """Merged-LoRA serving: each adapter folded into its own copy of the backbone (W + BA * scale),
    so a forward pass pays nothing for LoRA, at the price of a full backbone (~90 MB for MiniLM) per
    adapter. Meant for one hot adapter per replica. `int8=True` then quantizes every encoder Linear.
    Same interface as AdapterBank."""

    def __init__(self, backbone: str = "minilm", device: str | torch.device = "cpu", threads: int | None = None,
                 int8: bool = False, cpu_bf16: bool = False):
        super().__init__(backbone, device, threads, int8, cpu_bf16)
        self._models: dict[str, nn.Module] = {}

    def load(self, name: str, directory: str | Path) -> AdapterMeta:
        meta = self._read_meta(name, directory)
        model, _ = modeling.load_adapter(directory)  # its normaliser rides on the model: predict_proba applies it
        model = modeling.merge(model)
        if self.int8:
            quantize_int8(model.encoder)
        with self._lock:
            if name not in self._metas:
                self._models[name] = model.to(self.device)
                self._metas[name] = meta
        return meta

    def unload(self, name: str) -> None:
        with self._lock:
            self._models.pop(name, None)
            self._forget(name)

    def nbytes(self, name: str) -> int:
        """Bytes of adapter `name`'s merged model: a whole backbone copy (int8 layers counted as packed)."""
        self.meta(name)
        state = self._models[name].state_dict()
        return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))

    def predict_proba_many(self, requests: Sequence[tuple[str, Sequence]], batch_size: int = 64) -> list[np.ndarray]:
        """One forward per request: each merged adapter is its own model, nothing to share."""
        return [self.predict_proba(name, inputs, batch_size) for name, inputs in requests]

    def predict_proba(self, name: str, inputs: Sequence, batch_size: int = 64) -> np.ndarray:
        meta = self.meta(name)
        return modeling.predict_proba(self._models[name], self.tokenizer, list(inputs), meta.max_length,
                                      batch_size, self.device, cpu_bf16=self.cpu_bf16)


def make_bank(backbone: str, mode: str = "multi", int8: bool = False, threads: int | None = None,
              device: str | torch.device = "cpu", cpu_bf16: bool = False) -> AdapterBank | MergedBank:
    """The serving bank for a mode: "multi" (many LoRA adapters on one backbone) or "merged"."""
    if mode not in ("multi", "merged"):
        raise ValueError(f"unknown serving mode '{mode}' (multi or merged)")
    cls = AdapterBank if mode == "multi" else MergedBank
    return cls(backbone, device=device, threads=threads, int8=int8, cpu_bf16=cpu_bf16)
