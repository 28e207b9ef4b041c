"""Unit tests of the click layer's durable shell (core.click_layer): a crash between checkpoints
loses nothing and audits nothing twice; admin operations survive a crash; the catalog loader."""

from __future__ import annotations

import pandas as pd
import pytest
from click_world import Shoppers, products

from core import audit
from core.click_config import ClickModelConfig
from core.click_layer import OnlineLayer, read_product_catalog
from core.click_model import catalog_for


def layer(tmp_path, cfg: ClickModelConfig | None = None) -> OnlineLayer:
    cfg = cfg or ClickModelConfig(max_query_sessions=0)  # the test world's shoppers repeat their searches
    return OnlineLayer(cfg, catalog_for(products(), cfg), tmp_path / "click")


def navy_stream(n: int = 700) -> list[dict]:
    shoppers = Shoppers(seed=9, queries=("running shoes", "walking shoes", "t-shirt"), pinned=("F000", 1.8))
    shoppers.prefer = lambda p, segment: 3.0 if p["colour"] == "navy" else 1.0
    return shoppers.stream(n)


def test_a_crash_after_a_checkpoint_replays_the_log_to_the_same_snapshot_and_audits_once(tmp_path):
    records = navy_stream()
    straight = layer(tmp_path / "a")
    straight.observe(records)
    expected = straight.publish()
    assert expected.effects, "the stream must teach something, or the comparison means nothing"

    crashed = layer(tmp_path / "b")
    crashed.observe(records[:2000])
    crashed.checkpoint()
    crashed.observe(records[2000:4000])  # read, audited, not checkpointed: then the process dies
    lines_before = audit.read(crashed.audit_path)

    restarted = layer(tmp_path / "b")
    assert restarted.restored_offset == 2000 and restarted.offset == 2000
    restarted.observe(records[restarted.offset:])  # the actor reads the log from the checkpoint's offset
    assert restarted.publish().to_bytes() == expected.to_bytes()
    lines = audit.read(restarted.audit_path)
    assert lines[:len(lines_before)] == lines_before
    ids = [(r["offset"], r["key"], r["decision"]) for r in lines]
    assert len(ids) == len(set(ids))  # decisions the replay made again are not written twice
    assert [(r["offset"], r["key"], r["decision"]) for r in audit.read(straight.audit_path)] == ids


def test_publish_rebuilds_only_when_the_offset_or_an_admin_operation_moved(tmp_path):
    online = layer(tmp_path)
    records = navy_stream(300)
    online.observe(records)
    first = online.publish()
    assert online.publish() is first
    online.observe(records)  # all replayed: nothing new
    assert online.publish() is first
    online.set_enabled(False)
    assert online.publish().version != first.version and not online.publish().enabled


def test_admin_operations_are_checkpointed_and_survive_a_crash(tmp_path):
    online = layer(tmp_path)
    online.observe(navy_stream())
    key, effect = max(online.publish().effects, key=lambda e: e[1])
    assert effect > 0
    online.freeze(key, "looks like a promotion gone wrong")
    restarted = layer(tmp_path)
    assert restarted.publish().effect(key) == 0.0
    assert key in restarted.status()["frozen_keys"]
    last = audit.read(restarted.audit_path)[-1]
    assert (last["decision"], last["key"], last["reason"]) == ("frozen", key, "admin: looks like a promotion gone wrong")
    restarted.clear(key)
    assert key not in layer(tmp_path).status()["frozen_keys"]


def test_status_names_the_snapshot_keys_and_counts(tmp_path):
    online = layer(tmp_path)
    records = navy_stream(400)
    online.observe(records)
    status = online.status()
    assert status["offset"] == len(records) and status["snapshot"] == f"{len(records)}.0"
    assert status["counts"]["impression"] > 0 and status["active_keys"] == len(online.publish().effects)


def test_catalog_loader_treats_placeholders_as_missing_and_names_absent_columns(tmp_path):
    rows = pd.DataFrame(products()).assign(product_type=lambda d: d["product_id"].map(lambda p: "shoe"))
    rows.loc[0, "colour"] = "n/a"
    (tmp_path / "catalog").mkdir()
    rows.to_parquet(tmp_path / "catalog" / "products.parquet")
    catalog = read_product_catalog(str(tmp_path / "catalog"), ClickModelConfig())
    first = rows.loc[0, "product_id"]
    assert not any("colour=" in k for k in catalog.keys("footwear", first))
    assert any("colour=" in k for k in catalog.keys("footwear", rows.loc[1, "product_id"]))
    with pytest.raises(ValueError, match="no column fabric"):
        read_product_catalog(str(tmp_path / "catalog"), ClickModelConfig(attribute_fields=["fabric"]))


def test_suspect_accounts_are_those_behind_keys_frozen_as_attacks(tmp_path):
    online = layer(tmp_path)
    online.observe(navy_stream(400))
    keys = sorted(online.model.keys, key=lambda k: -len(online.model.keys[k].users))
    attacked, operator = [k for k in keys if "|" in k][:2]
    credited = set(online.model.keys[attacked].users)
    online.model.guard.freeze(attacked, "no_conversions: test", online.offset)
    model = online.model  # what the model does when its guard freezes a key as an attack:
    model._quarantined(model.quarantine.on_freeze(attacked, "no_conversions", model.keys, model.units, model.guard,
                                                  online.offset))
    online.freeze(operator, "not an attack")  # an operator's freeze says nothing about the accounts
    suspects = online.suspect_accounts()
    assert set(suspects) == credited - set(online.model.buyers) and suspects
    assert not set(suspects) & set(online.model.keys[attacked].users)  # their evidence is taken out
    assert all(keys == [attacked] for keys in suspects.values())
