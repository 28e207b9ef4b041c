"""One backbone in memory, many LoRA adapters: the serving side of `core.modeling`.

Each adapter is a peft named adapter on the shared encoder plus its own head and metadata, keyed
by the served model id (`relevance@v7`). A forward pass activates exactly one adapter, so a batch
never mixes adapters. Loading an adapter costs ~0.3 MB and tens of milliseconds; the backbone
(~90 MB for MiniLM) is loaded once. Thread-safe: forwards and (un)loads hold one lock, because the
active adapter is state of the shared encoder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.modeling import (AdapterMeta, ModelLoadError, load_backbone, load_tokenizer, mean_pool,
                           read_adapter_meta, tokenize)

_LORA = "lora"
_HEAD = "head.pt"


class AdapterBank:
    def __init__(self, backbone: str = "minilm", device: str | torch.device = "cpu", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.backbone_name = backbone
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(backbone)
        self._base: nn.Module | None = load_backbone(backbone).to(self.device)
        self._encoder = None  # the PeftModel, made when the first adapter arrives
        self._heads: dict[str, nn.Module] = {}
        self._metas: dict[str, AdapterMeta] = {}
        self._lock = threading.Lock()

    # ---- adapters ----------------------------------------------------------------------------
    def load(self, name: str, directory: str | Path) -> AdapterMeta:
        """Add the adapter saved in `directory` (by `core.modeling.save_adapter`) under `name`."""
        from peft import PeftModel

        meta = read_adapter_meta(directory)
        if meta.backbone != self.backbone_name:
            raise ModelLoadError(f"adapter {name} was trained on backbone '{meta.backbone}', "
                                 f"this bank holds '{self.backbone_name}'")
        head = nn.Sequential(nn.Dropout(0.0), nn.Linear(self._hidden_size(), len(meta.labels)))
        head.load_state_dict(torch.load(Path(directory) / _HEAD, map_location="cpu", weights_only=True))
        head = head.to(self.device).eval()
        with self._lock:
            if name in self._metas:
                return self._metas[name]
            if self._encoder is None:
                self._encoder = PeftModel.from_pretrained(self._base, str(Path(directory) / _LORA),
                                                          adapter_name=name, is_trainable=False).eval()
            else:
                self._encoder.load_adapter(str(Path(directory) / _LORA), adapter_name=name, is_trainable=False)
            self._heads[name] = head
            self._metas[name] = meta
        return meta

    def unload(self, name: str) -> None:
        """Drop an adapter (LRU eviction). The last adapter's LoRA weights stay until another replaces them."""
        with self._lock:
            if name not in self._metas:
                return
            del self._heads[name], self._metas[name]
            if self._metas:
                if name in self._encoder.active_adapters:
                    self._encoder.set_adapter(next(iter(self._metas)))
                self._encoder.delete_adapter(name)

    def names(self) -> list[str]:
        return list(self._metas)

    def meta(self, name: str) -> AdapterMeta:
        try:
            return self._metas[name]
        except KeyError:
            raise KeyError(f"adapter {name} is not loaded") from None

    # ---- inference ---------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, name: str, inputs: Sequence, batch_size: int = 64) -> np.ndarray:
        """Class probabilities from adapter `name` for each input (text, or (query, product) pair)."""
        meta = self.meta(name)
        out = []
        with self._lock:
            self._encoder.set_adapter(name)
            head = self._heads[name]
            for start in range(0, len(inputs), batch_size):
                batch = tokenize(self.tokenizer, inputs[start:start + batch_size], meta.max_length)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self._encoder(**batch).last_hidden_state
                out.append(torch.softmax(head(mean_pool(hidden, batch["attention_mask"])).float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(meta.labels)), dtype=np.float32)

    def _hidden_size(self) -> int:
        return int(self._base.config.hidden_size)
