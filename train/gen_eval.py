"""Evaluate a generation adapter on held-out examples, beside the baselines, in one run.

For a seeded sample of `<data_dir>/<task>/<split>` (split by product, review product or message
text, so no test input was seen in training), generates with the adapter and scores ROUGE-L and
chrF against the references, plus the task's own check: for `describe` the hallucination rate
(a brand, colour or material that contradicts the product) and attribute coverage, for `reply`
slot accuracy (the same `{{Placeholder}}` set as the reference). Baselines, same sample, same run:
- zero-shot: the same prompt to the same LM with the adapter off (for a version trained to edit
  the nearest training answer, `core.gen_exemplars`, the prompt quotes it for both);
- retrieval: the answer of the nearest training example by MiniLM similarity of the inputs;
- lead (summarize only): the review's first sentence.
The metrics are written to the version's metrics.json (`test_rouge_l`, ...) and printed one line
per system.

    python -m train.gen_eval --config configs/evaluate_generate.yaml task=describe
    aisle evaluate describe
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import gen_metrics as GM
from core import storage
from core.gen_config import GenEvalConfig
from core.gen_exemplars import BANK_FILE, ExemplarBank, quoted_prompts
from core.gen_tasks import FAITHFUL_ATTRIBUTES, GenTask, get_gen_task, prepared_split
from core.registry import ADAPTER_DIR, AdapterRegistry
from ops.runtime import job_main

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def input_text(task: GenTask, frame: pd.DataFrame) -> list[str]:
    """The task's input fields of each example as one text (what retrieval compares)."""
    cols = [c for c in task.fields if c in frame.columns]
    return frame[cols].fillna("").astype(str).agg(" | ".join, axis=1).tolist()


def retrieve(task: GenTask, train: pd.DataFrame, test: pd.DataFrame, batch_size: int = 64) -> list[str]:
    """Each test example's nearest training example's target (MiniLM cosine over the input texts)."""
    from core import modeling

    backbone, tokenizer = modeling.load_backbone(), modeling.load_tokenizer()
    a = modeling.embed(backbone, tokenizer, input_text(task, train), batch_size=batch_size)
    b = modeling.embed(backbone, tokenizer, input_text(task, test), batch_size=batch_size)
    nearest = (b @ a.T).argmax(axis=1)
    return train["target"].iloc[nearest].astype(str).tolist()


def exemplar_bank(directory: Path) -> ExemplarBank | None:
    """The version's exemplar bank (retrieve-and-edit), None for a version trained without one."""
    return ExemplarBank.load(str(directory)) if (Path(directory) / BANK_FILE).exists() else None


def lead_sentence(text: str) -> str:
    return _SENTENCE.split(text.strip(), maxsplit=1)[0] if text else ""


@dataclass(frozen=True)
class Vocabularies:
    """describe's attribute vocabularies: every value of the catalog (`strict`), and the values that
    state the attribute (`claims`, core.gen_metrics.claim_vocabulary, learnt on the training split)."""
    strict: GM.AttributeVocabulary
    claims: GM.AttributeVocabulary
    left_out: dict

    @classmethod
    def of(cls, train: pd.DataFrame, every: pd.DataFrame) -> "Vocabularies":
        claims, left_out = GM.claim_vocabulary(train, FAITHFUL_ATTRIBUTES, "target")
        return cls(GM.AttributeVocabulary.from_products(every, FAITHFUL_ATTRIBUTES), claims, left_out)


def score(task: GenTask, predictions: list[str], test: pd.DataFrame, vocab: Vocabularies | None) -> dict:
    refs = test["target"].astype(str).tolist()
    out = {"rouge_l": GM.corpus_mean(GM.rouge_l, predictions, refs), "chrf": GM.corpus_mean(GM.chrf, predictions, refs)}
    if task.extra_metric == "hallucination_rate" and vocab is not None:
        products = test[list(FAITHFUL_ATTRIBUTES)].astype(str).to_dict("records")
        # A brand, colour or material the text states that is neither the product's nor in its own
        # catalog text. Strict: every value of the catalog counts, words of the catalog's language
        # too ("breathable fabric", "rubber outsole"), where its own texts score above zero.
        out["hallucination_rate"] = float(np.mean([GM.hallucinated(p, prod, vocab.claims, source=ref)
                                                   for p, prod, ref in zip(predictions, products, refs)]))
        out["strict_contradiction_rate"] = float(np.mean([GM.hallucinated(p, prod, vocab.strict)
                                                          for p, prod in zip(predictions, products)]))
        out["attribute_coverage"] = float(np.mean([GM.attribute_coverage(p, prod, FAITHFUL_ATTRIBUTES)
                                                   for p, prod in zip(predictions, products)]))
    if task.extra_metric == "slot_accuracy":
        out["slot_accuracy"] = GM.corpus_mean(GM.slot_accuracy, predictions, refs)
    return out


