"""Many adapters on one backbone give exactly what each adapter gives on its own backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import modeling, training
from core.adapter_bank import AdapterBank, make_bank
from core.modeling import AdapterMeta, LoraSpec

TEXTS = ["where is my order", "refund please", "love this dress", "too small", "navy sneakers size 10"]


def _adapter(tmp_path, name, seed, labels):
    meta = AdapterMeta(task="intent", labels=list(labels), backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = modeling.build_task_model(meta, seed=seed)
    torch.manual_seed(seed)
    for p in model.parameters():  # make each adapter (and head) distinct, as training would
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    path = tmp_path / name
    modeling.save_adapter(model, meta, path)
    return path


@pytest.fixture()
def adapters(tmp_path):
    return {f"intent@v{i}": _adapter(tmp_path, f"v{i}", seed=i, labels=["a", "b", "c"][: 2 + i % 2]) for i in (1, 2, 3)}


def _alone(path):
    model, meta = modeling.load_adapter(path)
    return modeling.predict_proba(model, modeling.load_tokenizer(meta.backbone), TEXTS, meta.max_length)


def test_each_adapter_matches_its_standalone_model(adapters):
    bank = AdapterBank(modeling.TINY_BACKBONE)
    for name, path in adapters.items():
        bank.load(name, path)
    assert bank.names() == list(adapters)
    for name, path in adapters.items():  # interleaved use: the active adapter switches every call
        np.testing.assert_allclose(bank.predict_proba(name, TEXTS), _alone(path), atol=1e-6)
    outputs = [bank.predict_proba(n, TEXTS) for n in adapters]
    assert not np.allclose(outputs[0], outputs[2])


@pytest.mark.parametrize("mode,int8", [("multi", False), ("multi", True), ("merged", False)])
def test_one_forward_over_mixed_adapters_gives_each_row_what_its_adapter_gives_alone(adapters, mode, int8):
    bank = make_bank(modeling.TINY_BACKBONE, mode=mode, int8=int8)
    for name, path in adapters.items():
        bank.load(name, path)
    names = list(adapters)
    # interleaved adapters, different label counts, an empty request, and batch_size 3 so that
    # some forwards hold one adapter and others several
    requests = [(names[0], TEXTS[:2]), (names[1], TEXTS[2:]), (names[2], []), (names[0], TEXTS[4:]),
                (names[2], TEXTS), (names[1], TEXTS[:1])]
    mixed = bank.predict_proba_many(requests, batch_size=3)
    assert len(mixed) == len(requests)
    # int8 quantizes activations with one scale per batch, so any change of batch mates moves its
    # results a little (one adapter or many alike); fp32 rows must match to float noise
    atol = 1e-3 if int8 else 1e-5
    for (name, inputs), got in zip(requests, mixed):
        alone = bank.predict_proba(name, inputs) if inputs else np.zeros((0, len(bank.meta(name).labels)))
        assert got.shape == alone.shape
        np.testing.assert_allclose(got, alone, atol=atol)
    assert mixed[4].shape[1] != mixed[1].shape[1]  # 2-label and 3-label heads in one forward


def test_mixed_forward_reaches_peft_with_every_rows_adapter(adapters, monkeypatch):
    """The mixed path is taken (not silently one adapter at a time) and pairs with text stay apart."""
    bank = AdapterBank(modeling.TINY_BACKBONE)
    for name, path in adapters.items():
        bank.load(name, path)
    seen = []
    forward = bank._encoder.forward
    monkeypatch.setattr(bank._encoder, "forward", lambda *a, **k: seen.append(k.get("adapter_names")) or forward(*a, **k))
    names = list(adapters)
    bank.predict_proba_many([(names[0], TEXTS[:2]), (names[1], TEXTS[:1])])
    assert seen == [[names[0], names[0], names[1]]]


def test_unload_keeps_the_others_right(adapters):
    bank = AdapterBank(modeling.TINY_BACKBONE)
    names = list(adapters)
    for name in names:
        bank.load(name, adapters[name])
    bank.predict_proba(names[0], TEXTS)
    bank.unload(names[0])  # the active one
    bank.unload("intent@v99")  # unknown: nothing to do
    with pytest.raises(KeyError, match="not loaded"):
        bank.predict_proba(names[0], TEXTS)
    np.testing.assert_allclose(bank.predict_proba(names[1], TEXTS), _alone(adapters[names[1]]), atol=1e-6)
    bank.load(names[0], adapters[names[0]])  # reload after eviction
    np.testing.assert_allclose(bank.predict_proba(names[0], TEXTS), _alone(adapters[names[0]]), atol=1e-6)


def test_backbone_mismatch_is_refused(adapters):
    bank = AdapterBank(modeling.TINY_BACKBONE)
    bank.backbone_name = "some-other-backbone"
    with pytest.raises(modeling.ModelLoadError, match="backbone"):
        bank.load("intent@v1", adapters["intent@v1"])


def test_merged_bank_matches_the_unmerged_adapter(adapters):
    bank = make_bank(modeling.TINY_BACKBONE, mode="merged")
    for name, path in adapters.items():
        bank.load(name, path)
    for name, path in adapters.items():
        np.testing.assert_allclose(bank.predict_proba(name, TEXTS), _alone(path), atol=1e-5)
    bank.unload("intent@v1")
    assert bank.names() == ["intent@v2", "intent@v3"]


@pytest.mark.parametrize("mode", ["multi", "merged"])
def test_int8_stays_close_to_fp32_and_quantizes(adapters, mode):
    bank = make_bank(modeling.TINY_BACKBONE, mode=mode, int8=True)
    for name, path in adapters.items():
        bank.load(name, path)
        int8 = bank.predict_proba(name, TEXTS)
        assert np.abs(int8 - _alone(path)).max() < 0.05
        assert (int8.argmax(1) == _alone(path).argmax(1)).mean() >= 0.8
    encoder = bank._encoder if mode == "multi" else bank._models["intent@v1"].encoder
    quantized = [n for n, m in encoder.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert quantized and all("intermediate" in n or ("output" in n and "attention" not in n) or mode == "merged"
                             for n in quantized)
    assert not any("lora" in n for n in quantized)


def test_int8_refuses_an_adapter_on_quantized_layers(tmp_path):
    meta = AdapterMeta(task="intent", labels=["a", "b"], backbone=modeling.TINY_BACKBONE, max_length=32,
                       lora=LoraSpec(r=4, alpha=8, target_modules=("query", "dense")))
    modeling.save_adapter(modeling.build_task_model(meta, seed=0), meta, tmp_path / "a")
    with pytest.raises(modeling.ModelLoadError, match="feed-forward"):
        make_bank(modeling.TINY_BACKBONE, int8=True).load("intent@v1", tmp_path / "a")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="serving mode"):
        make_bank(modeling.TINY_BACKBONE, mode="sharded")


def test_nbytes_counts_an_adapters_own_tensors(adapters):
    bank = make_bank(modeling.TINY_BACKBONE)
    for name, path in adapters.items():
        bank.load(name, path)
    # tiny BERT: hidden 32, 2 layers, LoRA r=4 on query and value -> 2 layers x 2 targets x (32x4 + 4x32)
    lora = 2 * 2 * (32 * 4 + 4 * 32)
    assert bank.nbytes("intent@v1") == 4 * (lora + 32 * 3 + 3)       # head: 3 labels
    assert bank.nbytes("intent@v2") == 4 * (lora + 32 * 2 + 2)       # head: 2 labels
    merged = make_bank(modeling.TINY_BACKBONE, mode="merged")
    merged.load("intent@v1", adapters["intent@v1"])
    assert merged.nbytes("intent@v1") > 50 * bank.nbytes("intent@v1")


def _retrained_top(tmp_path, path, name):
    """The adapter at `path` with its top layer's LoRA and its head changed, as a top-1 update would."""
    model, meta = modeling.load_adapter(path, trainable=True)
    torch.manual_seed(7)
    for n, p in model.named_parameters():
        if p.requires_grad and (modeling.layer_index(n) == 1 or n.startswith("head.")):
            p.data.add_(torch.randn_like(p) * 0.2)
    return modeling.save_adapter(model, meta, tmp_path / name)


