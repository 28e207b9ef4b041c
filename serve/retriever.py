"""The retriever deployment: exact cosine top-k over the catalog embeddings (core.retrieval).

Loads the output of `data_pipelines.embed_catalog`, embeds queries with the same frozen backbone
and length, and returns candidates with the product text the relevance reranker reads.
"""

from __future__ import annotations

import asyncio

from ray import serve

from core import storage
from core.modeling import embed, load_backbone, load_tokenizer
from core.retrieval import EmbeddingIndex
from data_pipelines.embed_catalog import product_texts


@serve.deployment(name="Retriever", ray_actor_options={"num_cpus": 0.25})
class Retriever:
    def __init__(self, embeddings: str, catalog_dir: str, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.index = EmbeddingIndex.from_parquet(embeddings)
        self.backbone_name = self.index.info.get("backbone", "minilm")
        self.max_length = int(self.index.info.get("max_length", 128))
        self.backbone, self.tokenizer = load_backbone(self.backbone_name), load_tokenizer(self.backbone_name)
        products = storage.read_parquet(storage.join(catalog_dir, "products.parquet"))
        self.texts = dict(zip(products["product_id"].astype(str), product_texts(products)))
        self.model_id = f"retrieval:{self.backbone_name}"

    def _products(self, hits) -> list[dict]:
        out = []
        for product_id, score in hits:
            info = self.index.product(product_id)
            out.append({"product_id": product_id, "title": str(info.get("title", "")), "category": info.get("category"),
                        "price": info.get("price"), "score": score, "text": self.texts.get(product_id, "")})
        return out

    async def search(self, query: str, k: int) -> list[dict]:
        vector = await asyncio.to_thread(embed, self.backbone, self.tokenizer, [query], self.max_length)
        return self._products(self.index.search(vector, k)[0])

    async def similar(self, product_ids: list[str], k: int, skip_unknown: bool = False) -> dict:
        """Nearest products to the given ones (excluded from the answer). `skip_unknown`: a shopper's
        history may name products the catalog no longer has; recommend from the known ones."""
        unknown = [p for p in product_ids if p not in self.index]
        if unknown and not skip_unknown:
            return {"unknown": unknown}
        known = [p for p in product_ids if p in self.index]
        if not known:
            return {"model": self.model_id, "products": []}
        return {"model": self.model_id, "products": self._products(self.index.similar(known, k))}

    async def lookup(self, product_ids: list[str]) -> list[dict]:
        """Catalog entries of known product ids, in the given order (score 0: not a similarity)."""
        return self._products([(p, 0.0) for p in product_ids if p in self.index])
