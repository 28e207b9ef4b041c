"""The recommend model: a two-tower next-item model on the backbone with its own LoRA adapter.

Item tower: the item's text through the backbone + LoRA (mean pooled) and a projection, plus a
learned id embedding for items seen in training (zero for an item never seen: a product added
today is still recommendable through its text). User tower: the shopper's recent items (newest
last) as item vectors plus a recency embedding, pooled with learned recency weights and a
residual MLP, into the same space. Score = user . item: exact top-k over the whole catalog.

Training (train/recommend.py) is next-item prediction with in-batch sampled softmax and logQ
correction (the in-batch negatives are drawn by popularity, so their log-frequency is subtracted).
The text tower runs with gradient only for the batch's target items, over cached frozen lower
layers (`core.modeling.lower_states`); the history side reads a text-vector table refreshed from
the current adapter every few hundred steps.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import modeling as Mo

_META = "recommend_meta.json"
_WEIGHTS = "towers.safetensors"
_ITEMS = "items.json"


@dataclass(frozen=True)
class RecMeta:
    backbone: str
    max_length: int = 24
    dim: int = 256
    history: int = 20
    top_layers: int = 2
    lora: Mo.LoraSpec = field(default_factory=lambda: Mo.LoraSpec(r=8, alpha=16, dropout=0.0,
                                                                 target_modules=("query", "value")))
    task: str = "recommend"

    @classmethod
    def from_json(cls, data: dict) -> "RecMeta":
        data = dict(data)
        lora = dict(data.pop("lora", {}))
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        return cls(lora=Mo.LoraSpec(**lora), **data)


class RecModel(nn.Module):
    """Two item vectors per item, as word2vec keeps two: one for an item in a shopper's history
    ("input") and one for an item as a candidate next purchase ("output"), each a projection of
    the same LoRA text vector plus its own id embedding. Next-purchase relations are not symmetric
    (a lantern's buyer next buys its candles, not the reverse), and with one shared vector every
    item would also score itself highest."""

    def __init__(self, encoder: nn.Module, meta: RecMeta, item_ids: Sequence[str]):
        super().__init__()
        self.meta = meta
        self.encoder = encoder
        self.item_ids = list(item_ids)
        n, d, hidden = len(self.item_ids), meta.dim, encoder.config.hidden_size
        self.text_in, self.text_out = nn.Linear(hidden, d), nn.Linear(hidden, d)
        # Row n: an item unseen in training, which has its text alone.
        self.item_in = nn.Embedding(n + 1, d, padding_idx=n)
        self.item_out = nn.Embedding(n + 1, d, padding_idx=n)
        nn.init.zeros_(self.item_in.weight)
        nn.init.zeros_(self.item_out.weight)
        self.recency = nn.Parameter(torch.zeros(meta.history, d))
        self.recency_logit = nn.Parameter(torch.linspace(-2.0, 0.0, meta.history))
        self.user_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        nn.init.zeros_(self.user_mlp[2].weight)
        nn.init.zeros_(self.user_mlp[2].bias)
        self.log_scale = nn.Parameter(torch.tensor(2.5))

    # -- item tower ----------------------------------------------------------------------------
    def text_vectors(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**features).last_hidden_state
        return Mo.mean_pool(hidden, features["attention_mask"])

    def history_vectors(self, text_vecs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Items as part of a shopper's history (id index len(item_ids): an item unseen in training)."""
        return self.text_in(text_vecs) + self.item_in(ids)

    def candidate_vectors(self, text_vecs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Items as candidates to recommend."""
        return self.text_out(text_vecs) + self.item_out(ids)

    # -- user tower ----------------------------------------------------------------------------
    def user_vectors(self, hist_vecs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, history, dim) history vectors of the recent items, right-aligned (newest last),
        and their mask -> (batch, dim) user vectors."""
        x = hist_vecs + self.recency
        logits = self.recency_logit.expand(mask.shape).masked_fill(~mask, -1e4)
        w = torch.softmax(logits, dim=-1) * mask.any(dim=-1, keepdim=True)
        pooled = (w.unsqueeze(-1) * x).sum(dim=1)
        return pooled + self.user_mlp(pooled)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)


def right_aligned(histories: Sequence[Sequence[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories (item indices, oldest first) -> (batch, length) index matrix, newest in the last
    column, padded on the left with `pad`; and its mask."""
    out = np.full((len(histories), length), pad, dtype=np.int64)
    for row, h in enumerate(histories):
        h = list(h)[-length:]
        if h:
            out[row, length - len(h):] = h
    idx = torch.from_numpy(out)
    return idx, idx != pad


def build(meta: RecMeta, item_ids: Sequence[str], backbone: nn.Module | None = None, seed: int = 0) -> RecModel:
    from peft import LoraConfig, get_peft_model

    backbone = backbone if backbone is not None else Mo.load_backbone(meta.backbone)
    torch.manual_seed(seed)
    lora = LoraConfig(r=meta.lora.r, lora_alpha=meta.lora.alpha, lora_dropout=meta.lora.dropout,
                      target_modules=list(meta.lora.target_modules), bias="none")
    encoder = get_peft_model(backbone, lora)
    layers = encoder.config.num_hidden_layers
    for name, param in encoder.named_parameters():
        layer = Mo.layer_index(name)
        if "lora_" in name and layer is not None and layer < layers - meta.top_layers:
            param.requires_grad_(False)
    return RecModel(encoder, meta, item_ids)


class ItemTexts:
    """Every catalog item's tokenised text, with the frozen lower layers' states cached once."""

    def __init__(self, model: RecModel, tokenizer, texts: Sequence[str], batch_size: int = 256):
        self.model = model
        self.start = model.encoder.config.num_hidden_layers - model.meta.top_layers
        enc = Mo.tokenize(tokenizer, list(texts), model.meta.max_length)
        self.features = enc
        base = Mo.base_model(model)
        states = []
        with torch.no_grad():
            for lo in range(0, len(texts), batch_size):
                part = {k: v[lo:lo + batch_size] for k, v in enc.items()}
                states.append(Mo.lower_states(base, part, self.start) if self.start > 0 else None)
        self.states = torch.cat(states) if self.start > 0 else None

    def with_model(self, model: RecModel) -> "ItemTexts":
        """The same texts and cached states for another version of the model: the layers below
        `top_layers` never train (`build` freezes their LoRA at zero), so their states are the backbone's."""
        if model.meta.top_layers != self.model.meta.top_layers or model.meta.max_length != self.model.meta.max_length:
            raise ValueError("with_model: the versions differ in top_layers or max_length")
        other = copy.copy(self)
        other.model = model
        return other

    def encode(self, idx: torch.Tensor) -> torch.Tensor:
        """Pooled text vectors of items `idx` through the trainable top layers (gradient kept)."""
        feats = {k: v[idx] for k, v in self.features.items()}
        width = int(feats["attention_mask"].sum(dim=1).max())
        feats = {k: v[:, :width] for k, v in feats.items()}
        if self.states is None:
            return self.model.text_vectors(feats)
        base = Mo.base_model(self.model)
        with Mo.from_layer(base, self.start) as feed:
            feed(self.states[idx][:, :width].float())
            return self.model.text_vectors(feats)

    @torch.no_grad()
    def table(self, batch_size: int = 512) -> torch.Tensor:
        out = [self.encode(torch.arange(lo, min(lo + batch_size, len(self.states if self.states is not None
                                                                       else self.features["input_ids"]))))
               for lo in range(0, len(self.features["input_ids"]), batch_size)]
        return torch.cat(out)


def unit_text_vectors(model: RecModel, tokenizer, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Pooled text vectors of arbitrary texts through the whole encoder (new products at serving)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            feats = Mo.tokenize(tokenizer, list(texts[lo:lo + batch_size]), model.meta.max_length)
            out.append(model.text_vectors(feats))
    return torch.cat(out) if out else torch.zeros(0, model.encoder.config.hidden_size)


def in_batch_loss(user: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, log_q: torch.Tensor,
                  scale: torch.Tensor) -> torch.Tensor:
    """Sampled softmax over the batch's target items with logQ correction; a row's other copies of
    its own target are masked (they are not negatives)."""
    logits = scale * (F.normalize(user, dim=-1) @ F.normalize(items, dim=-1).T) - log_q[targets][None, :]
    same = (targets[:, None] == targets[None, :]) & ~torch.eye(len(targets), dtype=torch.bool)
    logits = logits.masked_fill(same, -1e4)
    return F.cross_entropy(logits, torch.arange(len(targets)))


def save(model: RecModel, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    Mo.save_lora(model.encoder, model.meta.backbone, directory / "lora")
    towers = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    save_file(towers, str(directory / _WEIGHTS))
    (directory / _ITEMS).write_text(json.dumps(model.item_ids))
    meta = asdict(model.meta)
    meta["lora"]["target_modules"] = list(meta["lora"]["target_modules"])
    (directory / _META).write_text(json.dumps(meta, indent=2))
    return directory


def is_recommend_adapter(directory: str | Path) -> bool:
    return (Path(directory) / _META).is_file()


def load(directory: str | Path, backbone: nn.Module | None = None) -> RecModel:
    from peft import PeftModel
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = RecMeta.from_json(json.loads((directory / _META).read_text()))
    backbone = backbone if backbone is not None else Mo.load_backbone(meta.backbone)
    encoder = PeftModel.from_pretrained(backbone, str(directory / "lora"))
    model = RecModel(encoder, meta, json.loads((directory / _ITEMS).read_text()))
    missing, unexpected = model.load_state_dict(load_file(str(directory / _WEIGHTS)), strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise Mo.ModelLoadError(f"{directory}: recommend towers do not match ({unexpected or missing})")
    return model.eval()


def item_vectors(model: RecModel, tokenizer, ids: Sequence[str], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(history vectors, candidate vectors) of items, unnormalised; an item the model never saw in
    training has its text alone (the id row of an unseen item is zero)."""
    known = {item: i for i, item in enumerate(model.item_ids)}
    idx = torch.tensor([known.get(i, len(model.item_ids)) for i in ids], dtype=torch.long)
    with torch.inference_mode():
        text = unit_text_vectors(model, tokenizer, list(texts))
        return model.history_vectors(text, idx), model.candidate_vectors(text, idx)


class RecScorer:
    """Full-catalog scoring with a trained model: every catalog item's two vectors computed once
    (new items through their text alone), a user's vector from their recent items."""

    def __init__(self, model: RecModel, tokenizer, item_ids: Sequence[str], texts: Sequence[str],
                 text_vectors: torch.Tensor | None = None):
        model.eval()
        self.model = model
        known = {item: i for i, item in enumerate(model.item_ids)}
        ids = torch.tensor([known.get(i, len(model.item_ids)) for i in item_ids], dtype=torch.long)
        with torch.inference_mode():
            tv = text_vectors if text_vectors is not None else unit_text_vectors(model, tokenizer, texts)
            history = model.history_vectors(tv, ids)
            self.history = torch.cat([history, torch.zeros(1, history.shape[1])])
            self.candidates = F.normalize(model.candidate_vectors(tv, ids), dim=-1)
        self.pad = len(item_ids)

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Histories as catalog positions (oldest first) -> normalised user vectors."""
        idx, mask = right_aligned(histories, self.model.meta.history, self.pad)
        with torch.inference_mode():
            return F.normalize(self.model.user_vectors(self.history[idx] * mask.unsqueeze(-1), mask), dim=-1)

    def __call__(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return (self.user_vectors(histories) @ self.candidates.T).numpy()
