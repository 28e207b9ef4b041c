"""The demo's stream part: serve with the stream loop, send the example requests, then let simulated
shoppers whose taste has drifted stream clicks and purchases: first the fast path (the online click
layer) moves a drifted query's ranking within seconds, then the slow path consolidates it in gated
LoRA updates until the quality gate has promoted one and rejected one (or a quarter of the budget
passed); then click farms flood the stream (random bots, then adversarial clicks) until the policy
decides, and the audit lines of both paths are printed.

The stream's state (log, updates, audit) lives under the demo's own directory, cleared at the start,
so every demo run tells the same story from an empty log.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from core import audit
from core.config import load_config
from core.registry import AdapterRegistry
from core.serve_config import ServeConfig
from core.stream_config import StreamConfig

DEMO_TOKEN = "demo-ingest-token"


def demo_stream_config(serve_cfg: ServeConfig, root: str, overrides: list[str]) -> StreamConfig:
    from ops.runtime import preset

    cfg = load_config(StreamConfig, preset("stream"), [
        f"workspace={serve_cfg.workspace}", f"log_dir={root}/log", f"updates_dir={root}/updates", f"audit_log={root}/audit.jsonl", *overrides])
    serve = dataclasses.replace(serve_cfg, ingest_token=serve_cfg.ingest_token or DEMO_TOKEN)
    return dataclasses.replace(cfg, registry=serve.registry, catalog_dir=serve.catalog_dir, serve=serve)


def run_stream_demo(cfg: StreamConfig, root: str, budget_s: float = 600.0, seed: int = 0) -> list:
    """Steps 5-6; returns the example exchanges. Stops Serve and the actors on the way out."""
    from aisle.demo_requests import send_examples, shopper_click_example
    from aisle.shoppers import Shoppers
    from aisle.streaming import start_stream, stop_stream
    from data_pipelines.catalog import read_catalog
    from data_pipelines.simulator import ShopperSimulator, pick_trend

    shutil.rmtree(root, ignore_errors=True)
    # The recommend task's stream updates are shown by benchmarks/rec_stream_bench.py: on two cores
    # the demo's stream keeps its CPU for relevance's fast path and gated updates.
    url = start_stream(cfg, recommend=False)
    shoppers = None
    try:
        exchanges = send_examples(url)
        exchanges += shopper_click_example(url, cfg.serve.ingest_token)
        catalog = read_catalog(cfg.catalog_dir)
        drift = pick_trend(catalog, seed=seed)
        sim = ShopperSimulator(catalog, seed=seed, drift=drift)
        print(f"\n== 6/6 the stream: shoppers' taste drifts ({drift.name}); they search, click and buy ==")
        shoppers = Shoppers(url, cfg.serve.ingest_token, sim)
        _fast_path(shoppers, sim, budget_s / 4)
        print("\n   ... the slow path consolidates what the shoppers teach into a gated LoRA update:")
        decided = _until(cfg, shoppers, "promoted", budget_s)
        if not any(d["decision"] == "rejected" and not d.get("held") for d in decided):
            print(f"\n   ... and goes on consolidating until the quality gate rejects a window (at most {budget_s / 4:.0f} s):")
            _until(cfg, shoppers, "rejected", budget_s / 4)
        for behaviour, what in (("random_bot", "random bot clicks"), ("adversarial", "adversarial clicks")):
            print(f"\n   ... then a click farm floods the stream with {what} (10x the shoppers' volume)")
            _until(cfg, shoppers, None, budget_s, attack=behaviour)
        print("\nAudit log (every update decision, with its numbers):")
        for line in audit.read(cfg.audit_log):
            print("  " + audit.format_line(line))
        _print_click_audit(Path(cfg.click_state_dir) / "audit.jsonl")
        current = AdapterRegistry(cfg.registry).current(cfg.task)
        answer = shoppers.client.post("/v1/search", json={"query": sim.next_session().query_text, "k": 3}).json()
        print(f"\nCURRENT {cfg.task}: {current}; /v1/search now answers with {answer['model']}")
        t = shoppers.traffic
        print(f"streamed {t.sessions} sessions: {t.events} events, {t.new} new, {t.duplicate} duplicate, "
              f"{t.flagged} flagged by the anomaly screen")
        _print_metrics(Path(root) / "metrics.prom")
        return exchanges
    finally:
        if shoppers is not None:
            shoppers.close()
        stop_stream()


def _fast_path(shoppers, sim, budget_s: float) -> None:
    """Shop until the online click layer moves the top 5 of a drifted query, and show it."""
    query_id = next(q for q in sim.affected_queries() if q not in sim.held_out)
    text = sim.query_text(query_id)
    before = shoppers.search(text, 5)
    _print_top(f'   "{text}" now', before, sim, query_id)
    start, deadline = time.time(), time.time() + budget_s
    while time.time() < deadline:
        shoppers.run(4, rate=4.0)
        answer = shoppers.search(text, 5)
        online = answer.get("online") or {}
        if online.get("adjusted") and _ids(answer) != _ids(before):
            print(f"   after {time.time() - start:.0f} s of shopping ({shoppers.traffic.events} events), the online layer's "
                  f"snapshot {online['snapshot']} (every event below log offset {online['offset']}) reorders it:")
            _print_top(f'   "{text}" now', answer, sim, query_id)
            return
    print(f"   (the online layer did not move it within {budget_s:.0f} s)")


def _ids(answer: dict) -> list[str]:
    return [p["product_id"] for p in answer["products"]]


def _print_top(title: str, answer: dict, sim, query_id: str) -> None:
    print(f"{title} (model {answer['model']}; * what the shoppers now want):")
    for i, (p, grade) in enumerate(zip(answer["products"], sim.truth(query_id, _ids(answer)))):
        moved = p["score"] - (p.get("model_score") if p.get("model_score") is not None else p["score"])
        print(f"     {i + 1}. {'*' if grade == 2 else ' '} {p['title'][:60]:<60} score {p['score']:.2f}"
              + (f" (online {moved:+.2f})" if moved else ""))


def _print_click_audit(path: Path) -> None:
    from core.click_guard import format_record

    lines = audit.read(path)
    print(f"\nOnline click layer ({len(lines)} audit lines in {path}; the last 8):")
    for line in lines[-8:]:
        print("  " + format_record(line))


def _until(cfg: StreamConfig, shoppers, decision: str | None, budget_s: float, attack: str | None = None) -> list[dict]:
    """Stream until an update with `decision` (None: any decision) on a window that began after this
    call is audited, or the budget ends; returns the decisions audited meanwhile. A held window
    (traffic surge, flagged share, quarantined accounts: audited `rejected` untrained) is not a
    gate's decision: it counts only for None. (A window already pending when an attack starts holds
    none of it: its decision is printed but does not count.)"""
    seen, start = len(audit.read(cfg.audit_log)), time.time()
    deadline, decided = start + budget_s, []
    while time.time() < deadline:
        shoppers.run(4, rate=4.0)
        if attack:
            shoppers.run(40, behaviour=attack, post_every=40)
        new = [d for d in audit.read(cfg.audit_log)[seen:] if d["decision"] != "interrupted"]
        for d in new:
            print("   " + audit.format_line(d))
        seen += len(new)
        decided += new
        began_after = [d for d in new if not attack or d["examples"].get("span", {}).get("first_ingested_at", 0) >= start]
        if any(decision is None or (d["decision"] == decision and not d.get("held")) for d in began_after):
            return decided
    print(f"   (no {decision or 'decision'} within {budget_s:.0f} s)")
    return decided


def _print_metrics(path: Path, wait_s: float = 30.0) -> None:
    """Scrape this Ray node's Prometheus endpoint once the updates' metrics have arrived (Ray exports
    them ~10 s after they are recorded), save the scrape for `aisle report`, print the aisle_ lines."""
    import httpx

    from ops.runtime import metrics_url
    from ops.metrics import aisle_lines, exported_name

    url, text = metrics_url(), ""
    deadline = time.time() + wait_s
    while url and time.time() < deadline:
        text = httpx.get(url, timeout=10).text
        if exported_name("aisle_updates") in text and exported_name("aisle_events") in text:
            break
        time.sleep(2)
    path.write_text(text)
    lines = aisle_lines(text)
    print(f"\nPrometheus metrics at {url} ({len(lines)} aisle_ series; the whole scrape is in {path}):")
    for line in lines:
        print("  " + line)
