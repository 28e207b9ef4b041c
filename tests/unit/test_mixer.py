"""The replica's _Mixer: the per-adapter parts of one batch become one bank call, and a part whose
adapter fails gets its own error while the others get their answers."""

from __future__ import annotations

import asyncio

import pytest

from serve.model_server import _Mixer


def _bank(calls: list, broken: set[str] = frozenset()):
    def predict_many(requests):
        calls.append([m for m, _ in requests])
        for model_id, _ in requests:
            if model_id in broken:
                raise KeyError(f"adapter {model_id} is not loaded")
        return [[f"{model_id}:{x}" for x in inputs] for model_id, inputs in requests]
    return predict_many


def test_parts_started_in_one_turn_share_one_call():
    calls = []
    mixer = _Mixer(_bank(calls))

    async def main():
        # as Serve starts a split batch: every part a task created in the same turn
        tasks = [asyncio.create_task(mixer.submit(m, x)) for m, x in (("a@v1", [1, 2]), ("b@v1", [3]), ("a@v2", [4]))]
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [["a@v1:1", "a@v1:2"], ["b@v1:3"], ["a@v2:4"]]
    assert calls == [["a@v1", "b@v1", "a@v2"]]
    assert (mixer.calls, mixer.mixed_calls) == (1, 1)


def test_a_failing_adapter_fails_only_its_own_part():
    calls = []
    mixer = _Mixer(_bank(calls, broken={"b@v1"}))

    async def main():
        tasks = [asyncio.create_task(mixer.submit(m, [m])) for m in ("a@v1", "b@v1", "c@v1")]
        return await asyncio.gather(*tasks, return_exceptions=True)

    a, b, c = asyncio.run(main())
    assert a == ["a@v1:a@v1"] and c == ["c@v1:c@v1"]
    assert isinstance(b, KeyError) and "b@v1" in str(b)
    assert calls[0] == ["a@v1", "b@v1", "c@v1"] and sorted(map(tuple, calls[1:])) == [("a@v1",), ("b@v1",), ("c@v1",)]


def test_batches_in_later_turns_get_their_own_calls():
    calls = []
    mixer = _Mixer(_bank(calls))

    async def main():
        first = await mixer.submit("a@v1", [1])
        second = await mixer.submit("b@v1", [2])
        return first, second

    assert asyncio.run(main()) == (["a@v1:1"], ["b@v1:2"])
    assert calls == [["a@v1"], ["b@v1"]] and mixer.mixed_calls == 0


@pytest.mark.parametrize("n", [1, 40])
def test_every_part_is_answered(n):
    mixer = _Mixer(_bank([]))

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(asyncio.create_task(mixer.submit(f"t@v{i % 5}", [i]))
                                                       for i in range(n))), 10)

    assert [r[0] for r in asyncio.run(main())] == [f"t@v{i % 5}:{i}" for i in range(n)]
