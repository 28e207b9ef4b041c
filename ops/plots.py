"""The report's charts (matplotlib, Agg): each function returns a PNG as a `data:` URI for an <img>.

Every chart has a title, labelled axes with units and a legend; times are UTC. Colours of update
decisions are the same everywhere in the report (`DECISION_COLOURS`).
"""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402 - after choosing the backend
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

__all__ = ["DECISION_COLOURS", "rates_chart", "gate_chart", "latency_chart", "duration_label"]

GATE_SETS = {"original_ndcg": "original set (whole queries of the offline validation split)",
             "fresh_ndcg": "fresh held-out result lists of the update's window"}
DECISION_COLOURS = {"promoted": "#2e7d32", "rejected": "#c62828", "failed": "#6d6d6d",
                    "interrupted": "#ef6c00", "skipped": "#9e9e9e"}
CTR_COLOUR, CONVERSION_COLOUR, CLEAN_COLOUR, FLAGGED_COLOUR = "#1565c0", "#8e24aa", "#90a4ae", "#ff8f00"
plt.rcParams.update({"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.spines.top": False,
                     "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "legend.framealpha": 0.9})


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def duration_label(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def rates_chart(series: pd.DataFrame, bucket_s: float, marks: list[tuple[float, str, str]]) -> str:
    """CTR and conversion per bucket over events per bucket; `marks` (epoch, label, decision) as lines."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11.5, 6.2), sharex=True, height_ratios=(3, 1.5))
    x = [_utc(t) for t in series.index]
    width = bucket_s / 86400 * 0.85  # bar width in days, matplotlib's date unit
    top.plot(x, series["ctr"] * 100, color=CTR_COLOUR, marker="o", markersize=3.5, linewidth=1.8,
             label="CTR = clicks / impressions")
    top.plot(x, series["conversion"] * 100, color=CONVERSION_COLOUR, marker="s", markersize=3.5, linewidth=1.8,
             label="conversion = sessions with a purchase / search sessions")
    top.set_ylabel("rate (%)")
    highest = pd.concat([series["ctr"], series["conversion"]]).max()
    top.set_ylim(0, max(float(highest) * 100 * 1.12, 1.0) if pd.notna(highest) else 1.0)
    top.set_title(f"Click-through and conversion per {duration_label(bucket_s)} "
                  "(screened-clean events, by session start)", pad=30)
    centre = [t + pd.Timedelta(seconds=bucket_s / 2) for t in x]
    bottom.bar(centre, series["clean"], width=width, color=CLEAN_COLOUR, label="clean events")
    bottom.bar(centre, series["flagged"], width=width, bottom=series["clean"], color=FLAGGED_COLOUR,
               label="flagged by the screen (left out of the rates)")
    bottom.set_ylim(0, float((series["clean"] + series["flagged"]).max()) * 1.45 or 1.0)
    bottom.set_ylabel(f"events per\n{duration_label(bucket_s)}")
    bottom.set_xlabel("time (UTC, when the feedback log received the event)")
    for ax in (top, bottom):
        for epoch, label, decision in marks:
            ax.axvline(_utc(epoch), color=DECISION_COLOURS.get(decision, "#333"), linestyle="--", linewidth=1.4)
    for epoch, label, decision in marks:
        top.annotate(label, (_utc(epoch), 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                     textcoords="offset points", color=DECISION_COLOURS.get(decision, "#333"), fontweight="bold")
    handles, _ = top.get_legend_handles_labels()
    if marks:
        handles.append(Line2D([], [], color=DECISION_COLOURS["promoted"], linestyle="--",
                              label="promotion: CURRENT moved to this version"))
    top.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False, fontsize=9)
    bottom.legend(loc="upper left", ncol=2, fontsize=9, frameon=False)
    locator = mdates.AutoDateLocator(minticks=5, maxticks=12)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.tight_layout()
    return _uri(fig)


def gate_chart(updates: list[dict]) -> str:
    """Per gate set, each update's score of CURRENT (before) and of the candidate (after), by decision.

    `updates`: {"label", "decision", "pairs": {set name: (before, after)}} in time order.
    """
    sets = sorted({name for u in updates for name in u["pairs"]}, key=lambda n: ("original" not in n, n))
    fig, axes = plt.subplots(1, len(sets), figsize=(11.5, 4.2), squeeze=False, sharey=False)
    labels = [u["label"] for u in updates]
    for ax, name in zip(axes[0], sets):
        for i, u in enumerate(updates):
            if name not in u["pairs"]:
                continue
            before, after = u["pairs"][name]
            colour = DECISION_COLOURS.get(u["decision"], "#333")
            ax.annotate("", (i, after), (i, before), arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2,
                                                                 "shrinkA": 4, "shrinkB": 2})
            ax.scatter([i], [before], s=42, facecolor="white", edgecolor="#424242", zorder=3, linewidth=1.5)
            ax.scatter([i], [after], s=48, color=colour, zorder=4)
        ax.set_xticks(range(len(updates)), labels, rotation=30 if len(updates) > 6 else 0, ha="right" if
                      len(updates) > 6 else "center", fontsize=9)
        ax.set_xlim(-0.6, len(updates) - 0.4)
        ax.margins(y=0.15)
        ax.set_ylabel("nDCG@10")
        ax.set_title(GATE_SETS.get(name, name.replace("_", " ")))
        ax.set_xlabel("update (candidate version)")
    present = [d for d in DECISION_COLOURS if any(u["decision"] == d for u in updates)]
    handles = [Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="#424242", linestyle="",
                      label="CURRENT before the update")]
    handles += [Line2D([], [], marker="o", color=DECISION_COLOURS[d], linestyle="", label=f"candidate, {d}")
                for d in present]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _uri(fig)


def latency_chart(rows: list[dict]) -> str:
    """p50/p95/p99 request latency per route, horizontal bars on a log scale (ms)."""
    rows = [r for r in rows if r["count"] > 0]
    fig, ax = plt.subplots(figsize=(11.5, 0.9 + 0.75 * len(rows)))
    quantiles = (("p50", "#64b5f6"), ("p95", "#1e88e5"), ("p99", "#0d47a1"))
    height = 0.8 / len(quantiles)
    for k, (q, colour) in enumerate(quantiles):
        values = [r[q] if not math.isnan(r[q]) else 0 for r in rows]
        ys = [i + (k - 1) * height for i in range(len(rows))]
        ax.barh(ys, values, height=height, color=colour, label=q)
        for y, v in zip(ys, values):
            if v > 0:  # no estimate (observations only above the highest bound) draws no bar and no label
                ax.text(v * 1.04, y, f"{v:,.1f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["route"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("request latency at the ingress (ms, log scale; estimated from histogram buckets)")
    ax.set_title("Serving latency percentiles by route")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="percentile")
    ax.margins(x=0.15)
    fig.tight_layout()
    return _uri(fig)
