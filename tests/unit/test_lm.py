"""The generative model code (core/lm.py) on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import pytest
import torch

from core import lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return lm.load_lm(lm.TINY_LM, tmp_path_factory.mktemp("lm"))


def test_training_batch_puts_the_loss_on_the_answer_only(tiny):
    _, tok = tiny
    b = lm.training_batch(tok, ["short", "a somewhat longer prompt"], ["Yes.", "No thanks."], 64)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    for row in range(2):
        labelled = (b["labels"][row] != lm.IGNORE).nonzero().flatten().tolist()
        answer = tok.decode(b["input_ids"][row, labelled])
        assert answer.startswith(["Yes.", "No thanks."][row]) and answer.endswith("<|im_end|>")
        assert labelled == list(range(labelled[0], labelled[-1] + 1))  # one contiguous answer span
    cut = lm.training_batch(tok, ["p"], ["word " * 200], 40)
    assert cut["input_ids"].shape[1] == 40 and (cut["labels"] != lm.IGNORE).sum() > 0  # the prompt survives whole


def test_answer_loss_falls_when_training_on_one_answer(tiny):
    model, tok = tiny
    model = lm.attach_lora(model, lm.GenLora(r=4, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj")))
    batch = lm.training_batch(tok, ["say hi"], ["hi there"], 64)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    first, n = lm.answer_loss(model, batch)
    for _ in range(30):
        loss, _ = lm.answer_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert n == len(tok("hi there", add_special_tokens=False)["input_ids"]) + 1
    with torch.no_grad():
        assert float(lm.answer_loss(model, batch)[0]) < float(first.detach()) - 0.2
    model.unload()  # the base again, for the other tests


def test_generate_honours_each_prompts_limit_and_stream_yields_the_same_text(tiny):
    model, tok = tiny
    out = lm.generate(model, tok, ["one", "two two"], [3, 6], batch_size=2)
    assert [g.new_tokens <= limit for g, limit in zip(out, [3, 6])] == [True, True]
    assert all(g.finish_reason in ("stop", "length") for g in out)
    alone = lm.generate(model, tok, ["two two"], 6)[0]
    streamed = "".join(lm.stream(model, tok, "two two", 6))
    assert streamed.strip() == alone.text


def test_adapters_save_and_load_side_by_side(tiny, tmp_path):
    model, tok = tiny
    dirs = []
    for i, task in enumerate(("describe", "reply")):
        torch.manual_seed(i)
        peft = lm.attach_lora(model, lm.GenLora(r=2))
        for p in peft.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.5)
        dirs.append(lm.save_gen_adapter(peft, tmp_path / task, lm=lm.TINY_LM, task=task))
        peft.unload()
    assert lm.read_gen_meta(dirs[0]) == {"lm": lm.TINY_LM, "task": "describe"}
    served = lm.load_gen_adapter(model, dirs[0], lm.adapter_name("describe@v1"))
    served = lm.load_gen_adapter(served, dirs[1], lm.adapter_name("reply@v2"))
    x = lm.encode_prompts(tok, ["hello"], 64)
    logits = {}
    for name in ("describe_v1", "reply_v2"):
        served.set_adapter(name)
        logits[name] = served(**x).logits[0, -1]
    with served.disable_adapter():
        base = served(**x).logits[0, -1]
    assert not torch.allclose(logits["describe_v1"], logits["reply_v2"])
    assert not torch.allclose(base, logits["describe_v1"])
    with pytest.raises(lm.LMLoadError, match="not a generation adapter"):
        lm.read_gen_meta(tmp_path)


def test_answer_loss_equals_the_loss_over_every_position(tiny):
    model, tok = tiny
    batch = lm.training_batch(tok, ["a long prompt " * 5, "short"], ["first answer", "the second, longer answer"], 64)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(full.reshape(-1, full.shape[-1]), labels.reshape(-1),
                                                 ignore_index=lm.IGNORE)
    loss, n = lm.answer_loss(model, batch)
    assert n == int((labels != lm.IGNORE).sum())
    assert torch.allclose(loss, expected, atol=1e-5)
