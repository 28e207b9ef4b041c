"""The incremental update's pure parts: the newest-lists cap and the offline anchor lookup."""

from __future__ import annotations

import pandas as pd

from core.registry import AdapterRegistry
from train.incremental import newest_lists, offline_anchor


def test_newest_lists_keeps_whole_newest_lists_within_the_cap():
    frame = pd.DataFrame({"query_id": ["a"] * 3 + ["b"] * 4 + ["c"] * 2, "x": range(9)})
    assert newest_lists(frame, 20).equals(frame)
    kept = newest_lists(frame, 6)  # c (2) + b (4): a would pass the cap
    assert list(kept["query_id"].unique()) == ["b", "c"] and len(kept) == 6
    assert list(newest_lists(frame, 1)["query_id"]) == ["c", "c"]  # the newest list stays whole


def test_offline_anchor_is_the_newest_offline_version(tmp_path):
    registry = AdapterRegistry(tmp_path)
    for trigger in ("offline", "stream", "offline", "stream"):
        registry.create_version("relevance", lambda d: (d / "adapter").mkdir(), config={}, metrics={},
                                lineage={"trigger": trigger})
    assert offline_anchor(registry, "relevance").version == "v3"
