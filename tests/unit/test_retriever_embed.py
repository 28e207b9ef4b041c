"""The retriever's query embeddings: queries that miss together share one forward, each gets its own
row (the same as embedded alone), and a failed forward reaches every search that waited on it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from core import modeling
from serve import retriever as retriever_module


@pytest.fixture()
def retriever(monkeypatch):
    cls = retriever_module.Retriever.func_or_class
    made = object.__new__(cls)   # without __init__: no catalog on disk, only the embedding path
    made.backbone = modeling.load_backbone(modeling.TINY_BACKBONE)
    made.tokenizer = modeling.load_tokenizer(modeling.TINY_BACKBONE)
    made.max_length, made._embed_waiting, made._embed_lock = 32, [], asyncio.Lock()
    calls = []

    def embed(backbone, tokenizer, texts, max_length):
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("forward failed")
        return modeling.embed(backbone, tokenizer, texts, max_length)

    monkeypatch.setattr(retriever_module, "embed", embed)
    return made, calls


def test_queries_that_miss_together_share_one_forward(retriever):
    made, calls = retriever
    queries = ["red shoes", "blue woollen winter hat", "red shoes", "x"]

    async def main():
        return await asyncio.gather(*(made._embed_queries(q) for q in queries))

    vectors = asyncio.run(main())
    assert calls == [["red shoes", "blue woollen winter hat", "x"]]   # one forward, each query once
    alone = modeling.embed(made.backbone, made.tokenizer, queries, 32)
    for got, want in zip(vectors, alone):
        assert got.shape == (1, alone.shape[1]) and np.allclose(got[0], want, atol=1e-5)


def test_a_failed_forward_reaches_every_waiting_search(retriever):
    made, _ = retriever

    async def main():
        return await asyncio.gather(made._embed_queries("boom"), made._embed_queries("red"), return_exceptions=True)

    assert [type(r) for r in asyncio.run(main())] == [RuntimeError, RuntimeError]
