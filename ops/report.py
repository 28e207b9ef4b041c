"""`aisle report`: one self-contained HTML page on how the stream and serving are doing.

Sections: a summary per task (CURRENT, its key metric, updates promoted and rejected); CTR and
conversion over time from the feedback log with the promotions marked; every update's gate scores
before and after, coloured by decision, with the audit lines; serving latency percentiles per route
from the `aisle_request_latency_ms` histogram (a live metrics URL or a saved scrape); events the
screen flagged and the ones the log refused. Plots are PNGs embedded as base64 and the CSS is
inline, so the file opens anywhere, offline, and can be mailed. Nothing it reads is written.

Definitions (`ops.sources.rate_series`): CTR = clicks / impressions, conversion = search sessions
that bought / search sessions, per time bucket of the session's start; flagged events are left out
of both and counted on their own.

    aisle report stream_dir=artifacts/demo_stream out=artifacts/demo_stream/report.html
"""

from __future__ import annotations

import html
import math
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from ops import plots, sources
from ops.config import OpsConfig, load_ops_config
from ops.prom import quantiles_by

__all__ = ["gather", "render", "write_report", "main"]

LATENCY_METRIC = "aisle_request_latency_ms"
CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #212121; margin: 0;
       background: #f4f5f7; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 8px; padding-bottom: 4px;
     border-bottom: 2px solid #e0e0e0; }
