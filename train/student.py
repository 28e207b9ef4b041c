"""`aisle distill`: a smaller /v1/search reranker, distilled from the relevance adapter.

The student is the relevance task on the backbone's bottom `model.layers` encoder layers (3 of
MiniLM's 6: half the cost of a forward), with LoRA on every attention projection of those and its
own head. It is registered as task `relevance_student` in the same registry, like any adapter; a
serving replica holds it on the one shared backbone beside the full adapters
(`core.adapter_bank` runs it through its layers only).

1. **Pairs** (driver): every training query of the prepared relevance split with its first-stage
   candidates, as search makes them (bi-encoder and BM25 blended, `core.search.first_stage_hits`,
   top `candidates`), plus a sample of the split's judged pairs. The reranker is only ever shown a
   query's first-stage candidates, so that is what the student learns to sort.
2. **Teacher** (Ray Data, an actor pool): the relevance version (`teacher`, default CURRENT)
   gives every pair its grade distribution (`core.training.TEACHER_PROBS`). The split is written
   to `<data_dir>/relevance_student/train`; val and test are relevance's own, with their real
   judgements.
3. **Student** (Ray Train, `train.finetune.run`): trained toward the teacher's distributions
   (cross-entropy on soft targets), the best epoch by validation nDCG@10 registered with
   lineage naming its teacher; made CURRENT of `relevance_student` (`promote`).

Search uses the student only while it was distilled from the relevance version search would
otherwise serve (ServeConfig `search_reranker: auto`): once the stream promotes a new relevance
version, search reranks with that version until a student is distilled from it.

    aisle distill [teacher=v3] [model.layers=2 train.epochs=1 ...]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from core.registry import ADAPTER_DIR
from core import storage
from core.errors import InputError
from core.job_configs import DistillConfig, FinetuneConfig, ModelConfig
from core.tasks import get_task
from core.training import TEACHER_PROBS

TASK = "relevance_student"
TEACHER_TASK = get_task(TASK).distilled_from
SOURCE = "first_stage"
"""`source` of a pair that came from the first stage (judged pairs keep `judged`)."""


def distillation_pairs(cfg: DistillConfig) -> tuple[pd.DataFrame, dict]:
    """(pairs, counts): the training queries' first-stage candidates and a sample of the judged
    training pairs, one row per distinct (query, product), with the judged label where there is one."""
    from core.bm25 import BM25
    from core.modeling import embed, load_backbone, load_tokenizer
    from core.retrieval import EmbeddingIndex
    from core.search import first_stage_hits
    from data_pipelines.embed_catalog import catalog_texts

    train_dir = storage.join(cfg.data_dir, TEACHER_TASK, "train")
    if not storage.exists(train_dir):
        raise InputError(f"no prepared relevance training split at {train_dir}: run `aisle prepare` first")
    if not storage.exists(cfg.embeddings):
        raise InputError(f"no catalog embeddings at {cfg.embeddings}: run `aisle embed` first")
    judged = storage.read_parquet(train_dir)
    texts = catalog_texts(cfg.catalog_dir)
    ids = list(texts)
    index = EmbeddingIndex.from_parquet(cfg.embeddings)
    backbone_name = index.info.get("backbone", "minilm")
    backbone, tokenizer = load_backbone(backbone_name), load_tokenizer(backbone_name)
    queries = judged.drop_duplicates("query_id")[["query_id", "query"]]
    vectors = embed(backbone, tokenizer, queries["query"].astype(str).tolist(), int(index.info.get("max_length", 128)))
    bm25 = BM25([texts[p] for p in ids])
    rows = []
    for (query_id, query), vector in zip(queries.itertuples(index=False), vectors):
        for product_id, _ in first_stage_hits(index, bm25, ids, vector[None, :], str(query), cfg.candidates,
                                              cfg.lexical_weight):
            if product_id in texts:
                rows.append((query_id, str(query), product_id, texts[product_id], None, SOURCE))
    sample = judged if cfg.max_judged is None or len(judged) <= cfg.max_judged else judged.sample(cfg.max_judged, random_state=0)
    labels = dict(zip(zip(judged["query_id"], judged["product_id"].astype(str)), judged["label"].astype(str)))
    frame = pd.DataFrame(rows + [(q, str(t), str(p), str(x), None, "judged") for q, t, p, x in
                                 sample[["query_id", "query", "product_id", "product_text"]].itertuples(index=False)],
                         columns=["query_id", "query", "product_id", "product_text", "label", "source"])
    frame = frame.drop_duplicates(["query_id", "product_id"]).reset_index(drop=True)
    frame["label"] = [labels.get((q, p)) for q, p in zip(frame["query_id"], frame["product_id"])]
    counts = {"queries": int(len(queries)), "first_stage": int((frame["source"] == SOURCE).sum()),
              "judged": int((frame["source"] == "judged").sum()), "pairs": int(len(frame)),
              "judged_labels": int(frame["label"].notna().sum())}
    return frame, counts


class TeacherScorer:
    """Ray Data actor: the teacher adapter in memory; pandas batches of pairs in, the same rows out (as
    Arrow) with the teacher's grade distribution (in `labels` order) and, where a pair has no judged
    label, the teacher's most likely grade as `label`."""

    def __init__(self, adapter_dir: str, labels: list[str], threads: int, batch_size: int):
        import torch

        from core import modeling

        torch.set_num_threads(threads)
        self.model, meta = modeling.load_adapter(adapter_dir)
        self.tokenizer, self.max_length, self.batch_size = modeling.load_tokenizer(meta.backbone), meta.max_length, batch_size
        missing = set(labels) - set(meta.labels)
        if missing:
            raise ValueError(f"the teacher has no labels {sorted(missing)}")
        self.order, self.labels = [meta.labels.index(label) for label in labels], labels

    def __call__(self, batch: pd.DataFrame):
        import pyarrow as pa

        from core import modeling

        pairs = list(zip(batch["query"].astype(str), batch["product_text"].astype(str)))
        probs = modeling.predict_proba(self.model, self.tokenizer, pairs, self.max_length, self.batch_size)[:, self.order]
        out = batch.copy()
        guessed = [self.labels[i] for i in probs.argmax(axis=1)]
        out["label"] = [g if label is None or pd.isna(label) else label for label, g in zip(out["label"], guessed)]
        # Arrow out, the rows as a fixed-size list of float32: a pandas column of arrays is one Ray Data
        # cannot convert (it warned, then pickled the column into the Parquet file).
        table = pa.Table.from_pandas(out, preserve_index=False)
        rows = pa.FixedSizeListArray.from_arrays(pa.array(probs.astype(np.float32).reshape(-1), pa.float32()), probs.shape[1])
        return table.append_column(TEACHER_PROBS, rows)


