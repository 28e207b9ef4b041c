"""The real catalog-embedding job (Ray Data, actor pool) on a 120-product catalog with the tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import modeling
from core.config import ConfigError, load_config
from core.errors import InputError
from core.job_configs import EmbedCatalogConfig
from core.retrieval import META_FILE, EmbeddingIndex
from core.tasks import product_text
from core.text import normalize_series
from data_pipelines import embed_catalog
from data_pipelines.catalog import generate_catalog, write_catalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _config(tmp_path, **overrides) -> EmbedCatalogConfig:
    values = {"catalog_dir": str(tmp_path / "catalog"), "output": str(tmp_path / "embeddings" / "catalog"),
              "backbone": modeling.TINY_BACKBONE, "max_length": 64, "batch_size": 16,
              "actors": 1, "cpus_per_actor": 0.5, "threads_per_actor": 1, **overrides}
    return load_config(EmbedCatalogConfig, None, [f"{k}={v}" for k, v in values.items()])


@pytest.fixture(scope="module")
def embedded(ray_session, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("embed")
    write_catalog(generate_catalog(seed=0, n_products=120, n_queries=20), tmp_path / "catalog")
    cfg = _config(tmp_path)
    report = embed_catalog.run(cfg)
    return cfg, report, pd.read_parquet(tmp_path / "catalog" / "products.parquet")


def test_writes_one_unit_vector_per_product(embedded):
    cfg, report, products = embedded
    table = pq.read_table(cfg.output)  # the whole directory: plain pyarrow skips _meta.json
    assert report.count == table.num_rows == len(products) == 120
    assert set(table.column_names) == {"product_id", "embedding", "title", "category", "price"}
    emb_type = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == 32 and emb_type.value_type == pa.float32()
    ids = table.column("product_id").to_pylist()
    assert len(set(ids)) == 120 and set(ids) == set(products["product_id"])
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert vectors.shape == (120, 32) and report.dim == 32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    meta = json.loads((Path(cfg.output) / META_FILE).read_text())
    assert meta["backbone"] == modeling.TINY_BACKBONE and meta["dim"] == 32 and meta["count"] == 120
    assert isinstance(meta["seconds"], float) and meta["config"]["batch_size"] == 16  # recorded, not judged


def test_embeddings_equal_the_driver_side_model(embedded):
    cfg, _, products = embedded
    texts = product_text(*(normalize_series(products[c]) for c in ("title", "attributes", "description")))
    expected = modeling.embed(modeling.load_backbone(cfg.backbone), modeling.load_tokenizer(cfg.backbone),
                              texts.astype(str).tolist(), max_length=cfg.max_length, batch_size=cfg.batch_size)
    got = pd.read_parquet(cfg.output).set_index("product_id").loc[products["product_id"]]
    assert np.allclose(np.stack(got["embedding"].to_numpy()), expected, atol=1e-5)
    assert got["title"].tolist() == products["title"].tolist()
    assert np.allclose(got["price"].to_numpy(), products["price"].to_numpy())


def test_retriever_loads_the_output(embedded):
    cfg, _, products = embedded
    index = EmbeddingIndex.from_parquet(cfg.output)
    assert len(index) == 120 and index.dim == 32
    assert index.info["backbone"] == modeling.TINY_BACKBONE and index.info["max_length"] == cfg.max_length
    given = products["product_id"].iloc[:2].tolist()
    hits = index.similar(given, k=5)
    assert len(hits) == 5 and not set(given) & {p for p, _ in hits}
    first = products.iloc[0]
    assert index.product(first["product_id"])["title"] == first["title"]
    [top] = index.search(index.vector(first["product_id"])[None, :], k=1)
    assert top[0][0] == first["product_id"]


def test_rerun_replaces_the_output_atomically(embedded):
    import ray

    cfg, _, _ = embedded
    before = EmbeddingIndex.from_parquet(cfg.output)
    free = ray.available_resources().get("CPU", 0.0)
    embed_catalog.run(cfg)
    # the job returns once its actor pool has given its CPUs back: the next Ray Data job finds them free
    assert ray.available_resources().get("CPU", 0.0) >= free
    after = EmbeddingIndex.from_parquet(cfg.output)
    assert after.product_ids == before.product_ids
    assert [p.name for p in Path(cfg.output).parent.iterdir()] == ["catalog"]


def test_missing_catalog_is_an_input_error(ray_session, tmp_path):
    with pytest.raises(InputError, match=r"run `aisle prepare` or `aisle catalog` first"):
        embed_catalog.run(_config(tmp_path))
    assert not (tmp_path / "embeddings").exists()
    assert embed_catalog.main([f"catalog_dir={tmp_path / 'nowhere'}", f"output={tmp_path / 'out'}"]) == 2


def test_refuses_an_actor_pool_that_takes_every_cpu(ray_session, tmp_path):
    write_catalog(generate_catalog(seed=1, n_products=60, n_queries=10), tmp_path / "catalog")
    with pytest.raises(ConfigError, match="would reserve all 2 CPUs"):
        embed_catalog.run(_config(tmp_path, actors=2, cpus_per_actor=1.0))


def test_an_actor_pool_job_drops_ray_datas_false_hang_warning_only_while_it_runs(ray_session):
    import logging

    from ops.runtime import actor_pool_job

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger("ray.data.dataset")
    log.addHandler(handler)
    message = "Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang"
    try:
        with actor_pool_job():
            log.warning(message)  # Ray's check on the materialized copy while the pool still holds the CPUs
            log.warning("another warning")
        log.warning(message)
    finally:
        log.removeHandler(handler)
    assert seen == ["another warning", message]