.sub { color: #616161; margin: 0 0 14px; } .note { color: #616161; font-size: 13px; margin: 6px 0; }
.empty { background: #fff8e1; border-left: 4px solid #ffb300; padding: 8px 12px; }
dl.meta { display: grid; grid-template-columns: 150px 1fr; gap: 2px 12px; font-size: 13.5px; margin: 10px 0; }
dl.meta dt { color: #616161; } dl.meta dd { margin: 0; font-family: "DejaVu Sans Mono", monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
table.narrow { width: auto; min-width: 420px; }
th { text-align: left; background: #eceff1; padding: 6px 8px; border-bottom: 2px solid #cfd8dc; white-space: nowrap; }
td { padding: 5px 8px; border-bottom: 1px solid #eceff1; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px;
         font-weight: bold; }
img { max-width: 100%; display: block; margin: 8px 0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 10px 0; }
.card { border: 1px solid #e0e0e0; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; } .card span { color: #616161; font-size: 12px; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _utc(epoch: float | None, seconds: bool = True) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


def _num(value, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _badge(decision: str) -> str:
    colour = plots.DECISION_COLOURS.get(decision, "#455a64")
    return f'<span class="badge" style="background:{colour}">{_e(decision)}</span>'


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), narrow: bool = False) -> str:
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    opening = '<table class="narrow">' if narrow else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def gather(cfg: OpsConfig) -> dict:
    """What the page shows, as plain data."""
    events = sources.read_events(cfg.log_dir)
    expo, metrics_note = sources.metrics(cfg)
    return {"now": time.time(), "cfg": cfg, "tasks": sources.tasks(cfg.registry),
            "decisions": sources.decisions(cfg.audit_log), "events": events, "log": sources.log_state(cfg.log_dir),
            "metrics": expo, "metrics_note": metrics_note}


# --------------------------------------------------------------------------- sections


def _header(data: dict) -> str:
    cfg, events, decisions = data["cfg"], data["events"], data["decisions"]
    span = (f"{len(events):,} events received {_utc(events['t'].min())} to {_utc(events['t'].max())} UTC"
            if len(events) else "no events")
    rows = [("feedback log", f"{cfg.log_dir} ({span})"), ("audit log", f"{cfg.audit_log} ({len(decisions)} decisions)"),
            ("registry", cfg.registry), ("metrics", data["metrics_note"])]
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return (f"<h1>Aisle stream report</h1><p class=\"sub\">Generated {_utc(data['now'])} UTC &middot; "
            f"task updated by the stream: <b>{_e(cfg.task)}</b></p><dl class=\"meta\">{meta}</dl>")


def _summary(data: dict) -> str:
    cfg, tally = data["cfg"], Counter(d.get("decision", "?") for d in data["decisions"])
    log, events = data["log"], data["events"]
    flagged = int(events["flagged"].sum()) if len(events) else 0
    cards = [(f"{log.end_offset:,}", "events in the log"), (f"{flagged:,}", "flagged by the screen"),
             (str(len(data["decisions"])), "update decisions"), (str(tally.get("promoted", 0)), "promoted"),
             (str(tally.get("rejected", 0)), "rejected")]
    if log.consumers:
        name, behind = max(log.consumers.items(), key=lambda item: item[1]["lag"])
        cards.append((f"{behind['lag']:,}", f"events {name} has not consumed"))
    html_cards = "".join(f"<div class=\"card\"><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards)
    if not data["tasks"]:
        return (f"<h2>Summary</h2><div class=\"cards\">{html_cards}</div>"
                + _empty(f"No adapters registered under {cfg.registry}."))
    rows = []
    for t in data["tasks"]:
        ours = t.task == cfg.task
        rows.append([f"<b>{_e(t.task)}</b>", _e(t.current or "none"), _e(t.metric[0]) if t.metric else "-",
                     _num(t.metric[1]) if t.metric else "-", str(t.versions),
                     str(tally.get("promoted", 0)) if ours else "-", str(tally.get("rejected", 0)) if ours else "-",
                     str(sum(n for k, n in tally.items() if k not in ("promoted", "rejected"))) if ours else "-",
                     _e(_utc(sources.to_epoch(t.history[-1].get("ts")))) if t.history else "-"])
    table = _table(["task", "CURRENT", "key metric", "value", "versions", "promoted", "rejected", "other decisions",
                    "CURRENT since (UTC)"], rows, numeric={3, 4, 5, 6, 7})
    consumers = ", ".join(f"{_e(n)} at {c['offset']:,} (lag {c['lag']:,})" for n, c in sorted(log.consumers.items()))
    return (f"<h2>Summary</h2><div class=\"cards\">{html_cards}</div>{table}"
            f"<p class=\"note\">Key metric: the task's primary metric on its validation data when the version was "
            "trained. Update counts are from the audit log of the stream's task. "
            f"Consumers: {consumers or 'none'}.</p>")


def _marks(data: dict, t0: float, t1: float) -> list[tuple[float, str, str]]:
    marks = [(float(d["ts"]), str(d.get("candidate") or "").split("@")[-1], "promoted")
             for d in data["decisions"] if d.get("decision") == "promoted" and isinstance(d.get("ts"), (int, float))]
    for t in data["tasks"]:
        if t.task == data["cfg"].task:
            marks += [(sources.to_epoch(h.get("ts")), f"rollback to {h.get('to')}", "rollback")
                      for h in t.history if h.get("action") == "rollback" and sources.to_epoch(h.get("ts"))]
    return sorted(m for m in marks if t0 <= m[0] <= t1)


def _rates(data: dict) -> str:
    events, cfg = data["events"], data["cfg"]
    if events.empty:
        return ("<h2>Click-through and conversion over time</h2>"
                + _empty(f"No events in the feedback log at {cfg.log_dir}."))
    t0, t1 = float(events["t"].min()), float(events["t"].max())
    bucket = cfg.bucket_s or sources.auto_bucket_s(t1 - t0)
    series = sources.rate_series(events, bucket)
    impressions, clicks = int(series["impression"].sum()), int(series["click"].sum())
    sessions, buying = int(series["sessions"].sum()), int(series["buying_sessions"].sum())
    overall = (f"Over the whole log: CTR {clicks / impressions:.1%} ({clicks:,} clicks / {impressions:,} impressions), "
               if impressions else "Over the whole log: no impressions, ")
    overall += (f"conversion {buying / sessions:.1%} ({buying:,} of {sessions:,} search sessions bought)." if sessions
                else "no search sessions.")
    img = plots.rates_chart(series, bucket, _marks(data, t0 - bucket, t1 + bucket))
    return ("<h2>Click-through and conversion over time</h2>"
            f"<img alt=\"CTR and conversion per {_e(plots.duration_label(bucket))} with promotions marked\" "
            f"src=\"{img}\">"
            f"<p class=\"note\">{_e(overall)} CTR = clicks / impressions; conversion = search sessions (sessions with "
            "impressions) that bought / search sessions. Both per bucket of the time a session started (so a "
            f"purchase minutes after its click counts with it); a bucket with under {sources.MIN_IMPRESSIONS} "
            f"impressions or {sources.MIN_SESSIONS} sessions shows no rate. Events the anomaly screen flagged are "
            "left out of both rates and drawn in orange (bars: events by the time the log received them). Dashed "
            "lines: promotions (CURRENT moved to the version named).</p>")


def _update_rows(decisions: list[dict]) -> tuple[list[dict], list[list[str]]]:
    charted, rows = [], []
    for i, d in enumerate(decisions, 1):
        pairs = {name: (b, a) for name, b, a in sources.gate_pairs(d.get("metrics") or {})
                 if not name.endswith("_offline")}
        cand = str(d.get("candidate") or "-").split("@")[-1]
        if pairs:
            charted.append({"label": f"#{i} {cand}", "decision": d.get("decision", "?"), "pairs": pairs})
        gate = "<br>".join(f"{_e(n.replace('_ndcg', ''))} {b:.4f} &rarr; {a:.4f} ({a - b:+.4f})"
                           for n, (b, a) in sorted(pairs.items(), key=lambda p: "original" not in p[0])) or "-"
        ex = d.get("examples") or {}
        seconds = d.get("seconds")
        rows.append([str(i), _e(_utc(d.get("ts") if isinstance(d.get("ts"), (int, float)) else None)),
                     _badge(d.get("decision", "?")), f"{_e(d.get('parent') or '-')} &rarr; {_e(cand)}", gate,
                     _num(ex.get("examples")), _num(ex.get("flagged")),
                     f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
                     f"<small>{_e(d.get('update_id', ''))}</small><br>{_e(d.get('reason', ''))}"])
    return charted, rows


def _updates(data: dict) -> str:
    decisions, cfg = data["decisions"], data["cfg"]
    if not decisions:
        return "<h2>Updates</h2>" + _empty(f"No update decisions in {cfg.audit_log}.")
    charted, rows = _update_rows(decisions)
    chart = (f"<img alt=\"gate nDCG@10 before and after each update, coloured by decision\" "
             f"src=\"{plots.gate_chart(charted)}\">") if charted else _empty("No update has gate scores to chart.")
    table = _table(["#", "time (UTC)", "decision", "parent → candidate", "gate nDCG@10: CURRENT → candidate",
                    "examples", "flagged", "seconds", "update and reason"], rows, numeric={0, 5, 6, 7})
    return ("<h2>Updates: the gate's scores before and after</h2>" + chart +
            "<p class=\"note\">Each arrow goes from CURRENT's score (white dot) to the candidate's, on the original "
            "set (whole queries of the offline validation split) and on the fresh held-out result lists of the "
            "update's window. A candidate is promoted only if neither drops by more than the gate's tolerance.</p>"
            + table)


def _latency(data: dict) -> str:
    expo = data["metrics"]
    title = "<h2>Serving latency</h2>"
    if expo is None:
        return title + _empty(f"No latency data: {data['metrics_note']}. Point metrics_file= at a saved scrape "
                              "or metrics_url= at the Ray node's metrics endpoint.")
    by_route = quantiles_by(expo, LATENCY_METRIC, ("route",))
    if not by_route:
        return title + _empty(f"No latency data: no {LATENCY_METRIC} histogram in the {data['metrics_note']}.")
    detail = quantiles_by(expo, LATENCY_METRIC, ("route", "task"))
    rows = [[_e(r["route"]), _e(r["task"] or "-"), _num(int(r["count"])), _num(r["p50"], 1), _num(r["p95"], 1),
             _num(r["p99"], 1), _num(r["mean"], 1)] for r in detail]
    return (title + f"<img alt=\"latency percentiles by route\" src=\"{plots.latency_chart(by_route)}\">"
            + _table(["route", "task", "requests", "p50 (ms)", "p95 (ms)", "p99 (ms)", "mean (ms)"], rows,
                     numeric={2, 3, 4, 5, 6})
            + f"<p class=\"note\">From the {_e(data['metrics_note'])}: totals since the servers started, summed over "
              "replicas. Percentiles are interpolated inside histogram buckets (as PromQL's histogram_quantile "
              "does), so they are only as fine as the bucket bounds; one above the highest bound shows that bound.</p>")


def _screened(data: dict) -> str:
    events, expo = data["events"], data["metrics"]
    flags = sources.flag_counts(events)
    flagged = events[events["flagged"]] if len(events) else events
    parts = ["<h2>Screened and dropped events</h2>"]
    if len(events) and len(flagged):
        by_type = flagged["type"].value_counts()
        rows = [[_e(reason), _num(n)] for reason, n in flags.most_common()]
        parts.append(f"<p>{len(flagged):,} of {len(events):,} logged events ({len(flagged) / len(events):.1%}) were "
                     "flagged by the anomaly screen: kept in the log, never trained on, left out of the rates above. "
                     "By type: " + ", ".join(f"{_e(k)} {n:,}" for k, n in by_type.items()) + ".</p>")
        parts.append(_table(["screen rule", "events flagged"], rows, numeric={1}, narrow=True))
        if sum(flags.values()) > len(flagged):
            parts.append("<p class=\"note\">An event can break more than one rule; it counts under each.</p>")
    else:
        parts.append(f"<p>No logged event was flagged by the anomaly screen ({len(events):,} events).</p>")
    outcomes = {o: expo.total("aisle_events", outcome=o) for o in ("accepted", "duplicate", "rejected")} if expo else {}
    if any(v is not None for v in outcomes.values()):
        rows = [[_e(o), _num(int(v)) if v is not None else "-"] for o, v in outcomes.items()]
        parts.append("<p class=\"note\">Events offered to the log, by outcome (aisle_events_total; duplicates "
                     "and rejected events are dropped before the log, so only the metrics count them):</p>"
                     + _table(["outcome", "events"], rows, numeric={1}, narrow=True))
    else:
        parts.append(_empty("Dropped events (duplicates, rejected) are counted only in the aisle_events_total "
                            f"metric, and there is none: {data['metrics_note']}."))
    return "".join(parts)


def render(data: dict) -> str:
    body = "".join(s(data) for s in (_header, _summary, _rates, _updates, _latency, _screened))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Aisle stream report {_utc(data['now'], seconds=False)} UTC</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def write_report(cfg: OpsConfig) -> Path:
    """Render the report and write it atomically to `cfg.out`; returns the path."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(gather(cfg)), encoding="utf-8")
    tmp.replace(out)
    return out


def main(stream_config: str | None, overrides: list[str]) -> int:
    from core.errors import AisleError

    try:
        out = write_report(load_ops_config(stream_config, overrides))
    except AisleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); open file://{out.resolve()}")
    return 0
