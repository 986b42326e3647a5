"""Recent alerts: counts per kind and severity, and the newest alerts with value, threshold,
p-value and n."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.report._config import ReportConfig, Section
from workers.report._html import esc, fmt_n, fmt_num, fmt_ts, html_table, no_data
from workers.report._queries import ALERT_COUNTS_SQL, RECENT_ALERTS_SQL, Scope

if TYPE_CHECKING:
    from workers.store import Store


def alerts_section(store: Store, scope: Scope, cfg: ReportConfig) -> Section:
    title = "Recent alerts"
    recent_sql, counts_sql = scope.sql(RECENT_ALERTS_SQL), scope.sql(ALERT_COUNTS_SQL)
    counts = store.query(counts_sql, scope.params()).rows
    total = sum(int(n) for _, _, n in counts)
    if not total:
        return Section(
            "alerts", title, no_data("no alerts in range"), queries=(recent_sql, counts_sql)
        )
    rows = store.query(recent_sql, scope.params(limit=cfg.alerts_limit)).dicts()
    summary = ", ".join(f"{esc(k)}/{esc(s)}: {fmt_n(n)}" for k, s, n in counts)
    table = html_table(
        [
            "time",
            "adapter",
            "kind",
            "feature",
            "window",
            "severity",
            "value",
            "threshold",
            "p-value",
            "n",
            "message",
        ],
        [
            (
                fmt_ts(r["ts"]),
                esc(r["adapter_version"]),
                esc(r["kind"]),
                esc(r["feature"]),
                esc(r["window"]),
                f'<span class="status-{esc(r["severity"])}">{esc(r["severity"])}</span>',
                fmt_num(r["value"]),
                fmt_num(r["threshold"]),
                "–" if r["p_value"] is None else f"{float(r['p_value']):.2g}",
                fmt_n(r["sample_size"]),
                esc(r["message"]),
            )
            for r in rows
        ],
        cls="alerts",
    )
    body = (
        f"<p>{fmt_n(total)} alerts in range ({summary}); the newest {len(rows)} below, each "
        "with the sample size n it was computed on.</p>" + table
    )
    return Section("alerts", title, body, (), total, (recent_sql, counts_sql))
