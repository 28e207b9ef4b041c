"""Continuous batching (core/decoding.py, serve/decode_loop.py) on a tiny random Llama: rows that join
and leave a running decode get exactly the answers `core.lm.generate` gives them alone."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import torch

from core import lm
from core.decoding import DecodeBatch
from serve.decode_loop import DecodeLoop

PROMPTS = ["say hi", "Describe a red leather boot with a rubber sole.", "x", "Summarize: the zip broke after a week",
           "say hi", "What does the blue mug with the long handle cost?", "ok", "Write a reply to a late parcel"]
LIMITS = [12, 9, 1, 20, 5, 14, 3, 16]


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """The tiny LM with a LoRA adapter taught one line (so answers vary from token to token), its
    end-of-turn token made as likely as a token some answers produce (so some rows stop before their
    limit and others run to it)."""
    torch.manual_seed(0)
    model, tok = lm.load_lm(lm.TINY_LM, tmp_path_factory.mktemp("lm"))
    model = lm.attach_lora(model, lm.GenLora(r=4, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj")))
    batch = lm.training_batch(tok, ["say hi"], ["hi there"], 64)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(40):
        loss, _ = lm.answer_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        answers = [model.generate(**lm.encode_prompts(tok, [p], 384), max_new_tokens=20, do_sample=False,
                                  eos_token_id=-1, pad_token_id=0)[0, -20:].tolist() for p in PROMPTS]
        later = Counter(t for a in answers for t in a[3:])
        weights = model.get_output_embeddings().weight
        rarest = weights[later.most_common()[-1][0]].clone()   # the rarest later token: only some answers
        # how much more likely than it the end of turn must be for some rows, not all, to stop depends
        # on the versions of torch and transformers (3x once; 1.04-1.16x with transformers 5.25): the
        # first scale at which the rows' answers mix both endings
        for scale in (3.0, 2.0, 1.5, *(1 + i / 50 for i in range(16))):
            weights[lm.end_of_turn(tok)] = rarest * scale
            alone = _alone(model, tok)
            if {g.finish_reason for g in alone} == {"stop", "length"} and len({g.text for g in alone}) > 3:
                return model, tok
    pytest.fail("no end-of-turn scale gives answers that both stop and run to their limits")


def _alone(model, tok, prompts=PROMPTS, limits=LIMITS):
    return [lm.generate(model, tok, [p], limit, batch_size=1)[0] for p, limit in zip(prompts, limits)]


def test_rows_joining_and_leaving_a_running_decode_get_their_answers_alone(taught):
    model, tok = taught
    expected = _alone(model, tok)
    assert {g.finish_reason for g in expected} == {"stop", "length"}
    assert len({g.text for g in expected}) > 3
    batch, got, streamed = DecodeBatch(model, tok), {}, {i: "" for i in range(len(PROMPTS))}

    def collect(finished):
        for f in finished:
            got[f.tag] = f.generation
            streamed[f.tag] += f.rest
        for tag, piece in batch.pieces():
            streamed[tag] += piece

    widths = []
    for group in ([0, 1], [2], [3, 4, 5], [6, 7]):  # joins at different steps, with prompts of other lengths
        collect(batch.admit([PROMPTS[i] for i in group], [LIMITS[i] for i in group], group))
        for _ in range(2):
            collect(batch.step())
            widths.append(batch.mask.shape[1] if len(batch) else 0)
    while len(batch):
        collect(batch.step())
    assert set(got) == set(range(len(PROMPTS)))
    for i, want in enumerate(expected):
        assert (got[i].text, got[i].new_tokens, got[i].finish_reason, got[i].prompt_tokens) == \
               (want.text, want.new_tokens, want.finish_reason, want.prompt_tokens), i
        assert streamed[i].strip() == want.text
    assert batch.cache is None and batch.mask is None  # nothing held once every row left


def test_the_loop_batches_concurrent_callers_one_adapter_at_a_time(taught):
    model, tok = taught
    base_answers = {}
    with model.disable_adapter():
        base_answers = {i: g for i, g in enumerate(_alone(model, tok))}
    tuned_answers = dict(enumerate(_alone(model, tok)))
    started: list[str] = []

    class Switching:  # "tuned" decodes with the adapter, "base" without: the two must never share a decode
        def __init__(self):
            self.ctx = None

        def __call__(self, model_id):
            started.append(model_id)
            if self.ctx is not None:
                self.ctx.__exit__(None, None, None)
                self.ctx = None
            if model_id == "base":
                self.ctx = model.disable_adapter()
                self.ctx.__enter__()
            return DecodeBatch(model, tok)

    switching = Switching()

    async def scenario():
        loop = DecodeLoop(switching, asyncio.Lock(), max_batch=4, wait_s=0.001)
        calls = [loop.generate("tuned" if i % 3 else "base", p, limit)
                 for i, (p, limit) in enumerate(zip(PROMPTS, LIMITS))]

        async def streamed(i):
            return "".join([piece async for piece in loop.stream("tuned", PROMPTS[i], LIMITS[i])])

        results = await asyncio.gather(*calls, streamed(1), streamed(0))
        return loop, results

    loop, results = asyncio.run(scenario())
    if switching.ctx is not None:
        switching.ctx.__exit__(None, None, None)
    for i, g in enumerate(results[: len(PROMPTS)]):
        want = (base_answers if i % 3 == 0 else tuned_answers)[i]
        assert (g.text, g.new_tokens, g.finish_reason) == (want.text, want.new_tokens, want.finish_reason), i
    assert results[-2].strip() == tuned_answers[1].text and results[-1].strip() == tuned_answers[0].text
    assert started[0] == "base" and "tuned" in started
    st = loop.stats
    assert st.admitted == len(PROMPTS) + 2 and st.switches == len(started)
    assert st.rows > st.steps  # rows shared decode steps
    assert max(st.recent) <= 4


def test_a_failing_decode_fails_its_callers_and_the_loop_goes_on(taught):
    model, tok = taught

    def new_batch(model_id):
        if model_id == "broken":
            raise RuntimeError("adapter broken@v1 was unloaded")
        return DecodeBatch(model, tok)

    async def scenario():
        loop = DecodeLoop(new_batch, asyncio.Lock(), max_batch=4, wait_s=0.001)
        broken = loop.generate("broken", "x", 3)
        fine = loop.generate("fine", "ok", 3)
        return await asyncio.gather(broken, fine, return_exceptions=True)

    broken, fine = asyncio.run(scenario())
    assert isinstance(broken, RuntimeError) and "unloaded" in str(broken)
    # The other caller's answer is the one it gets alone (whether "ok" stops before 3 tokens or runs to
    # them depends on the CPU's arithmetic: an AVX2-only EPYC stops it at 2).
    want = _alone(model, tok, ["ok"], [3])[0]
    assert (fine.text, fine.new_tokens, fine.finish_reason) == (want.text, want.new_tokens, want.finish_reason)
    assert 1 <= fine.new_tokens <= 3
