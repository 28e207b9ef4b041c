"""The serving half of benchmarks/recommend_bench.py (not a benchmark of its own): deploy the app
with the trained recommend adapter, measure 1-user /v1/recommend latency at half the measured
closed-loop rate, and the time from `POST /v1/products` to the new product in an answer."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

ADMIN = "bench-admin-token"


def _users(work: Path, n: int = 400) -> list[str]:
    """Raw customer ids with a stored history (the log's ids whose pseudonym the prepared data has)."""
    import json

    import pandas as pd

    from core.events import pseudonym

    report = json.loads((work / "prepared" / "recommend" / "report.json").read_text())
    src = report["config"]["sources"]["recommend"]
    salt = report["config"]["salt"]
    log = pd.read_parquet(src["log"], columns=[src["columns"]["user"]]) if str(src["log"]).endswith(".parquet") \
        else pd.read_csv(src["log"], usecols=[src["columns"]["user"]], dtype=str)
    raw = log[src["columns"]["user"]].dropna().astype(str).str.strip().unique()
    known = set(pd.read_parquet(work / "prepared" / "recommend" / "events.parquet", columns=["user_id"])["user_id"])
    return [u for u in raw if pseudonym(u, salt) in known][:n]


async def _closed(session, url, bodies, concurrency, seconds) -> float:
    done, stop = 0, time.perf_counter() + seconds

    async def client(k):
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            async with session.post(url, json=bodies[i % len(bodies)]) as r:
                await r.read()
                done += r.status == 200
            i += concurrency
    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _upsert_to_answer(session, base: str, work: Path) -> float:
    """A new product (the text of a known one, a new id): seconds from the POST to the first
    /v1/recommend answer for it ({product_ids: [new id]} answers 404 until the recommender has it)."""
    import pandas as pd

    items = pd.read_parquet(work / "prepared" / "recommend" / "items.parquet")
    anchor = items.iloc[len(items) // 2]
    new_id = f"bench-new-{int(time.time())}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    t0 = time.perf_counter()
    async with session.post(f"{base}/v1/products", headers=headers,
                            json={"products": [{"product_id": new_id, "title": str(anchor["text"])}]}) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"POST /v1/products answered {r.status}: {body}")
    while time.perf_counter() - t0 < 30:
        async with session.post(f"{base}/v1/recommend", json={"product_ids": [new_id], "k": 10}) as r:
            found = await r.json()
        if r.status == 200 and found["model"].startswith("recommend:") and found["products"]:
            seconds = time.perf_counter() - t0
            async with session.delete(f"{base}/v1/products/{new_id}", headers=headers) as r:
                await r.read()
            return seconds
        await asyncio.sleep(0.02)
    raise RuntimeError("the upserted product got no answer in 30 s")


def measure(work: Path, seconds: float, smoke: bool) -> tuple[float, float]:
    import aiohttp
    import numpy as np
    from ray import serve

    from aisle.serving import serve_logging
    from benchmarks.serve_bench import open_loop
    from ops.runtime import free_port
    from serve.app import build_graph

    os.environ["AISLE_ADMIN_TOKEN"] = ADMIN
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    args = {"registry": str(work / "registry"), "embeddings": "/nonexistent", "data_dir": str(work / "prepared"),
            "admin_token": ADMIN, "threads_per_replica": 1,
            "recommend_catalog_products": False, "recommend_vectors": None}   # the retail shop alone, embedded at load
    if smoke:
        args["backbone"] = "tiny-random-bert"
    serve.run(build_graph(args, model_options={"num_replicas": 1}), name="aisle", route_prefix="/",
              logging_config=serve_logging())
    base = f"http://127.0.0.1:{port}"
    bodies = [{"user_id": u, "k": 10} for u in _users(work)]
    if not bodies:
        raise RuntimeError("no user of the log has a stored history")

    async def run() -> tuple[float, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            async with session.post(f"{base}/v1/recommend", json=bodies[0]) as r:
                first = await r.json()
                if r.status != 200 or not first.get("model", "").startswith("recommend:"):
                    raise RuntimeError(f"/v1/recommend is not served by the recommend adapter: {r.status} {first}")
            await _closed(session, f"{base}/v1/recommend", bodies, 4, 1.0)               # warm-up
            rate = await _closed(session, f"{base}/v1/recommend", bodies, 8, max(2.0, seconds / 2))
            latencies, errors = await open_loop(f"{base}/v1/recommend", bodies, rate / 2, seconds)
            if errors:
                raise RuntimeError(f"{errors} of {errors + len(latencies)} requests failed at half load")
            print(f"recommend closed-loop rate {rate:.1f}/s; {len(latencies)} requests at {rate / 2:.1f}/s")
            return float(np.percentile(np.array(latencies) * 1000, 99)), await _upsert_to_answer(session, base, work)
    try:
        return asyncio.run(run())
    finally:
        serve.shutdown()