def test_a_cached_prefix_gives_what_a_full_forward_gives_and_only_for_the_same_lower_layers(adapters, tmp_path):
    bank = AdapterBank(modeling.TINY_BACKBONE)
    assert bank.scores_from_prefix()
    paths = {**adapters, "intent@v1b": _retrained_top(tmp_path, adapters["intent@v1"], "v1b")}
    for name, path in paths.items():
        bank.load(name, path)
    full = {name: bank.predict_proba(name, TEXTS, batch_size=2) for name in paths}
    prefix, probs = bank.encode_prefix("intent@v1", TEXTS, start=1, batch_size=2)
    np.testing.assert_array_equal(probs, full["intent@v1"])
    assert len(prefix.batches) == 3 and prefix.nbytes() > 0
    assert bank.lower_key("intent@v1b", 1) == prefix.key != bank.lower_key("intent@v2", 1)
    assert bank.lower_key("intent@v1", 2) != bank.lower_key("intent@v1b", 2)  # below 2: layer 1 counts too
    from_prefix = bank.predict_proba_from("intent@v1b", prefix)  # only layer 1 ran, on float16 layer-0 states
    np.testing.assert_allclose(from_prefix, full["intent@v1b"], atol=2e-3)
    assert not np.allclose(from_prefix, full["intent@v1"], atol=1e-2)
    with pytest.raises(ValueError, match="differ from the cached prefix"):
        bank.predict_proba_from("intent@v2", prefix)
    with pytest.raises(ValueError, match="within 1..1"):
        bank.encode_prefix("intent@v1", TEXTS, start=2)
    for name in paths:  # the encoder's layers are all back: full forwards are unchanged
        np.testing.assert_array_equal(bank.predict_proba(name, TEXTS, batch_size=2), full[name])


@pytest.mark.parametrize("mode", ["multi", "merged"])
def test_cpu_bf16_autocast_stays_close_to_fp32_and_excludes_int8(adapters, mode):
    """cpu_bf16 (ServeConfig.cpu_bf16): the forward under bf16 autocast, weights fp32; probabilities
    within bf16's precision of the fp32 ones, on any CPU (emulated where it has no bf16 units)."""
    fp32, bf16 = make_bank(modeling.TINY_BACKBONE, mode=mode), make_bank(modeling.TINY_BACKBONE, mode=mode, cpu_bf16=True)
    for name, path in adapters.items():
        fp32.load(name, path)
        bf16.load(name, path)
    assert bf16.cpu_bf16 and not fp32.cpu_bf16
    for name in adapters:
        np.testing.assert_allclose(bf16.predict_proba(name, TEXTS), fp32.predict_proba(name, TEXTS), atol=2e-2)
    with pytest.raises(ValueError, match="choose one"):
        make_bank(modeling.TINY_BACKBONE, mode=mode, int8=True, cpu_bf16=True)
