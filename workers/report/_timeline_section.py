"""The retrain and adapter timeline: alerts, retrain gate and trainer decisions and adapter
versions in lanes (``timeline.png``), with tables of job events and adapters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workers.report._config import ReportConfig, Section
from workers.report._html import esc, fmt_n, fmt_ts, html_table, img_tag, no_data
from workers.report._plots import SEVERITY_COLORS, new_figure, nice_step, save_png, time_axis
from workers.report._queries import (
    TIMELINE_ADAPTERS_SQL,
    TIMELINE_ALERTS_SQL,
    TIMELINE_HELD_SQL,
    TIMELINE_JOBS_SQL,
    Scope,
)

if TYPE_CHECKING:
    from workers.store import Store

_JOB_MARKERS = {
    "fired": ("^", "tab:purple"),
    "forced": ("^", "black"),
    "started": (">", "tab:blue"),
    "promoted": ("*", "tab:green"),
    "rejected": ("X", "tab:red"),
    "refused": ("x", "tab:gray"),
    "failed": ("x", "black"),
}


_ADAPTER_COLORS = {
    "trained": "tab:blue",
    "promoted": "tab:green",
    "deployed": "tab:green",
    "rejected": "tab:red",
    "rolled_back": "tab:orange",
    "failed": "black",
}


def timeline_section(store: Store, scope: Scope, out: Path, cfg: ReportConfig) -> Section:
    title = "Retrain and adapter timeline"
    alerts = store.query(TIMELINE_ALERTS_SQL, scope.params()).dicts()
    jobs = store.query(TIMELINE_JOBS_SQL, scope.params()).dicts()
    adapters = store.query(TIMELINE_ADAPTERS_SQL, scope.params()).dicts()
    times = [r["ts"] for r in alerts + jobs] + [r["updated_at"] for r in adapters]
    span = (max(times) - min(times)).total_seconds() if times else 3600.0
    step = nice_step(max(span, 1.0), cfg.max_points)
    held = store.query(TIMELINE_HELD_SQL, scope.params(step=step)).rows
    queries = (TIMELINE_ALERTS_SQL, TIMELINE_JOBS_SQL, TIMELINE_HELD_SQL, TIMELINE_ADAPTERS_SQL)
    n_held = sum(int(n) for _, n in held)
    total = len(alerts) + len(jobs) + len(adapters) + n_held
    if not total:
        return Section(
            "timeline",
            title,
            no_data("no alerts, retrain_jobs or adapters rows in range"),
            queries=queries,
        )
    fig = new_figure(12, 3.6)
    ax = fig.subplots()
    lanes = ["adapters", "trainer", "retrain gate", "alerts"]
    # alerts: one marker per alert, coloured by severity
    for severity, color in SEVERITY_COLORS.items():
        hits = [a["ts"] for a in alerts if a["severity"] == severity]
        if hits:
            ax.scatter(
                hits,
                [3] * len(hits),
                marker="|",
                s=120,
                color=color,
                label=f"{severity} alerts ({len(hits)})",
            )
    if held:
        ax.scatter(
            [t for t, _ in held],
            [2] * len(held),
            marker=".",
            s=10,
            color="0.6",
            label=f"gate held ({n_held})",
        )
    for decision, (marker, color) in _JOB_MARKERS.items():
        hits = [j for j in jobs if j["decision"] == decision]
        if not hits:
            continue
        lane = 2 if decision in ("fired", "forced") else 1
        ax.scatter(
            [j["ts"] for j in hits],
            [lane] * len(hits),
            marker=marker,
            s=90,
            color=color,
            zorder=3,
            label=f"{decision} ({len(hits)})",
        )
    for a in adapters:
        color = _ADAPTER_COLORS.get(str(a["status"]), "tab:gray")
        ax.scatter([a["updated_at"]], [0], marker="o", s=70, color=color, zorder=3)
        ax.annotate(
            f"{a['version']} ({a['status']})",
            (a["updated_at"], 0),
            xytext=(4, 6),
            textcoords="offset points",
            fontsize=8,
            rotation=20,
        )
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.7, 3.7)
    time_axis(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{scope.base_model}: alerts, retrain decisions and adapters", fontsize=10)
    save_png(fig, out / "timeline.png", cfg.dpi)
    job_rows = [
        (
            fmt_ts(j["ts"]),
            esc(j["job_id"]),
            esc(j["adapter_version"]),
            esc(j["decision"]),
            esc(str(j["reason"])[:200]),
        )
        for j in jobs
    ]
    adapter_rows = [
        (
            fmt_ts(a["updated_at"]),
            esc(a["version"]),
            esc(a["parent_version"]),
            esc(a["method"]),
            esc(a["status"]),
            esc(a["job_id"]),
        )
        for a in adapters
    ]
    body = (
        f"<p>{fmt_n(len(alerts))} alerts, {fmt_n(n_held)} held gate decisions, {fmt_n(len(jobs))} "
        f"retrain job events and {fmt_n(len(adapters))} adapter versions (their newest status) "
        "in range.</p>"
        + img_tag("timeline.png", "Retrain and adapter timeline")
        + "<h3>Retrain jobs</h3>"
        + (
            html_table(["time", "job", "incumbent", "decision", "reason"], job_rows)
            if job_rows
            else no_data("no retrain job has fired or run in range")
        )
        + "<h3>Adapters</h3>"
        + (
            html_table(["updated", "version", "parent", "method", "status", "job"], adapter_rows)
            if adapter_rows
            else no_data("no adapter was registered in range")
        )
    )
    return Section("timeline", title, body, ("timeline.png",), total, queries)
