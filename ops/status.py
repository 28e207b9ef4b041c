"""`aisle status`: the stream and serving on one screen, from files and (if one runs) the server.

Per task the CURRENT version and its key metric; the latest update decisions with the gate's
numbers; the feedback log's depth and each consumer's lag; and, from a running server, the
replicas per deployment and state, and from its Prometheus metrics the adapters each replica
holds. Nothing is written. Without a server it says "no server at <url>" and shows the rest.

    aisle status                                   # configs/stream.yaml's stream
    aisle status stream_dir=artifacts/demo_stream  # the demo's
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

from core.registry import model_id
from ops import sources
from ops.config import OpsConfig, load_ops_config
from ops.prom import Exposition

__all__ = ["gather", "render", "main"]

WIDTH = 118


def _when(ts) -> str:
    epoch = sources.to_epoch(ts)
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int) -> str:
    text = str(text).replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def gather(cfg: OpsConfig) -> dict:
    """Everything the screen shows, as plain data (the tests assert on it, `render` formats it)."""
    live, server_note = sources.server_status(cfg)
    expo, metrics_note = sources.metrics(cfg)
    return {"now": time.time(), "cfg": cfg, "tasks": sources.tasks(cfg.registry),
            "decisions": sources.decisions(cfg.audit_log), "log": sources.log_state(cfg.log_dir, live),
            "live": live, "server_note": server_note, "metrics": expo, "metrics_note": metrics_note}


def adapters_by_replica(expo: Exposition | None) -> dict[str, tuple[int | None, list[str]]]:
    """replica -> (aisle_adapters_loaded, the model ids aisle_adapter_resident marks as loaded)."""
    if expo is None:
        return {}
    counts: dict[str, float] = {}
    for s in expo.select("aisle_adapters_loaded"):
        counts[s.labels.get("replica", "?")] = s.value
    resident: dict[str, set[str]] = defaultdict(set)
    for s in expo.select("aisle_adapter_resident"):
        replica = s.labels.get("replica", "?")
        resident.setdefault(replica, set())
        if s.value >= 1 and "model_id" in s.labels:
            resident[replica].add(s.labels["model_id"])
    return {r: (int(counts[r]) if r in counts else None, sorted(resident.get(r, ())))
            for r in sorted(set(counts) | set(resident))}


def _tasks_lines(data: dict) -> list[str]:
    rows = data["tasks"]
    if not rows:
        return [f"  no adapters registered under {data['cfg'].registry}"]
    live_current = (data["live"] or {}).get("current") or {}
    lines = [f"  {'task':<12}{'CURRENT':<9}{'versions':>9}  {'key metric':<28}{'created (UTC)':<21}{'last move'}"]
    for t in rows:
        metric = f"{t.metric[0]} {t.metric[1]:.4f}" if t.metric else "-"
        move = t.history[-1] if t.history else None
        last = (f"{move.get('action')} {move.get('from') or '-'} -> {move.get('to')} {_when(move.get('ts'))}"
                if move else "-")
        current = t.current or "none"
        if t.task in live_current and live_current[t.task] != t.current:
            current += f" (server: {live_current[t.task]})"
        lines.append(f"  {t.task:<12}{current:<9}{t.versions:>9}  {metric:<28}{_when(t.created_at):<21}{last}")
    return lines


def _gate_text(metrics: dict) -> str:
    pairs = sorted(sources.gate_pairs(metrics), key=lambda p: "original" not in p[0])
    return "  ".join(f"{name.replace('_ndcg', '')} {before:.4f} -> {after:.4f}" for name, before, after in pairs
                     if not name.endswith("_offline")) or "no gate scores"


def _updates_lines(data: dict) -> list[str]:
    cfg, rows = data["cfg"], data["decisions"]
    if not rows:
        return [f"  no update decisions in {cfg.audit_log}"]
    tally = Counter(d.get("decision", "?") for d in rows)
    lines = [f"  {len(rows)} decisions: " + ", ".join(f"{n} {k}" for k, n in tally.most_common())
             + "   (gate nDCG@10: CURRENT -> candidate)"]
    for d in rows[-cfg.last_updates:] if cfg.last_updates else []:
        cand = str(d.get("candidate") or "-").split("@")[-1]
        examples = (d.get("examples") or {}).get("examples")
        seconds = d.get("seconds")
        lines.append(_cut(
            f"  {_when(d.get('ts'))}  {d.get('decision', '?'):<11} {(d.get('parent') or '-') + ' -> ' + cand:<10}"
            f"  {_gate_text(d.get('metrics') or {})}"
            + (f"  {examples} examples" if examples is not None else "")
            + (f"  {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""), WIDTH))
        reason = textwrap.wrap(" ".join(str(d.get("reason", "")).split()), WIDTH - 23, max_lines=3,
                               placeholder=" …") or ["(no reason recorded)"]
        lines += [" " * 23 + line for line in reason]
    return lines


def _log_lines(data: dict) -> list[str]:
    log, cfg = data["log"], data["cfg"]
    if not log.exists and log.source == "files":
        return [f"  no feedback log at {cfg.log_dir}"]
    where = "from the server" if log.source == "server" else cfg.log_dir
    lines = [f"  depth {log.end_offset} events ({where})"]
    for name, c in sorted(log.consumers.items()):
        lines.append(f"  consumer {name:<14} committed {c['offset']:>9}   lag {c['lag']:>8} events")
    if not log.consumers:
        lines.append("  no consumer has committed an offset yet")
    return lines


def _serving_lines(data: dict) -> list[str]:
    live = data["live"]
    if live is None:
        lines = [f"  {data['server_note']}"]
    else:
        lines = [f"  {data['server_note']}"]
        for deployment, states in sorted((live.get("replicas") or {}).items()):
            text = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
            lines.append(f"  replicas  {deployment:<22}{text}")
        current = live.get("current") or {}
        if current:
            served = (model_id(t, v) if v else f"{t}: none" for t, v in sorted(current.items()))
            lines.append("  serving   " + ", ".join(served))
    adapters = adapters_by_replica(data["metrics"])
    if data["metrics"] is None:
        lines.append(f"  adapters: {data['metrics_note']}")
    elif not adapters:
        lines.append(f"  adapters: no aisle_adapters_loaded samples ({data['metrics_note']})")
    else:
        lines.append(f"  adapters loaded ({data['metrics_note']}):")
        for replica, (count, ids) in adapters.items():
            shown = "?" if count is None else str(count)
            lines.append(f"    {_cut(replica, 40):<42}{shown:>3}  {_cut(', '.join(ids) or '-', WIDTH - 52)}")
    return lines


def render(data: dict) -> str:
    cfg = data["cfg"]
    title = f"aisle status   {_when(data['now'])} UTC"
    sections = [
        (f"ADAPTERS  ({cfg.registry})", _tasks_lines(data)),
        (f"UPDATES  ({cfg.task}, {cfg.audit_log}, latest {cfg.last_updates})", _updates_lines(data)),
        ("FEEDBACK LOG", _log_lines(data)),
        ("SERVING", _serving_lines(data)),
    ]
    out = [title, "=" * len(title)]
    for heading, lines in sections:
        out += ["", heading, *lines]
    return "\n".join(out) + "\n"


def main(stream_config: str | None, overrides: list[str]) -> int:
    from core.errors import AisleError

    try:
        cfg = load_ops_config(stream_config, overrides)
        sys.stdout.write(render(gather(cfg)))
    except AisleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
