"""The recommend task through the CLI alone, on a shop log with its own column names and a separate
item table (not the retail log's layout), then served: trained recommendations per shopper, similar
items, catalog upserts and deletes, and the 4xx answers of bad bodies."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serve_helpers import running_app, wait_for
from core.registry import ADAPTER_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "recommend-admin"
COLUMNS = ["sources.recommend.columns.user=shopper", "sources.recommend.columns.item=sku",
           "sources.recommend.columns.timestamp=placed_at", "sources.recommend.columns.basket=order_ref",
           "sources.recommend.columns.quantity=units", "sources.recommend.item_columns.id=sku",
           "sources.recommend.item_columns.text=[name,details]", "sources.recommend.cancel_prefix=null",
           "sources.recommend.non_product_items=[SHIPPING]"]
TINY = ["model.backbone=tiny-random-bert", "model.dim=32", "train.epochs=1", "train.batch_size=32",
        "train.refresh_every=5", "train.max_eval_users=50"]


def _shop(tmp: Path) -> tuple[Path, Path, Path]:
    """A log of 60 shoppers over 40 products (two taste groups), a later month, an item table."""
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"sku": [f"S{i:03d}" for i in range(40)],
                          "name": [("garden " if i < 20 else "kitchen ") + f"thing {i}" for i in range(40)],
                          "details": ["green outdoor" if i < 20 else "steel indoor" for i in range(40)]})
    rows = []
    for u in range(60):
        group = range(20) if u % 2 else range(20, 40)
        t = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(u))
        for k in range(8):
            rows.append({"shopper": f"c{u}", "sku": f"S{rng.choice(list(group)):03d}", "units": 1,
                         "placed_at": (t + pd.Timedelta(days=k)).isoformat(), "order_ref": f"o{u}-{k}"})
    rows += [{"shopper": "c1", "sku": "SHIPPING", "units": 1, "placed_at": "2024-01-02", "order_ref": "o1-x"},
             {"shopper": "", "sku": "S001", "units": 1, "placed_at": "2024-01-02", "order_ref": "o-anon"},
             {"shopper": "c2", "sku": "S021", "units": -1, "placed_at": "2024-01-05", "order_ref": "o2-r"},
             {"shopper": "c3", "sku": "NOPE", "units": 1, "placed_at": "2024-01-05", "order_ref": "o3-y"}]
    log = pd.DataFrame(rows)
    later = pd.DataFrame([{"shopper": f"c{u}", "sku": f"S{(u % 2) * 0 + (5 if u % 2 else 25):03d}", "units": 1,
                           "placed_at": "2024-03-01", "order_ref": f"later-{u}"} for u in range(20)])
    (tmp / "shop").mkdir()
    log.to_csv(tmp / "shop" / "orders.csv", index=False)
    later.to_csv(tmp / "shop" / "orders_march.csv", index=False)
    items.to_json(tmp / "shop" / "items.jsonl", orient="records", lines=True)
    return tmp / "shop" / "orders.csv", tmp / "shop" / "orders_march.csv", tmp / "shop" / "items.jsonl"


def _aisle(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """The `aisle` command in its own process (its own Ray, when it starts one)."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    return subprocess.run([sys.executable, "-m", "aisle.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _aisle_here(*args: str) -> subprocess.CompletedProcess:
    """The same command line through `aisle.cli.main` in this process, on the tests' Ray session (a
    process of its own would spend ~15 s starting a Ray of its own for each command)."""
    from aisle.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["aisle", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recommend")
    log, later, items = _shop(tmp)
    prepared, registry = tmp / "prepared", tmp / "app" / "registry"
    out = _aisle_here("prepare", "tasks=[recommend]", f"output_dir={prepared}", f"sources.recommend.log={log}",
                      f"sources.recommend.items={items}", *COLUMNS)
    assert out.returncode == 0, out.stderr[-2000:]
    out_train = _aisle_here("train", "recommend", f"data_dir={prepared}", f"registry={registry}",
                            f"storage_path={tmp / 'runs'}", *TINY)
    assert out_train.returncode == 0, out_train.stderr[-2000:]
    return {"tmp": tmp, "prepared": prepared, "registry": registry, "later": later, "log": log,
            "prepare_out": out.stdout, "train_out": out_train.stdout}


def test_prepare_counts_every_dropped_row_by_reason(trained):
    report = json.loads((trained["prepared"] / "recommend" / "report.json").read_text())
    assert report["dropped"] == {"missing_user": 1, "cancellation": 1, "non_product": 1, "unknown_item": 1}
    assert report["rows_read"] == 60 * 8 + 4
    assert report["kept"]["val"] == report["kept"]["test"] == 60     # every shopper has 8 purchases
    assert "recommend" in trained["prepare_out"] and "non_product=1" in trained["prepare_out"]
    rejected = pd.read_parquet(trained["prepared"] / "recommend" / "rejected")
    assert sorted(rejected["drop_reason"]) == ["cancellation", "missing_user", "non_product", "unknown_item"]


def test_train_registers_a_current_recommend_version(trained):
    assert "registered recommend@v1" in trained["train_out"]
    assert (trained["registry"] / "recommend" / "v1" / ADAPTER_DIR / "recommend_meta.json").is_file()


def test_evaluate_scores_a_later_log_beside_every_baseline(trained):
    tmp = trained["tmp"]
    args = ["evaluate", "recommend", f"data_dir={trained['prepared']}", f"registry={trained['registry']}",
            f"later_log={trained['later']}", *[c.replace("sources.recommend.", "source.") for c in COLUMNS
                                               if "item_columns" not in c],
            "reuse=true", f"cache_dir={tmp / 'cache'}"]
    out = _aisle_here(*args, f"output={tmp / 'eval_first.json'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "later log" in out.stdout
    for scorer in ("model", "popularity", "repeat", "item-knn", "zero-shot"):
        assert any(line.split()[:2] == [scorer, "all"] and line.split()[2] == "20" for line in out.stdout.splitlines()), \
            out.stdout
    # the same inputs again: the kept result, its table and its output file, without evaluating
    again = _aisle_here(*args, f"output={tmp / 'eval_again.json'}")
    assert again.returncode == 0 and "[recommend] reusing the evaluation of recommend@v1" in again.stdout
    assert json.loads((tmp / "eval_again.json").read_text()) == json.loads((tmp / "eval_first.json").read_text())


def test_a_missing_column_is_one_line_and_exit_2(trained):
    out = _aisle("prepare", "tasks=[recommend]", f"output_dir={trained['tmp'] / 'bad'}",
                 f"sources.recommend.log={trained['log']}", *COLUMNS, "sources.recommend.columns.user=customer")
    assert out.returncode == 2
    assert "customer" in out.stderr and "Traceback" not in out.stderr
    assert not (trained["tmp"] / "bad" / "recommend").exists()


@pytest.fixture(scope="module")
def server(ray_session, trained):
    with running_app(trained["tmp"] / "app", serve_args={"data_dir": str(trained["prepared"]),
                                                         "admin_token": ADMIN}) as app:
        yield app


def test_a_shopper_gets_the_trained_models_recommendations(server):
    client, _, _ = server
    r = client.post("/v1/recommend", json={"user_id": "c1", "k": 5})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "recommend:v1" and len(r.json()["products"]) == 5
    similar = client.post("/v1/recommend", json={"product_ids": ["S001"], "k": 3}).json()
    assert similar["model"] == "recommend:v1" and "S001" not in [p["product_id"] for p in similar["products"]]


def test_a_new_product_is_recommendable_at_once_and_gone_after_delete(server):
    client, _, _ = server
    auth = {"Authorization": f"Bearer {ADMIN}"}
    before = client.post("/v1/search", json={"query": "garden thing new green", "k": 50}).json()["products"]
    assert "NEW1" not in [p["product_id"] for p in before]   # this query's first stage is now cached...
    r = client.post("/v1/products", headers=auth,
                    json={"products": [{"product_id": "NEW1", "title": "garden thing new", "description": "green"}]})
    assert r.status_code == 200, r.text
    # recommend: the shop's 40 items and the search catalog's 120 products (one shop, one catalog), + 1
    assert r.json()["catalogs"] == {"recommend": 161, "search": 121}
    assert client.post("/v1/recommend", json={"product_ids": ["NEW1"], "k": 3}).json()["model"] == "recommend:v1"
    hits = client.post("/v1/search", json={"query": "garden thing new green", "k": 50}).json()["products"]
    assert "NEW1" in [p["product_id"] for p in hits]   # ...and forgotten by the catalog change
    assert client.delete("/v1/products/NEW1", headers=auth).json()["removed"] == 2
    assert client.post("/v1/recommend", json={"product_ids": ["NEW1"], "k": 3}).status_code == 404
    hits = client.post("/v1/search", json={"query": "garden thing new green", "k": 50}).json()["products"]
    assert "NEW1" not in [p["product_id"] for p in hits]
    assert client.delete("/v1/products/NEW1", headers=auth).status_code == 404


@pytest.mark.parametrize("payload,status,field", [
    ({"products": []}, 422, "products"),
    ({"products": [{"product_id": "X", "title": "  "}]}, 422, "products.0.title"),
    ({"products": [{"product_id": "X"}]}, 422, "products.0.title"),
    ({"products": [{"product_id": "X", "title": "a", "colour": "red"}]}, 422, "products.0.colour"),
    ({"products": [{"product_id": "X", "title": "a"}, {"product_id": "X", "title": "b"}]}, 422, "products"),
])
def test_bad_product_bodies_get_422_naming_the_field(server, payload, status, field):
    client, _, _ = server
    r = client.post("/v1/products", headers={"Authorization": f"Bearer {ADMIN}"}, json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


def test_catalog_changes_need_the_admin_token(server):
    client, _, _ = server
    r = client.post("/v1/products", json={"products": [{"product_id": "X", "title": "a"}]})
    assert r.status_code == 401 and r.json()["field"] == "authorization"


def test_the_stream_trains_gates_and_promotes_recommend_updates_and_a_killed_updater_resumes(trained, tmp_path):
    """Shoppers' clicks in the FeedbackLog become next-item examples; the RecUpdater trains a
    candidate from CURRENT, gates it, audits and promotes it; killed, it resumes from its committed
    offset with the shoppers' trails as they were."""
    import shutil

    import ray

    from actors.feedback_log import FEEDBACK_LOG_NAME, NAMESPACE, get_or_create_feedback_log
    from actors.rec_updater import RECOMMENDER_NAME, can_learn, get_or_create_rec_updater
    from core import audit
    from core.config import load_config
    from core.registry import AdapterRegistry
    from core.stream_config import StreamConfig

    shutil.copytree(trained["registry"], tmp_path / "registry")   # the module's server keeps its own CURRENT
    cfg = load_config(StreamConfig, None, [
        f"log_dir={tmp_path / 'log'}", f"updates_dir={tmp_path / 'updates'}", f"audit_log={tmp_path / 'audit.jsonl'}",
        f"registry={tmp_path / 'registry'}", f"data_dir={trained['prepared']}", f"catalog_dir={tmp_path / 'none'}",
        "recommend.min_examples=40", "recommend.min_holdout=2", "recommend.cooldown_s=0", "recommend.poll_s=0.2",
        "recommend.tolerance=1.0", "recommend.offline_users=30", "recommend.batch_size=16", "recommend.max_wait_s=5"])
    assert can_learn(cfg) is None
    assert "enabled is false" in can_learn(load_config(StreamConfig, None, ["recommend.enabled=false"]))
    log = get_or_create_feedback_log(cfg.log_dir, cfg.salt)

    def clicks(users, start, n=6):
        rng = np.random.default_rng(start)
        out = []
        for u in users:
            group = range(20) if u % 2 else range(20, 40)
            for k in range(n):
                out.append({"event_id": f"e{start}-{u}-{k}", "ts": 1.7e9 + start + k, "user_id": f"s{u}",
                            "session_id": f"s{u}-{start}", "type": "click", "product_id": f"S{rng.choice(list(group)):03d}"})
        return out

    registry = AdapterRegistry(cfg.registry)
    try:
        updater = get_or_create_rec_updater(cfg)
        ray.get(log.append.remote(clicks(range(20), 0)))
        decided = wait_for(lambda: audit.read(cfg.recommend_audit_log), 180, "the first recommend update")
        first = decided[0]
        assert first["decision"] == "promoted", first
        assert first["examples"]["train"] >= 40 and first["window"]["fresh_examples"] >= 2
        assert registry.current("recommend") == first["candidate"].split("@")[1] == "v2"
        assert registry.get("recommend", "v2").lineage["trigger"] == "stream"
        status = ray.get(updater.status.remote())
        assert status["offset"] == ray.get(log.stats.remote())["end_offset"] and status["shoppers"] == 20

        ray.kill(updater, no_restart=False)   # restarted by Ray: trails and offset from disk
        ray.get(log.append.remote(clicks(range(20), 100, n=3)))
        decided = wait_for(lambda: audit.read(cfg.recommend_audit_log)[1:], 180, "the update after the restart")[0]
        # every one of the 60 new clicks continues a trail saved before the kill: an example each
        # (unless it repeats the shopper's previous item)
        assert decided["decision"] in ("promoted", "rejected") and decided["parent"] == "recommend@v2"
        window = decided["window"]
        assert window["new_train_examples"] + window["new_fresh_examples"] + window["skipped"]["repeat"] == 60
        assert decided["examples"]["train"] == first["examples"]["train"] + window["new_train_examples"]  # rolling
    finally:
        for name in (RECOMMENDER_NAME, FEEDBACK_LOG_NAME):
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)



def test_item_vectors_by_a_ray_data_job_are_what_the_index_would_compute(trained, tmp_path):
    """`aisle embed recommend` writes every serving item's vectors (an actor pool on the tests' Ray);
    a RecIndex given them reuses every one and answers as one that embedded the catalog itself."""
    from core import modeling as Mo
    from core import rec_model as R
    from core.rec_index import RecIndex
    from data_pipelines.interactions import serving_items
    from data_pipelines.rec_item_vectors import read_vectors

    out = _aisle_here("embed", "recommend", f"registry={trained['registry']}", f"data_dir={trained['prepared']}",
                      "catalog_dir=null", f"output={tmp_path / 'vectors'}", "cpus_per_actor=0.5", "batch_size=16")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "embedded 40 items with recommend@v1" in out.stdout
    vectors = read_vectors(str(tmp_path / "vectors"), str(trained["registry"]), "v1")
    assert vectors is not None and len(vectors) == 40
    assert read_vectors(str(tmp_path / "vectors"), str(trained["registry"]), "v2") is None   # another version's
    assert read_vectors(str(tmp_path / "vectors"), str(tmp_path / "elsewhere"), "v1") is None  # another registry's
    model = R.load(trained["registry"] / "recommend" / "v1" / ADAPTER_DIR)
    tokenizer, items = Mo.load_tokenizer(model.meta.backbone), serving_items(str(trained["prepared"]))
    fast, slow = RecIndex(model, tokenizer, items, precomputed=vectors), RecIndex(model, tokenizer, items)
    assert fast.reused == 40 and slow.reused == 0
    history = ["S001", "S005", "S007"]
    got, want = fast.recommend(history, 5), slow.recommend(history, 5)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
    changed = items.assign(text=items["text"].where(items["item_id"] != "S003", "a new text"))
    assert RecIndex(model, tokenizer, changed, precomputed=vectors).reused == 39   # a changed text is embedded again


def test_a_promotion_is_served_after_a_background_reload_and_answers_never_stop(server, trained):
    """A new CURRENT is picked up within seconds; while its index is built, the old one keeps answering."""
    import shutil

    from core.registry import AdapterRegistry

    client, _, _ = server
    registry = AdapterRegistry(trained["registry"])
    source = registry.local_dir("recommend", "v1") / "adapter"
    info = registry.create_version("recommend", lambda d: shutil.copytree(source, d / ADAPTER_DIR),
                                   config=registry.get("recommend", "v1").config, metrics={},
                                   lineage={"trigger": "test", "parent": "v1"})
    registry.promote("recommend", info.version, reason="test: reload")
    seen = set()

    def served_new() -> bool:
        r = client.post("/v1/recommend", json={"product_ids": ["S001"], "k": 3})
        assert r.status_code == 200, r.text   # never an error while the next index is built
        seen.add(r.json()["model"])
        return r.json()["model"] == f"recommend:{info.version}"

    wait_for(served_new, 60, f"recommend:{info.version} to be served")
    assert seen <= {"recommend:v1", f"recommend:{info.version}"}
