"""The Generator's batcher: a batch forms when the model is free, one model id per batch."""

from __future__ import annotations

import asyncio

from serve.generator import FreeModelBatcher


def _batcher(log: list, seconds: float = 0.05, fail_on: str | None = None) -> FreeModelBatcher:
    async def run(model_id, items):
        log.append((model_id, list(items)))
        await asyncio.sleep(seconds)
        if model_id == fail_on:
            raise RuntimeError(f"{model_id} broke")
        return [f"{model_id}:{item}" for item in items]

    return FreeModelBatcher(run, max_batch=8, wait_s=0.005)


def test_requests_arriving_while_a_batch_runs_form_one_full_next_batch():
    async def scenario():
        log: list = []
        batcher = _batcher(log, seconds=0.3)  # a long generation: all seven arrive while it runs
        first = asyncio.ensure_future(batcher.submit("describe@v1", 0))
        await asyncio.sleep(0.02)  # the first batch (one request) is running now
        later = []
        for i in range(1, 8):  # arrive one by one, each after the timer a timed batcher would use
            later.append(asyncio.ensure_future(batcher.submit("describe@v1", i)))
            await asyncio.sleep(0.006)
        results = await asyncio.gather(first, *later)
        return log, results, batcher.sizes

    log, results, sizes = asyncio.run(scenario())
    assert sizes == [1, 7]
    assert results == [f"describe@v1:{i}" for i in range(8)]


def test_one_model_id_per_batch_oldest_first_and_at_most_max_batch():
    async def scenario():
        log: list = []
        batcher = _batcher(log, seconds=0.01)
        jobs = [batcher.submit("reply@v2" if i % 3 == 0 else "describe@v1", i) for i in range(20)]
        return log, await asyncio.gather(*jobs)

    log, results = asyncio.run(scenario())
    assert all(len({m for m, _ in [entry]}) == 1 and len(entry[1]) <= 8 for entry in log)
    assert log[0][0] == "reply@v2"  # the oldest request's model goes first
    assert sorted(i for _, items in log for i in items) == list(range(20))
    assert results[3] == "reply@v2:3" and results[4] == "describe@v1:4"


def test_a_failing_batch_fails_only_its_own_requests():
    async def scenario():
        batcher = _batcher([], seconds=0.01, fail_on="reply@v2")
        bad = asyncio.ensure_future(batcher.submit("reply@v2", 1))
        good = asyncio.ensure_future(batcher.submit("describe@v1", 2))
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = asyncio.run(scenario())
    assert isinstance(bad, RuntimeError) and "reply@v2 broke" in str(bad)
    assert good == "describe@v1:2"


def test_closed_loop_callers_answered_together_come_back_as_one_batch():
    """Eight callers each send again 20 ms after their answer (a round trip): after the first
    batches the batcher waits for them, so the batches fill instead of alternating halves."""
    async def scenario():
        log: list = []
        batcher = FreeModelBatcher(lambda m, items: _slow(log, items), max_batch=8, wait_s=0.005, gather_s=0.1)

        async def caller(i):
            await asyncio.sleep(0.004 * i)  # they start spread out
            for _ in range(4):
                await batcher.submit("describe@v1", i)
                await asyncio.sleep(0.02)

        await asyncio.gather(*(caller(i) for i in range(8)))
        return batcher.sizes

    sizes = asyncio.run(scenario())
    assert sum(sizes) == 32 and sizes.count(8) >= 3, sizes  # e.g. [2, 8, 8, 8, 6]: no alternating halves


async def _slow(log, items):
    log.append(list(items))
    await asyncio.sleep(0.05)
    return list(items)
