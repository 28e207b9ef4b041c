"""The recommend model and its live index on the tiny random backbone: save/load round trip, the
in-batch loss, a new product recommendable through its text alone, deletes, and a click that
changes the next answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core import modeling as Mo
from core import rec_model as R
from core.rec_index import RecIndex, stored_histories

ITEMS = pd.DataFrame({"item_id": [f"i{k}" for k in range(12)],
                      "text": [("red " if k < 6 else "blue ") + f"mug number {k}" for k in range(12)]})


def _model(seed: int = 0) -> R.RecModel:
    meta = R.RecMeta(backbone=Mo.TINY_BACKBONE, max_length=16, dim=16, history=5, top_layers=1)
    model = R.build(meta, ITEMS["item_id"].tolist(), seed=seed)
    with torch.no_grad():   # trained-looking towers: id embeddings away from zero
        model.item_in.weight[:-1].normal_(0, 1, generator=torch.Generator().manual_seed(seed))
        model.item_out.weight[:-1].normal_(0, 1, generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()


def _index(model=None) -> RecIndex:
    model = model or _model()
    events = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["i0", "i1", "i2"]})
    return RecIndex(model, Mo.load_tokenizer(Mo.TINY_BACKBONE), ITEMS, stored_histories(events, 5))


def test_save_and_load_give_the_same_scores(tmp_path):
    model = _model()
    tok = Mo.load_tokenizer(Mo.TINY_BACKBONE)
    before = R.RecScorer(model, tok, ITEMS["item_id"].tolist(), ITEMS["text"].tolist())([[0, 1], [5]])
    R.save(model, tmp_path / "adapter")
    loaded = R.load(tmp_path / "adapter")
    after = R.RecScorer(loaded, tok, ITEMS["item_id"].tolist(), ITEMS["text"].tolist())([[0, 1], [5]])
    np.testing.assert_allclose(before, after, atol=1e-5)
    assert R.is_recommend_adapter(tmp_path / "adapter") and (tmp_path / "adapter" / "lora").is_dir()


def test_in_batch_loss_does_not_count_a_copy_of_the_target_as_a_negative():
    user = torch.eye(3)
    items = torch.eye(3)[[0, 1, 0]]
    targets = torch.tensor([4, 7, 4])
    log_q = torch.zeros(10)
    copies = R.in_batch_loss(user, items, targets, log_q, torch.tensor(10.0))
    distinct = R.in_batch_loss(user, items, torch.tensor([4, 7, 5]), log_q, torch.tensor(10.0))
    assert copies < distinct


def test_stored_history_and_a_click_change_the_answer():
    index = _index()
    stored = index.stored_history("u")
    assert stored == ["i0", "i1", "i2"]
    first = index.recommend(stored, 5)
    after_click = index.recommend(stored + ["i9"], 5)
    assert len(first) == 5 and [i for i, _ in first] != [i for i, _ in after_click]
    assert index.recommend([], 5) == [] and index.recommend(["unknown"], 5) == []


def test_a_new_product_is_recommendable_through_its_text_and_deletes_are_total():
    index = _index()
    index.upsert([("new", "red mug number 1 deluxe")])
    assert "new" in index and len(index) == 13
    assert index.similar(["new"], 3) and all(i != "new" for i, _ in index.similar(["new"], 3))
    scores = dict(index.recommend(["i0"], 13))
    assert "new" in scores and np.isfinite(scores["new"])
    index.upsert([("i3", "a changed text")])       # a changed text: same id, new vector
    assert len(index) == 13 and index.text("i3") == "a changed text"
    assert index.delete(["new", "nope"]) == 1
    assert "new" not in index and all(i != "new" for i, _ in index.recommend(["i0"], 12))


def test_a_product_new_to_the_model_gets_its_text_alone():
    model = _model()
    index = _index(model)
    index.upsert([("fresh", ITEMS["text"][4])])
    pad = len(model.item_ids)
    assert float(model.item_out.weight[pad].detach().abs().sum()) == 0.0    # the unseen-item row stays zero
    with pytest.raises(KeyError):
        index.text("missing")