def _read(cfg: GenEvalConfig, split: str) -> pd.DataFrame:
    return storage.read_parquet(prepared_split(cfg.data_dir, cfg.task, split))


def evaluate(cfg: GenEvalConfig) -> dict:
    """{system: metrics} for the version (and the baselines), with the samples; also written to the
    version's metrics and printed."""
    import torch

    from core import lm

    task = get_gen_task(cfg.task)
    torch.set_num_threads(cfg.threads)
    registry = AdapterRegistry(cfg.registry)
    version = registry.get(cfg.task, cfg.version)
    model_cfg = version.config.get("model", {})
    test = _read(cfg, cfg.split)
    test = test.sample(min(cfg.max_examples, len(test)), random_state=cfg.seed).reset_index(drop=True)
    train = _read(cfg, "train") if cfg.baselines or task.extra_metric == "hallucination_rate" else None
    vocab = None
    if task.extra_metric == "hallucination_rate":
        vocab = Vocabularies.of(train, pd.concat([train, _read(cfg, "val"), _read(cfg, "test")], ignore_index=True))

    base, tokenizer = lm.load_lm(model_cfg.get("lm", lm.DEFAULT_LM), cfg.lm_cache_dir)
    model = lm.load_gen_adapter(base, version.local_dir() / ADAPTER_DIR)
    bank = exemplar_bank(version.local_dir())
    prompts = quoted_prompts(task, test, bank) if bank is not None and task.exemplar_field else \
        test["prompt"].astype(str).tolist()
    outputs, timings = {}, {}

    def run(name, fn):
        t0 = time.perf_counter()
        outputs[name] = fn()
        timings[name] = time.perf_counter() - t0

    limit = min(task.max_new_tokens, cfg.max_new_tokens or task.max_new_tokens)
    run("model", lambda: [g.text for g in lm.generate(model, tokenizer, prompts, limit, batch_size=cfg.batch_size)])
    if cfg.baselines:
        with model.disable_adapter():
            run("zero-shot", lambda: [g.text for g in lm.generate(model, tokenizer, prompts, limit,
                                                                  batch_size=cfg.batch_size)])
        pool = train if not cfg.retrieval_pool or len(train) <= cfg.retrieval_pool else \
            train.sample(cfg.retrieval_pool, random_state=cfg.seed)
        run("retrieval", lambda: retrieve(task, pool, test))
        if cfg.task == "summarize":
            run("lead sentence", lambda: [lead_sentence(t) for t in test["text"].astype(str)])
    report = {name: {**score(task, preds, test, vocab), "seconds": round(timings[name], 1)}
              for name, preds in outputs.items()}
    if vocab is not None:  # what the strict check says of the catalog's own texts, for scale
        report["reference"] = {k: v for k, v in score(task, test["target"].astype(str).tolist(), test, vocab).items()
                               if k in ("strict_contradiction_rate", "attribute_coverage")} | {"seconds": 0.0}
    registry.update_metrics(cfg.task, version.version,
                            {f"test_{k}": v for k, v in report["model"].items() if k != "seconds"}
                            | {"test_examples": len(test)})
    print(f"[{cfg.task}] {version.model_id} on {len(test)} {cfg.split} examples:")
    if vocab is not None and vocab.left_out:
        print("  not attribute claims (the catalog's texts use them for other products): "
              + "; ".join(f"{a} {', '.join(v)}" for a, v in vocab.left_out.items()))
    for name, m in report.items():
        scores = [f"ROUGE-L {m['rouge_l']:.4f}, chrF {m['chrf']:.4f}"] if "rouge_l" in m else []
        scores += [f"{k.replace('_', ' ')} {v:.4f}" for k, v in m.items() if k not in ("rouge_l", "chrf", "seconds")]
        print(f"  {name:<14} {', '.join(scores)}" + (f" ({m['seconds']:.0f} s)" if name != "reference" else ""))
    result = {"task": cfg.task, "version": version.model_id, "examples": len(test), "report": report,
              "samples": [{"prompt": p, "reference": r, **{k: v[i] for k, v in outputs.items()}}
                          for i, (p, r) in enumerate(zip(prompts[:5], test["target"].astype(str)))]}
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    return job_main(GenEvalConfig, evaluate, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
