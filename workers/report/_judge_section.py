"""The judge section: rolling means of the judge's scores per dimension and adapter
(``judge_means.png``) and a table of means, n, failures and injection flags."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.report._config import DAY, ReportConfig, Section
from workers.report._html import (
    esc,
    fmt_duration,
    fmt_n,
    fmt_num,
    fmt_ts,
    html_table,
    img_tag,
    no_data,
)
from workers.report._plots import new_figure, nice_step, save_png, set_margins, time_axis
from workers.report._queries import JUDGE_EXTENT_SQL, JUDGE_ROLLING_SQL, JUDGE_SUMMARY_SQL, Scope

if TYPE_CHECKING:
    from workers.store import Store

_DIMENSION_LABELS = {
    "format": "format compliance (1–5)",
    "factual": "factual consistency (1–5)",
    "refusal": "refusal rate (0–1)",
}


def judge_section(store: Store, scope: Scope, out: Path, cfg: ReportConfig) -> Section:
    title = "Judge rolling means"
    extent_sql = scope.sql(JUDGE_EXTENT_SQL)
    summary_sql = scope.sql(JUDGE_SUMMARY_SQL)
    n_scored, first, last = store.query(extent_sql, scope.params()).rows[0]
    summary = store.query(summary_sql, scope.params()).dicts()
    if not n_scored:
        failures = sum(int(r["failures"]) for r in summary)
        hint = "no scored judge_scores rows in range"
        if failures:
            hint += f" ({failures} judge failures, ok = 0)"
        return Section("judge", title, no_data(hint), queries=(extent_sql, summary_sql))
    span = max((last - first).total_seconds(), 1.0)
    step = nice_step(span, cfg.max_points)
    # A day when there is more than a few days of data; else an eighth of the span.
    lookback = DAY if span >= 3 * DAY else max(step, nice_step(span, 8))
    rolling_sql = scope.sql(JUDGE_ROLLING_SQL)
    rows = store.query(
        rolling_sql, scope.params(step=step, lookback=max(0, lookback - step))
    ).dicts()
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        series[(row["dimension"], row["adapter_version"])].append(row)
    known = list(_DIMENSION_LABELS)
    dimensions = sorted(
        {k[0] for k in series}, key=lambda d: (known.index(d) if d in known else len(known), d)
    )
    first_seen: dict[str, datetime] = {}
    for (_, adapter), group in series.items():
        first_seen[adapter] = min(group[0]["t"], first_seen.get(adapter, group[0]["t"]))
    adapters = sorted(first_seen, key=lambda a: (first_seen[a], a))
    fig = new_figure(11, 2.3 * len(dimensions) + 0.6, constrained=False)
    set_margins(fig, left=0.8, right=0.2, top=0.7, bottom=0.5)
    axes = fig.subplots(len(dimensions), 1, squeeze=False, sharex=True)[:, 0]
    for ax, dimension in zip(axes, dimensions, strict=True):
        for i, adapter in enumerate(adapters):
            pts = series.get((dimension, adapter), [])
            if not pts:
                continue
            newest = pts[-1]
            ax.plot(
                [p["t"] for p in pts],
                [p["rolling_mean"] for p in pts],
                color=f"C{i}",
                lw=1.6,
                label=(
                    f"{adapter}: newest {float(newest['rolling_mean']):.2f} "
                    f"(n={fmt_n(newest['rolling_n'])} in the last {fmt_duration(lookback)})"
                ),
            )
        if dimension == "refusal":
            ax.set_ylim(-0.02, 1.02)
        elif dimension in _DIMENSION_LABELS:
            ax.set_ylim(0.9, 5.1)
        ax.set_ylabel(dimension)
        ax.set_title(_DIMENSION_LABELS.get(dimension, dimension), fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="lower left")
        time_axis(ax)
    fig.suptitle(
        f"{scope.base_model}: judge means over a trailing {fmt_duration(lookback)}, step {fmt_duration(step)}",
        fontsize=11,
    )
    save_png(fig, out / "judge_means.png", cfg.dpi)
    table = html_table(
        [
            "dimension",
            "adapter",
            "mean over range",
            "n scored",
            "judge failures",
            "injection flags",
            "last score",
        ],
        [
            (
                esc(r["dimension"]),
                esc(r["adapter_version"]),
                fmt_num(r["mean_score"], 2),
                fmt_n(r["scored"]),
                fmt_n(r["failures"]),
                fmt_n(r["injection_flags"]),
                fmt_ts(r["last"]),
            )
            for r in summary
        ],
    )
    body = (
        f"<p>{fmt_n(n_scored)} scored verdicts from {fmt_ts(first)} to {fmt_ts(last)} UTC. Each "
        f"point is the mean of the scores in the trailing {fmt_duration(lookback)}; the legend "
        "gives the newest mean and how many scores it rests on (n). Refusal is a rate: a "
        "rise is bad; format and factual are 1–5: a drop is bad.</p>"
        + img_tag("judge_means.png", "Judge rolling means per dimension")
        + table
    )
    return Section(
        "judge",
        title,
        body,
        ("judge_means.png",),
        int(n_scored),
        (extent_sql, rolling_sql, summary_sql),
    )
