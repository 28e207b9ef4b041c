"""Exact cosine retrieval over catalog embeddings: candidate generation and "more like these".

`EmbeddingIndex` holds one L2-normalised vector per product (written by `data_pipelines.embed_catalog`)
and answers top-k by a matrix product plus `np.argpartition`. No Ray here: the serving layer wraps it
in a deployment, tests and notebooks use it directly.

Exact search is the right tool at catalog scale. Measured on one core of the 2-core dev machine
(MiniLM, dim 384): ~0.15 ms per query against 3,000 products and ~16 ms against 100,000, i.e. 6-25
million products scored per second (the higher figure for batches of 32 queries). Past a few million
products, swap in an approximate index behind the same `search` signature: build e.g.
`faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)` (or `hnswlib.Index(space="ip", dim=dim)`)
from `self._vectors` in `__init__`, ask it for `k + len(exclude[i])` neighbours in `search`, drop the
excluded ids, and keep the (score desc, row asc) order; callers, `similar` included, need no change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

Hit = tuple[str, float]

META_FILE = "_meta.json"
"""Written by the embedding job inside its output directory: backbone, dim, count, config. The leading
underscore makes pyarrow, pandas, Ray and Spark readers of the directory skip it (like `_SUCCESS`)."""

_EPS = 1e-12


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (they score 0 against everything)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, _EPS)).astype(np.float32, copy=False)


class EmbeddingIndex:
    """Product ids + unit vectors (+ optional metadata); exact cosine top-k.

    Ties are broken by row order (the earlier row wins), so results are deterministic.
    """

    def __init__(self, product_ids: Sequence[str], embeddings: np.ndarray, metadata: pd.DataFrame | None = None,
                 info: dict | None = None):
        ids = [str(p) for p in product_ids]
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array [n, dim], got shape {vectors.shape}")
        if vectors.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} product ids but {vectors.shape[0]} embedding rows")
        if not np.isfinite(vectors).all():
            raise ValueError("embeddings contain NaN or infinite values")
        duplicates = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
        if duplicates:
            raise ValueError(f"duplicate product ids in the index: {', '.join(duplicates[:5])}"
                             + (f" (+{len(duplicates) - 5} more)" if len(duplicates) > 5 else ""))
        self._ids = ids
        self._row = {pid: i for i, pid in enumerate(ids)}
        self._vectors = _normalise(vectors)  # defensive: a hand-built or float16 source may drift
        self._metadata = self._align_metadata(metadata)
        self.info: dict = dict(info or {})
        """How the vectors were made (the job's META_FILE: backbone, max_length, ...): embed queries the same way."""

    def _align_metadata(self, metadata: pd.DataFrame | None) -> pd.DataFrame | None:
        if metadata is None:
            return None
        if "product_id" in metadata.columns:
            meta = metadata.drop_duplicates("product_id").set_index("product_id")
            return meta.reindex(pd.Index(self._ids, name="product_id"))
        if len(metadata) != len(self._ids):
            raise ValueError(f"metadata has {len(metadata)} rows for {len(self._ids)} products "
                             "(give a product_id column, or one row per product in index order)")
        return metadata.set_axis(pd.Index(self._ids, name="product_id"))

    # ---- lookups ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def product_ids(self) -> list[str]:
        return list(self._ids)

    def _rows(self, product_ids: Iterable[str]) -> list[int]:
        ids = list(product_ids)
        unknown = [p for p in ids if p not in self._row]
        if unknown:
            raise KeyError(f"unknown product ids: {', '.join(map(str, unknown[:10]))}"
                           + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""))
        return [self._row[p] for p in ids]

    def vector(self, product_id: str) -> np.ndarray:
        """The product's unit vector (a copy)."""
        return self._vectors[self._rows([product_id])[0]].copy()

    def product(self, product_id: str) -> dict:
        """{'product_id': ..., plus every metadata column} with plain Python values."""
        row = self._rows([product_id])[0]
        out: dict = {"product_id": product_id}
        if self._metadata is not None:
            for key, value in self._metadata.iloc[row].items():
                out[str(key)] = None if _is_missing(value) else (value.item() if hasattr(value, "item") else value)
        return out

    # ---- search ------------------------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int,
               exclude: Sequence[set[str]] | None = None) -> list[list[Hit]]:
        """Top-k products by cosine similarity for each query vector, best first.

        `exclude[i]` holds ids never returned for query i (unknown ids are ignored). A query gets fewer
        than k hits only when the index (minus its exclusions) holds fewer than k products.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape [q, {self.dim}], got {np.shape(query_vectors)}")
        if not np.isfinite(queries).all():
            raise ValueError("query vectors contain NaN or infinite values")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
        if len(self) == 0:
            return [[] for _ in range(len(queries))]

        scores = _normalise(queries) @ self._vectors.T  # [q, n]
        if exclude is not None:
            for i, ids in enumerate(exclude):
                rows = [self._row[p] for p in ids if p in self._row]
                scores[i, rows] = -np.inf
        kk = min(k, len(self))
        # argpartition finds the k best rows without a full sort; its order among ties is arbitrary,
        # so everything scoring at least the k-th best is re-sorted by (score desc, row asc).
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        boundary_ties = (scores >= kth[:, None]).sum(axis=1) > kk
        results = []
        for i in range(len(queries)):
            rows = np.flatnonzero(scores[i] >= kth[i]) if boundary_ties[i] else part[i]
            rows = rows[np.lexsort((rows, -scores[i, rows]))][:kk]
            results.append([(self._ids[r], float(scores[i, r])) for r in rows if np.isfinite(scores[i, r])])
        return results

    def with_changes(self, upserts: Sequence[tuple[str, np.ndarray, dict]] = (), deletes: Iterable[str] = ()
                     ) -> "EmbeddingIndex":
        """A new index with products added or replaced ((id, vector, metadata)) and others removed;
        this one is left as it is, so a reader holding it never sees half a change."""
        gone = set(deletes) | {pid for pid, _, _ in upserts}
        keep = [i for i, pid in enumerate(self._ids) if pid not in gone]
        ids = [self._ids[i] for i in keep] + [str(pid) for pid, _, _ in upserts]
        vectors = self._vectors[keep]
        if upserts:
            vectors = np.concatenate([vectors, np.stack([np.asarray(v, dtype=np.float32) for _, v, _ in upserts])])
        metadata = None
        if self._metadata is not None:
            metadata = self._metadata.iloc[keep].reset_index()
            if upserts:
                added = pd.DataFrame([{"product_id": str(pid), **meta} for pid, _, meta in upserts])
                metadata = pd.concat([metadata, added], ignore_index=True)
        return EmbeddingIndex(ids, vectors, metadata, self.info)

    def similar(self, product_ids: Sequence[str], k: int, exclude_given: bool = True) -> list[Hit]:
        """Recommendations for a basket or browsing history: nearest products to the mean of their vectors."""
        if not product_ids:
            raise ValueError("similar() needs at least one product id")
        rows = self._rows(product_ids)
        centre = self._vectors[rows].mean(axis=0)
        exclude = [set(product_ids)] if exclude_given else None
        return self.search(centre[None, :], k, exclude)[0]

    # ---- loading -----------------------------------------------------------------------------------

    @classmethod
    def from_parquet(cls, path: str | Path) -> "EmbeddingIndex":
        """Load the job's output: a Parquet file, or a directory of them (plus META_FILE, read into `info`).

        Needs columns product_id and embedding (a list of floats, one length for all rows); every other
        column becomes metadata. Rows are ordered by product_id, so the index does not depend on how
        the writing job split its files. A URI (``s3://...``, core.storage) is downloaded to a
        temporary directory first.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from core import storage

        if storage.is_remote(path):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="aisle-embeddings-") as tmp:
                local = Path(tmp) / storage.name_of(path)
                if storage.is_file(path):
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_bytes(storage.read_bytes(path))
                elif not storage.download_dir(path, local):
                    raise FileNotFoundError(f"no embeddings Parquet at {path} (run data_pipelines.embed_catalog)")
                return cls.from_parquet(local)
        path = Path(path)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files or not files[0].is_file():
            raise FileNotFoundError(f"no embeddings Parquet at {path} (run data_pipelines.embed_catalog)")
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        missing = [c for c in ("product_id", "embedding") if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        emb = table.column("embedding").combine_chunks()
        if emb.null_count:
            raise ValueError(f"{path}: {emb.null_count} rows have no embedding")
        if pa.types.is_fixed_size_list(emb.type):
            dim = emb.type.list_size
        elif pa.types.is_list(emb.type) or pa.types.is_large_list(emb.type):
            lengths = pc.unique(pc.list_value_length(emb)).to_pylist()
            if len(lengths) > 1:
                raise ValueError(f"{path}: embedding dimension differs between rows: {sorted(lengths)}")
            dim = lengths[0] if lengths else 0
        else:
            raise ValueError(f"{path}: column 'embedding' must be a list of floats, got {emb.type}")
        vectors = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(emb), dim)
        if table.column("product_id").null_count:
            raise ValueError(f"{path}: {table.column('product_id').null_count} rows have no product_id")
        ids = [str(p) for p in table.column("product_id").to_pylist()]
        meta = table.drop_columns(["product_id", "embedding"]).to_pandas()
        order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
        meta = meta.iloc[order].reset_index(drop=True)
        info = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
        if info.get("dim") not in (None, dim):
            raise ValueError(f"{path}: {META_FILE} says dim {info['dim']} but the vectors have {dim}")
        try:
            return cls([ids[i] for i in order], vectors[order], meta if len(meta.columns) else None, info)
        except ValueError as e:  # duplicate ids, NaN vectors: say which file
            raise ValueError(f"{path}: {e}") from None


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays, lists
        return False
