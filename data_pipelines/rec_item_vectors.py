"""`aisle embed recommend`: the recommend adapter's item vectors for the whole serving catalog, by a
Ray Data batch job.

Reads the items /v1/recommend ranks (`data_pipelines.interactions.serving_items`: the prepared
items, the search catalog's products, the logged catalog changes), maps batches over an actor pool
(each actor loads the recommend version once: backbone, LoRA, towers) and writes each item's text
with its history and candidate vectors to `output` as Parquet, staged and swapped in, with
`_meta.json` naming the version that made them. The Recommender deployment reads them when that
version is its CURRENT (ServeConfig `recommend_vectors`) and embeds only the items whose text
changed since, so a restart or a promotion serves after reading a file rather than a forward pass
over the catalog.

    aisle embed recommend [version=v3] [actors=2 ...]
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
from core.job_configs import RecItemVectorsConfig
from data_pipelines.outputs import staged_output

TASK = "recommend"
META = "_meta.json"


class RecItemEmbedder:
    """Ray Data actor: one recommend version in memory; pandas batches of (item_id, text) in, vectors out."""

    def __init__(self, adapter_dir: str, threads: int):
        import torch

        from core import modeling as Mo
        from core import rec_model as R

        torch.set_num_threads(threads)
        self.model = R.load(adapter_dir)
        self.tokenizer = Mo.load_tokenizer(self.model.meta.backbone)

    def __call__(self, batch: pd.DataFrame):
        import pyarrow as pa

        from core.rec_model import item_vectors

        ids, texts = batch["item_id"].astype(str).tolist(), batch["text"].astype(str).tolist()
        hist, cand = item_vectors(self.model, self.tokenizer, ids, texts)
        dim = hist.shape[1]
        return pa.table({
            "item_id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string()),
            "history": pa.FixedSizeListArray.from_arrays(pa.array(hist.numpy().reshape(-1)), dim),
            "candidate": pa.FixedSizeListArray.from_arrays(pa.array(cand.numpy().reshape(-1)), dim),
        })


def run(cfg: RecItemVectorsConfig) -> dict:
    import ray.data

    from ops.runtime import actor_pool_job, ensure_ray
    from core.registry import AdapterRegistry
    from data_pipelines.interactions import serving_items

    registry = AdapterRegistry(cfg.registry)
    version = cfg.version or (registry.current(TASK) if TASK in registry.tasks() else None)
    if version is None:
        raise InputError(f"no CURRENT recommend version in {cfg.registry}: run `aisle train recommend` first")
    adapter = str(registry.local_dir(TASK, version) / ADAPTER_DIR)
    items = serving_items(cfg.data_dir, cfg.catalog_dir)
    ensure_ray()
    start = time.perf_counter()
    size = max(1, -(-len(items) // (cfg.actors * 2)))   # two blocks per actor
    blocks = [items.iloc[k:k + size].reset_index(drop=True) for k in range(0, len(items), size)]
    ds = ray.data.from_pandas(blocks).map_batches(
        RecItemEmbedder, fn_constructor_kwargs={"adapter_dir": adapter, "threads": cfg.threads_per_actor},
        batch_size=cfg.batch_size, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.actors), num_cpus=cfg.cpus_per_actor)
    final = storage.absolute(cfg.output)
    with staged_output(final) as staging:
        with actor_pool_job():
            ds.write_parquet(staging)
            seconds = time.perf_counter() - start
        meta = {"task": TASK, "registry": storage.absolute(cfg.registry), "version": version, "items": int(len(items)),
                "seconds": round(seconds, 1)}
        storage.write_text(storage.join(staging, META), json.dumps(meta, indent=2))
    print(f"embedded {len(items)} items with {TASK}@{version} in {seconds:.1f} s -> {final}")
    return meta


def made_by(output: str, registry: str, version: str) -> bool:
    """Whether `output` holds vectors of `version` of `registry` (a version name alone is not unique
    across registries)."""
    meta_path = storage.join(output, META)
    if not storage.is_file(meta_path):
        return False
    meta = json.loads(storage.read_text(meta_path))
    return meta.get("version") == version and meta.get("registry") == storage.absolute(registry)


def read_vectors(output: str, registry: str, version: str) -> pd.DataFrame | None:
    """The vectors `run` wrote, if `made_by` that version (else None)."""
    if not made_by(output, registry, version):
        return None
    frame = storage.read_parquet(output)
    frame["history"] = frame["history"].map(np.asarray)
    frame["candidate"] = frame["candidate"].map(np.asarray)
    return frame


def main(argv: list[str] | None = None) -> int:
    from ops.runtime import job_main

    return job_main(RecItemVectorsConfig, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
