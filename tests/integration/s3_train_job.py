"""prepare (a generated catalog and a table source) -> embed_catalog -> finetune -> incremental finetune ->
evaluate, every location on s3:// (run by
test_s3_storage.py in its own process, so the Ray it starts inherits the AWS_* environment that
points at the test's S3 server). Prints one JSON line with what the test checks.

    python tests/integration/s3_train_job.py s3://bucket/prefix
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(base: str) -> None:
    import ray

    from core.config import load_config
    from core.job_configs import EmbedCatalogConfig, EvaluateConfig, FinetuneConfig, PrepareConfig
    from core.retrieval import EmbeddingIndex
    from data_pipelines import embed_catalog, prepare
    from train import evaluate, finetune

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    prepare.run(load_config(PrepareConfig, ROOT / "configs/prepare.yaml", [
        f"output_dir={base}/prepared", "tasks=[intent,relevance]", "max_rows=300",
        f"sources.intent={ROOT / 'data/intent/bitext_customer_support.csv'}", f"sources.catalog_dir={base}/catalog",
        "sources.catalog.n_products=80", "sources.catalog.n_queries=12", "sources.catalog.candidates_per_query=10"]))
    embedded = embed_catalog.run(load_config(EmbedCatalogConfig, ROOT / "configs/embed_catalog.yaml", [
        f"catalog_dir={base}/catalog", f"output={base}/embeddings/catalog", "backbone=tiny-random-bert",
        "max_length=32", "batch_size=16", "cpus_per_actor=0.5", "threads_per_actor=1"]))
    index = EmbeddingIndex.from_parquet(f"{base}/embeddings/catalog")
    common = [f"data_dir={base}/prepared", f"registry={base}/registry", f"storage_path={base}/runs",
              "model.backbone=tiny-random-bert", "model.max_length=32", "train.batch_size=16", "train.max_eval_examples=40",
              "train.epochs=1", "scaling.cpus_per_worker=0.5", "scaling.threads_per_worker=1"]
    first = finetune.run(load_config(FinetuneConfig, ROOT / "configs/intent.yaml", [*common, "train.max_steps_per_epoch=2"]))
    # An update that starts from the registered adapter: the Train worker downloads the parent itself.
    second = finetune.run(load_config(FinetuneConfig, ROOT / "configs/intent.yaml", [*common, "train.max_steps_per_epoch=1"]),
                          parent=first, trigger="stream")
    result = evaluate.evaluate_version(load_config(EvaluateConfig, ROOT / "configs/evaluate.yaml", [
        "task=intent", "version=v2", f"data_dir={base}/prepared", f"registry={base}/registry",
        "max_examples=40", "baselines=false"]))
    ray.shutdown()
    print(json.dumps({"first": first.version, "first_uri": first.uri, "first_lineage": first.lineage,
                      "second": second.version, "second_parent": second.lineage["parent"],
                      "evaluated": result["model_id"], "n": result["n"], "embedded": embedded.count,
                      "embeddings_output": embedded.output, "index_size": len(index), "index_dim": index.info.get("dim")}))


if __name__ == "__main__":
    main(sys.argv[1])
