"""Embed the product catalog with Ray Data: batch inference over an actor pool -> Parquet for the retriever.

Reads `<catalog_dir>/products.parquet`, builds each product's text exactly as the relevance task does
(`core.tasks.product_text` over normalised title, attributes and description), embeds it with the
frozen backbone (mean-pooled, L2-normalised: `core.modeling.embed`) in a pool of actors that each load
the model once, and writes `<output>/` : Parquet part files with product_id, embedding
(fixed_size_list<float32>[dim]), title, category, price, plus `_meta.json` (backbone, max_length, dim,
count, seconds, resolved config; underscored so Parquet readers of the directory skip it). `core.retrieval.EmbeddingIndex.from_parquet(<output>)` loads it.

Refuses (one error line, exit 2, nothing written): a missing or empty products.parquet, a missing
column, null or duplicate product ids, an actor pool that would reserve every CPU of the cluster
(Ray Data then waits forever for a CPU to read with). The output appears atomically: written to a
temporary directory beside it, then renamed over the old one. `output` may be an s3:// URI
(core.storage): Ray Data writes the part files there, and the swap is then a copy without a rename
(data_pipelines.outputs: not atomic, `_meta.json` lands last).

    python -m data_pipelines.embed_catalog --config configs/embed_catalog.yaml [key=value ...]
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import storage
from core.config import ConfigError, to_dict
from core.errors import InputError
from core.job_configs import EmbedCatalogConfig
from core.retrieval import META_FILE
from core.tasks import product_text
from core.text import normalize_series
from data_pipelines.outputs import staged_output
from ops.runtime import actor_pool_job, ensure_ray, job_main

TEXT_COLUMNS = ("title", "attributes", "description")
KEPT_COLUMNS = ("title", "category", "price")
"""Metadata written beside each vector: what a search or recommendation response shows."""
READ_COLUMNS = list(dict.fromkeys(("product_id", *TEXT_COLUMNS, *KEPT_COLUMNS)))
_BATCHES_PER_CALL = 4
"""Rows handed to an actor per call = batch_size * this; sorted by length inside, so padding stays short."""


@dataclass
class EmbedReport:
    output: str
    backbone: str
    count: int
    dim: int
    seconds: float

    @property
    def products_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


def product_texts(frame: pd.DataFrame) -> list[str]:
    """The string embedded for each product row: the product side of a relevance pair."""
    parts = [normalize_series(frame[c]) for c in TEXT_COLUMNS]
    return product_text(*parts).astype(str).tolist()


def catalog_texts(catalog_dir: str) -> dict[str, str]:
    """{product id: its text} of every product of the catalog, in the table's order (the retriever,
    the student's data and the stream's coordinator read the catalog this way)."""
    products = storage.read_parquet(storage.join(catalog_dir, "products.parquet"))
    return dict(zip(products["product_id"].astype(str), product_texts(products)))


class CatalogEmbedder:
    """Ray Data actor: loads tokenizer + backbone once, then embeds pandas batches of product rows."""

    def __init__(self, backbone: str, max_length: int, batch_size: int, threads: int):
        import torch
        from transformers.utils import logging as hf_logging

        from core import modeling

        torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()  # one "Loading weights" bar per actor is noise in the job log
        self.model = modeling.load_backbone(backbone)
        self.tokenizer = modeling.load_tokenizer(backbone)
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def __call__(self, batch: pd.DataFrame):
        import pyarrow as pa

        from core.modeling import embed

        texts = product_texts(batch)
        # Sort by length so each forward pass pads to similar lengths; put the rows back afterwards.
        order = np.argsort([len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = embed(self.model, self.tokenizer, [texts[i] for i in order],
                               max_length=self.max_length, batch_size=self.batch_size)
        # Arrow output, not pandas: a pandas column of arrays would become Ray's tensor extension type,
        # which plain pyarrow readers (the retriever) cannot interpret as a list of floats.
        return pa.table({
            "product_id": pa.array(batch["product_id"].astype(str).tolist(), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
            "title": pa.array(batch["title"].fillna("").astype(str).tolist(), pa.string()),
            "category": pa.array(batch["category"].fillna("").astype(str).tolist(), pa.string()),
            "price": pa.array(pd.to_numeric(batch["price"], errors="coerce").astype("float64"), pa.float64()),
        })


def check_products(catalog_dir: str | Path) -> tuple[str, int]:
    """(products.parquet path or URI, row count), or InputError naming what is wrong. Reads only product_id."""
    import pyarrow.parquet as pq

    path = storage.join(catalog_dir, "products.parquet")
    if not storage.is_file(path):
        raise InputError(f"no catalog at {path}: run `aisle prepare` or `aisle catalog` first")
    fs, where = storage.resolve(path)
    try:
        columns = set(pq.read_schema(where, filesystem=fs).names)
        missing = [c for c in READ_COLUMNS if c not in columns]
        ids = (pq.read_table(where, columns=["product_id"], filesystem=fs).column("product_id").to_pandas()
               if not missing else None)
    except Exception as e:  # pyarrow's errors for a truncated or non-Parquet file vary by cause
        raise InputError(f"{path} is not a readable Parquet file: {str(e).splitlines()[0]}") from None
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}")
    if ids.empty:
        raise InputError(f"{path} holds no products")
    if ids.isna().any():
        raise InputError(f"{path}: {int(ids.isna().sum())} products have no product_id")
    dupes = ids[ids.duplicated()].astype(str).unique().tolist()
    if dupes:
        raise InputError(f"{path}: duplicate product ids {', '.join(dupes[:5])}")
    return path, len(ids)


def _check_cpus(cfg: EmbedCatalogConfig) -> None:
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    wanted = cfg.actors * cfg.cpus_per_actor
    if total and wanted >= total:
        raise ConfigError(f"actors x cpus_per_actor = {wanted:g} would reserve all {total:g} CPUs, and the read "
                          "and write tasks would wait forever; lower actors or cpus_per_actor (e.g. 0.5)")


def run(cfg: EmbedCatalogConfig) -> EmbedReport:
    products, expected = check_products(cfg.catalog_dir)
    ensure_ray()
    _check_cpus(cfg)
    import ray.data

    start = time.perf_counter()
    # `columns=` on read_parquet is deprecated in 2.60; select_columns is pushed down into the read.
    ds = ray.data.read_parquet(products).select_columns(READ_COLUMNS)
    ds = ds.map_batches(
        CatalogEmbedder,
        fn_constructor_kwargs={"backbone": cfg.backbone, "max_length": cfg.max_length,
                               "batch_size": cfg.batch_size, "threads": cfg.threads_per_actor},
        batch_size=cfg.batch_size * _BATCHES_PER_CALL,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.actors),
        num_cpus=cfg.cpus_per_actor,
    )
    final = storage.absolute(cfg.output)
    if not storage.is_remote(final):
        Path(final).parent.mkdir(parents=True, exist_ok=True)
    with staged_output(final) as staging:
        with actor_pool_job():
            ds.write_parquet(staging)  # executes the pipeline
            seconds = time.perf_counter() - start
        count, dim = _written_shape(staging)
        if count != expected:
            raise RuntimeError(f"wrote {count} embeddings for {expected} products")
        report = EmbedReport(output=final, backbone=cfg.backbone, count=count, dim=dim, seconds=seconds)
        meta = {"backbone": cfg.backbone, "max_length": cfg.max_length, "dim": dim, "count": count, "seconds": round(seconds, 3),
                "products_per_s": round(report.products_per_s, 1), "catalog": str(products),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": to_dict(cfg)}
        storage.write_text(storage.join(staging, META_FILE), json.dumps(meta, indent=2))
    print(f"embedded {report.count} products (dim {report.dim}, {cfg.backbone}) in {report.seconds:.1f} s: "
          f"{report.products_per_s:.0f} products/s end to end, actor start-up included -> {final}")
    return report


def _written_shape(directory: str) -> tuple[int, int]:
    """(rows, embedding dim) from the Parquet footers alone: no data is read back (path or URI)."""
    import pyarrow.parquet as pq

    fs, root = storage.resolve(directory)
    files = sorted(f"{root}/{name}" for name in storage.list_files(directory, recursive=False) if name.endswith(".parquet"))
    if not files:
        return 0, 0
    count = sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)
    return count, int(pq.read_schema(files[0], filesystem=fs).field("embedding").type.list_size)


def main(argv: list[str] | None = None) -> int:
    return job_main(EmbedCatalogConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
