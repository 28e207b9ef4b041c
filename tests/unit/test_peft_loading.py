"""A saved adapter loads with plain transformers + peft + safetensors on another machine (no Aisle
code), and predicts what Aisle predicts: the snippet of docs/serving.md."""

from __future__ import annotations

import json

import torch

from core import modeling
from core.modeling import AdapterMeta, LoraSpec


def _saved_minilm_adapter(tmp_path):
    meta = AdapterMeta(task="sentiment", labels=["negative", "neutral", "positive"], backbone="minilm", max_length=64,
                       lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = modeling.build_task_model(meta, seed=3)
    torch.manual_seed(5)
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter change something
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    modeling.save_adapter(model, meta, tmp_path / "adapter")
    return tmp_path / "adapter", meta


def test_an_adapter_loads_with_peft_alone_and_predicts_what_aisle_predicts(tmp_path):
    directory, meta = _saved_minilm_adapter(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    lora_config = json.loads((directory / "lora" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == lora_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"} and config["label2id"]["positive"] == 2

    # --- what a user elsewhere writes (the hub id replaced by the packaged copy: no internet here) ---
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    hub = str(modeling.backbone_path("minilm"))  # elsewhere: config["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(hub)
    encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(hub), str(directory / "lora")).eval()
    head = load_file(str(directory / "head.safetensors"))
    texts = ["The fabric is lovely and it fits well", "Fell apart after one wash"]
    batch = tokenizer(texts, truncation=True, max_length=config["max_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        probs = torch.softmax(pooled @ head["weight"].T + head["bias"], dim=-1).numpy()
    labels = [config["id2label"][str(i)] for i in probs.argmax(1)]
    # --- end of the user's code ---

    aisle_model, _ = modeling.load_adapter(directory)
    expected = modeling.predict_proba(aisle_model, modeling.load_tokenizer("minilm"), texts, meta.max_length)
    assert abs(probs - expected).max() < 1e-5
    assert labels == [meta.labels[i] for i in expected.argmax(1)]


def test_adapters_saved_with_a_torch_pickled_head_still_load(tmp_path):
    directory, _ = _saved_minilm_adapter(tmp_path)
    state = modeling.load_head_state(directory)
    torch.save(state, directory / "head.pt")
    (directory / "head.safetensors").unlink()
    model, _ = modeling.load_adapter(directory)
    assert torch.equal(model.head.state_dict()["1.weight"], state["1.weight"])
