"""EmbeddingIndex: exact top-k against brute force, exclusions, recommendations, Parquet round trip. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.retrieval import META_FILE, EmbeddingIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def index() -> EmbeddingIndex:
    rng = np.random.default_rng(0)
    ids = [f"P{i:04d}" for i in range(200)]
    meta = pd.DataFrame({"product_id": ids, "title": [f"item {i}" for i in range(200)],
                         "category": ["shoes" if i % 2 else "bags" for i in range(200)],
                         "price": np.arange(200, dtype=float) + 0.5})
    return EmbeddingIndex(ids, _unit(rng, 200, 16), meta.sample(frac=1.0, random_state=1))


def _brute_force(index: EmbeddingIndex, q: np.ndarray, k: int, exclude: set[str] = frozenset()) -> list[str]:
    q = q / np.linalg.norm(q)
    scored = [(-float(index.vector(p) @ q), i, p) for i, p in enumerate(index.product_ids) if p not in exclude]
    return [p for _, _, p in sorted(scored)[:k]]


def test_search_matches_brute_force(index):
    queries = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32) * 3.0  # not unit: normalised inside
    hits = index.search(queries, k=10)
    assert len(hits) == 8
    for q, row in zip(queries, hits):
        assert [p for p, _ in row] == _brute_force(index, q, 10)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        assert np.allclose(scores, [index.vector(p) @ (q / np.linalg.norm(q)) for p, _ in row], atol=1e-5)


def test_search_accepts_a_single_vector(index):
    q = index.vector("P0007")
    [hits] = index.search(q, k=1)
    assert hits[0][0] == "P0007" and hits[0][1] == pytest.approx(1.0, abs=1e-5)


def test_exclusion_per_query(index):
    q = np.stack([index.vector("P0003"), index.vector("P0004")])
    top = index.search(q, k=5)
    exclude = [{p for p, _ in top[0][:3]} | {"not-in-index"}, set()]
    hits = index.search(q, k=5, exclude=exclude)
    assert not exclude[0] & {p for p, _ in hits[0]}
    assert [p for p, _ in hits[0]] == _brute_force(index, q[0], 5, exclude[0])
    assert hits[1] == top[1]
    with pytest.raises(ValueError, match="exclude"):
        index.search(q, k=5, exclude=[set()])


def test_k_larger_than_index():
    idx = EmbeddingIndex(["a", "b", "c"], np.eye(3, dtype=np.float32))
    [hits] = idx.search(np.array([1.0, 0.5, 0.0]), k=10)
    assert [p for p, _ in hits] == ["a", "b", "c"]
    [hits] = idx.search(np.array([1.0, 0.5, 0.0]), k=10, exclude=[{"a", "c"}])
    assert [p for p, _ in hits] == ["b"]
    [hits] = idx.search(np.array([1.0, 0.5, 0.0]), k=2, exclude=[{"a", "b", "c"}])
    assert hits == []
    with pytest.raises(ValueError, match="k must be"):
        idx.search(np.ones(3), k=0)


def test_ties_break_by_row_order():
    vectors = np.array([[0, 1], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    idx = EmbeddingIndex(["v", "x3", "x1", "x2", "w"], vectors)
    for _ in range(3):
        assert [p for p, _ in idx.search(np.array([1.0, 0.0]), k=2)[0]] == ["x3", "x1"]
        assert [p for p, _ in idx.search(np.array([0.0, 1.0]), k=1)[0]] == ["v"]


def test_renormalises_and_rejects_bad_input():
    idx = EmbeddingIndex(["a", "b"], np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert np.allclose(np.linalg.norm(idx.vector("a")), 1.0)
    with pytest.raises(ValueError, match="duplicate product ids"):
        EmbeddingIndex(["a", "a"], np.eye(2))
    with pytest.raises(ValueError, match="2 product ids but 3"):
        EmbeddingIndex(["a", "b"], np.eye(3))
    with pytest.raises(ValueError, match=r"shape \[q, 2\]"):
        idx.search(np.ones((1, 3)), k=1)


def test_similar_excludes_given_and_uses_mean_vector(index):
    given = ["P0010", "P0020", "P0030"]
    hits = index.similar(given, k=7)
    assert len(hits) == 7 and not set(given) & {p for p, _ in hits}
    centre = np.mean([index.vector(p) for p in given], axis=0)
    assert [p for p, _ in hits] == _brute_force(index, centre, 7, set(given))
    with_given = index.similar(["P0010"], k=1, exclude_given=False)
    assert with_given[0][0] == "P0010"


def test_unknown_ids_raise_key_error_listing_them(index):
    with pytest.raises(KeyError, match="nope.*nada"):
        index.similar(["P0001", "nope", "nada"], k=3)
    with pytest.raises(KeyError, match="ghost"):
        index.vector("ghost")
    with pytest.raises(KeyError, match="ghost"):
        index.product("ghost")


def test_product_metadata_is_aligned_by_id(index):
    assert len(index) == 200 and index.dim == 16 and "P0042" in index
    assert index.product("P0042") == {"product_id": "P0042", "title": "item 42", "category": "bags", "price": 42.5}
    bare = EmbeddingIndex(["a"], np.ones((1, 4)))
    assert bare.product("a") == {"product_id": "a"}


def _write(path, ids, vectors, fixed=True, **extra):
    flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1))
    emb = (pa.FixedSizeListArray.from_arrays(flat, len(vectors[0])) if fixed
           else pa.array([list(map(float, v)) for v in vectors], pa.list_(pa.float32())))
    pq.write_table(pa.table({"product_id": ids, "embedding": emb, **extra}), path)


def test_from_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 6, 8)
    out = tmp_path / "emb"
    out.mkdir()
    # Two part files, out of id order, plus the job's meta file (read into `info`, not as Parquet).
    _write(out / "b.parquet", ["p4", "p5", "p3"], vectors[[4, 5, 3]], title=["t4", "t5", "t3"], price=[4.0, 5.0, 3.0])
    _write(out / "a.parquet", ["p0", "p2", "p1"], vectors[[0, 2, 1]], title=["t0", "t2", "t1"], price=[0.0, 2.0, 1.0])
    (out / META_FILE).write_text('{"backbone": "minilm", "dim": 8}')
    idx = EmbeddingIndex.from_parquet(out)
    assert idx.info == {"backbone": "minilm", "dim": 8}
    assert pd.read_parquet(out).shape == (6, 4)  # plain readers skip the meta file too
    assert idx.product_ids == [f"p{i}" for i in range(6)] and idx.dim == 8
    for i in range(6):
        assert np.allclose(idx.vector(f"p{i}"), vectors[i], atol=1e-6)
        assert idx.product(f"p{i}") == {"product_id": f"p{i}", "title": f"t{i}", "price": float(i)}
    single = tmp_path / "one.parquet"
    _write(single, ["x", "y"], vectors[:2], fixed=False)
    assert EmbeddingIndex.from_parquet(single).product_ids == ["x", "y"]


def test_from_parquet_rejects_duplicates_and_ragged_dimensions(tmp_path):
    vectors = _unit(np.random.default_rng(3), 3, 4)
    _write(tmp_path / "dupes.parquet", ["a", "b", "a"], vectors)
    with pytest.raises(ValueError, match="dupes.parquet: duplicate product ids in the index: a"):
        EmbeddingIndex.from_parquet(tmp_path / "dupes.parquet")
    ragged = pa.array([[1.0, 0.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"product_id": ["a", "b"], "embedding": ragged}), tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match=r"dimension differs between rows: \[2, 3\]"):
        EmbeddingIndex.from_parquet(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"product_id": ["a"], "vector": [[1.0]]}), tmp_path / "nocol.parquet")
    with pytest.raises(ValueError, match="missing column"):
        EmbeddingIndex.from_parquet(tmp_path / "nocol.parquet")
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "part.parquet", ["a", "b", "c"][:2], vectors[:2])
    (tmp_path / "d" / META_FILE).write_text('{"dim": 384}')
    with pytest.raises(ValueError, match="says dim 384 but the vectors have 4"):
        EmbeddingIndex.from_parquet(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="embed_catalog"):
        EmbeddingIndex.from_parquet(tmp_path / "absent")


def test_with_changes_adds_replaces_and_removes_without_touching_the_old_index(index):
    vector = np.zeros(index.dim, dtype=np.float32)
    vector[0] = 1.0
    first = index.product_ids[0]
    changed = index.with_changes([("new", vector, {"title": "a new one"}), (first, -vector, {"title": "changed"})],
                                 deletes=[index.product_ids[1]])
    assert "new" in changed and index.product_ids[1] not in changed and len(changed) == len(index)
    assert "new" not in index and index.product_ids[1] in index          # the old index is as it was
    assert changed.product("new")["title"] == "a new one" and changed.product(first)["title"] == "changed"
    assert changed.search(vector, 1)[0][0][0] == "new"
    np.testing.assert_allclose(changed.vector(first), -vector)


def test_catalog_changes_replay_in_order_and_skip_a_torn_last_line(tmp_path):
    from core import catalog_changes

    path = tmp_path / "changes.jsonl"
    catalog_changes.append(path, {"op": "upsert", "items": [{"item_id": "a", "text": "x"}, {"item_id": "b", "text": "y"}]})
    catalog_changes.append(path, {"op": "delete", "item_ids": ["a"]})
    with open(path, "a") as f:
        f.write('{"op": "upsert", "items": [{"item_id": "c"')     # a crash mid-write
    assert len(catalog_changes.read(path)) == 2
    catalog_changes.append(path, {"op": "delete", "item_ids": ["z"]})          # after the torn line: still read
    changes = catalog_changes.read(path)
    assert len(changes) == 3 and changes[-1]["item_ids"] == ["z"]
    changes = changes[:2]
    assert catalog_changes.replay({"z": {"item_id": "z", "text": "old"}}, changes) == {
        "z": {"item_id": "z", "text": "old"}, "b": {"item_id": "b", "text": "y"}}