def write_splits(cfg: DistillConfig, scored: "object", counts: dict, teacher: str) -> str:
    """The scored pairs as `<data_dir>/relevance_student/train` (staged, then swapped in), with
    relevance's val and test copied beside them and a report naming the teacher; returns the dir."""
    from data_pipelines.outputs import staged_output

    final = storage.join(storage.absolute(cfg.data_dir), TASK)
    with staged_output(final) as staging:
        scored.write_parquet(storage.join(staging, "train"))
        for split in ("val", "test"):
            source = storage.join(cfg.data_dir, TEACHER_TASK, split)
            if storage.exists(source):
                storage.makedirs(storage.join(staging, split))
                storage.write_parquet(storage.read_parquet(source), storage.join(staging, split, "part-0.parquet"))
        storage.write_text(storage.join(staging, "report.json"), json.dumps(
            {"source": f"distilled from {teacher}", "kept": counts["pairs"], **counts}, indent=2))
    return final


def run(cfg: DistillConfig):
    """Pairs -> teacher scores (Ray Data) -> student (Ray Train) -> registered (and CURRENT)."""
    import ray.data

    from ops.runtime import ensure_ray
    from core.registry import AdapterRegistry
    from train import finetune

    registry = AdapterRegistry(cfg.registry)
    version = cfg.teacher or (registry.current(TEACHER_TASK) if TEACHER_TASK in registry.tasks() else None)
    if version is None:
        raise InputError(f"no CURRENT relevance version in {cfg.registry}: run `aisle train relevance` first")
    teacher = registry.get(TEACHER_TASK, version)
    teacher_length = int(teacher.config.get("model", {}).get("max_length") or 96)
    start = time.perf_counter()
    pairs, counts = distillation_pairs(cfg)
    print(f"[distill] {counts['pairs']} pairs: {counts['queries']} training queries x {cfg.candidates} "
          f"first-stage candidates ({counts['first_stage']}) and {counts['judged']} judged pairs")
    ensure_ray()
    labels = list(get_task(TASK).labels)
    size = max(1, -(-len(pairs) // (cfg.actors * 4)))   # four blocks per actor
    blocks = [pairs.iloc[k:k + size].reset_index(drop=True) for k in range(0, len(pairs), size)]
    scored = ray.data.from_pandas(blocks).map_batches(
        TeacherScorer, fn_constructor_kwargs={"adapter_dir": str(registry.local_dir(TEACHER_TASK, version) / ADAPTER_DIR), "labels": labels,
                                              "threads": cfg.threads_per_actor, "batch_size": cfg.batch_size},
        batch_size=512, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.actors), num_cpus=cfg.cpus_per_actor)
    data_dir = write_splits(cfg, scored, counts, teacher.model_id)
    print(f"[distill] {teacher.model_id} scored {counts['pairs']} pairs in {time.perf_counter() - start:.0f} s -> {data_dir}")

    model = ModelConfig(**{**{k: getattr(cfg.model, k) for k in ("backbone", "lora_r", "lora_alpha", "lora_dropout",
                                                                 "lora_targets", "layers")},
                           "max_length": cfg.model.max_length or teacher_length})
    if teacher.config.get("model", {}).get("backbone", model.backbone) != model.backbone:
        raise InputError(f"the student's backbone '{model.backbone}' is not its teacher's "
                         f"'{teacher.config['model']['backbone']}': set model.backbone")
    ft = FinetuneConfig(task=TASK, data_dir=cfg.data_dir, registry=cfg.registry, storage_path=cfg.storage_path,
                        promote=False, model=model, train=cfg.train, scaling=cfg.scaling)
    student = finetune.run(ft, trigger="distill", extra_lineage={"teacher": teacher.model_id, "pairs": counts})
    if cfg.promote:
        registry.promote(TASK, student.version, reason=f"distilled from {teacher.model_id}")
        print(f"[distill] {student.model_id} is CURRENT: search reranks with it while {teacher.model_id} is "
              f"relevance's CURRENT")
    return student


def main(argv: list[str] | None = None) -> int:
    from ops.runtime import job_main

    return job_main(DistillConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
