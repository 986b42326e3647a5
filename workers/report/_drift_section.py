"""The drift sections: PSI and JSD over time per feature and window (``drift.png`` with the
newest evaluation's table) and the compact overview (``drift_overview.png``), from the
``drift_stats`` rows the drift monitor wrote."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.baseline import FEATURES
from workers.report._config import HERO, WINDOW_ORDER, ReportConfig, Section
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
from workers.report._plots import (
    LINESTYLES,
    PALETTE,
    SEVERITY_COLORS,
    new_figure,
    nice_step,
    psi_axis,
    save_png,
    set_margins,
    time_axis,
)
from workers.report._queries import (
    DRIFT_ALERTS_SQL,
    DRIFT_EXTENT_SQL,
    DRIFT_LATEST_SQL,
    DRIFT_SERIES_SQL,
    Scope,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from workers.store import Store


def _window_sort(window: str) -> int:
    return WINDOW_ORDER.index(window) if window in WINDOW_ORDER else len(WINDOW_ORDER)


def _feature_sort(feature: str) -> tuple[int, str]:
    return (FEATURES.index(feature) if feature in FEATURES else len(FEATURES), feature)


def drift_sections(
    store: Store, scope: Scope, out: Path, cfg: ReportConfig
) -> tuple[Section, Section]:
    """The drift grid (``drift.png`` with its table) and the overview (``drift_overview.png``)."""
    extent_sql = scope.sql(DRIFT_EXTENT_SQL)
    n_rows, first, last = store.query(extent_sql, scope.params()).rows[0]
    if not n_rows:
        hint = "no drift_stats rows in range; the worker's drift evaluator writes them"
        return (
            Section("overview", "Overview", no_data(hint), queries=(extent_sql,)),
            Section("drift", "Drift over time", no_data(hint), queries=(extent_sql,)),
        )
    step = nice_step(max((last - first).total_seconds(), 1.0), cfg.max_points)
    series_sql, latest_sql, alerts_sql = (
        scope.sql(DRIFT_SERIES_SQL),
        scope.sql(DRIFT_LATEST_SQL),
        scope.sql(DRIFT_ALERTS_SQL),
    )
    series = store.query(series_sql, scope.params(step=step)).dicts()
    latest = store.query(latest_sql, scope.params()).dicts()
    alerts = store.query(alerts_sql, scope.params()).dicts()
    drift = _DriftData.of(series, latest, alerts)

    _drift_grid(drift, scope, step, out / "drift.png", cfg.dpi)
    hero_window = (
        cfg.hero_window
        if cfg.hero_window in drift.windows
        else max(drift.windows, key=lambda w: sum(1 for r in series if r["window"] == w))
    )
    _drift_hero(drift, scope, hero_window, out / HERO)

    rows = sorted(
        latest,
        key=lambda r: (
            _feature_sort(r["feature"]),
            _window_sort(r["window"]),
            drift.adapters.index(r["adapter_version"])
            if r["adapter_version"] in drift.adapters
            else len(drift.adapters),
        ),
    )
    table = html_table(
        [
            "feature",
            "window",
            "adapter",
            "last evaluated",
            "PSI",
            "JSD",
            "p (adjusted)",
            "n (window)",
            "n (baseline)",
            "status",
            "evaluations",
        ],
        [
            (
                esc(r["feature"]),
                esc(r["window"]),
                esc(r["adapter_version"]),
                fmt_ts(r["last"]),
                fmt_num(r["psi"]),
                fmt_num(r["jsd"]),
                f"{float(r['p_adjusted']):.2g}",
                fmt_n(r["sample_size"]),
                fmt_n(r["baseline_size"]),
                f'<span class="status-{esc(r["status"])}">{esc(r["status"])}</span>',
                fmt_n(r["evaluations"]),
            )
            for r in rows
        ],
    )
    drift_body = (
        f"<p>{fmt_n(n_rows)} drift evaluations from {fmt_ts(first)} to {fmt_ts(last)} UTC, drawn per "
        f"{fmt_duration(step)} step (the largest value in each step). Dashed lines: PSI warn "
        f"{drift.warn:g} and alert {drift.alert:g}; triangles: drift alerts at their PSI. A "
        "window alerts only when its PSI passes the threshold <em>and</em> the homogeneity "
        "test (exact where counts are small) rejects at its p-value Holm-adjusted over every "
        "test of the evaluation (the table's p), so every legend entry gives the window's "
        "newest sample size n; "
        "evaluations on too few events (status <code>insufficient</code>) are gaps.</p>"
        + img_tag("drift.png", "PSI and JSD over time per feature")
        + "<h3>Newest evaluation per feature, window and adapter</h3>"
        + table
    )
    overview_body = (
        f"<p>PSI of every feature on the rolling {esc(hero_window)} window against the "
        "training baseline, with the thresholds and the alerts raised on that window; n is "
        "the window's newest sample size per adapter.</p>" + img_tag(HERO, "Drift overview")
    )
    queries = (extent_sql, series_sql, latest_sql, alerts_sql)
    return (
        Section("overview", "Overview", overview_body, (HERO,), int(n_rows), queries[1:2]),
        Section("drift", "Drift over time", drift_body, ("drift.png",), int(n_rows), queries),
    )


@dataclass(frozen=True)
class _DriftData:
    """Drift query results arranged for drawing."""

    series: dict[tuple[str, str, str], list[dict[str, Any]]]  # (feature, window, adapter)
    newest_n: dict[tuple[str, str, str], int]
    alerts: list[dict[str, Any]]
    features: list[str]
    windows: list[str]
    adapters: list[str]  # in order of first appearance
    warn: float
    alert: float

    @classmethod
    def of(
        cls,
        series: list[dict[str, Any]],
        latest: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
    ) -> _DriftData:
        by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        first_seen: dict[str, datetime] = {}
        for row in series:
            by_key[(row["feature"], row["window"], row["adapter_version"])].append(row)
            seen = first_seen.get(row["adapter_version"])
            if seen is None or row["t"] < seen:
                first_seen[row["adapter_version"]] = row["t"]
        return cls(
            series=dict(by_key),
            newest_n={
                (r["feature"], r["window"], r["adapter_version"]): int(r["sample_size"])
                for r in latest
            },
            alerts=alerts,
            features=sorted({k[0] for k in by_key}, key=_feature_sort),
            windows=sorted({k[1] for k in by_key}, key=_window_sort),
            adapters=sorted(first_seen, key=lambda a: (first_seen[a], a)),
            warn=min((float(r["psi_warn"]) for r in series), default=0.1),
            alert=min((float(r["psi_alert"]) for r in series), default=0.2),
        )

    def points(self, feature: str, window: str, adapter: str, column: str) -> tuple[list, list]:
        """Times and values; a step with only ``insufficient`` evaluations is a gap (NaN)."""
        rows = self.series.get((feature, window, adapter), [])
        values = [math.nan if r[column] is None else float(r[column]) for r in rows]
        return [r["t"] for r in rows], values

    def style(self, adapter: str) -> Any:  # a matplotlib linestyle
        return LINESTYLES[self.adapters.index(adapter) % len(LINESTYLES)]


def _thresholds(ax: Axes, drift: _DriftData) -> None:
    ax.axhline(drift.warn, color="tab:orange", lw=1, ls="--", label=f"PSI warn {drift.warn:g}")
    ax.axhline(drift.alert, color="tab:red", lw=1, ls="--", label=f"PSI alert {drift.alert:g}")


def _alert_marks(ax: Axes, alerts: list[dict[str, Any]], label: str) -> None:
    for severity in ("warn", "alert"):
        hits = [a for a in alerts if a["severity"] == severity]
        if hits:
            ax.scatter(
                [a["ts"] for a in hits],
                [a["value"] for a in hits],
                marker="v",
                s=24,
                color=SEVERITY_COLORS[severity],
                zorder=3,
                label=f"{label}: {severity} ({len(hits)})",
            )


def _drift_grid(drift: _DriftData, scope: Scope, step: int, path: Path, dpi: int) -> None:
    fig = new_figure(14, 2.3 * len(drift.features) + 0.9, constrained=False)
    set_margins(fig, left=0.8, right=2.9, top=0.7, bottom=0.5)
    axes = fig.subplots(len(drift.features), 2, squeeze=False, sharex=True)
    colors = {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(drift.windows)}
    several = len(drift.adapters) > 1
    for (ax_psi, ax_jsd), feature in zip(axes, drift.features, strict=True):
        psi_values: list[float] = []
        for window in drift.windows:
            for adapter in drift.adapters:
                if (feature, window, adapter) not in drift.series:
                    continue
                kw = {"color": colors[window], "linestyle": drift.style(adapter), "lw": 1.4}
                ts, values = drift.points(feature, window, adapter, "psi")
                psi_values += values
                n = drift.newest_n.get((feature, window, adapter), 0)
                who = f"{adapter} · " if several else ""
                ax_psi.plot(ts, values, label=f"{who}{window} (n={fmt_n(n)})", **kw)
                ax_jsd.plot(*drift.points(feature, window, adapter, "jsd"), **kw)
        _thresholds(ax_psi, drift)
        _alert_marks(ax_psi, [a for a in drift.alerts if a["feature"] == feature], "alerts")
        psi_axis(ax_psi, psi_values, drift.warn, drift.alert)
        ax_jsd.set_ylim(0, max(0.05, min(1.0, ax_jsd.get_ylim()[1])))
        ax_psi.set_ylabel(feature)
        handles, labels = ax_psi.get_legend_handles_labels()
        ax_jsd.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        for ax in (ax_psi, ax_jsd):
            time_axis(ax)
    axes[0][0].set_title("PSI (max per step)", fontsize=10)
    axes[0][1].set_title("JSD, base 2 (max per step)", fontsize=10)
    fig.suptitle(f"{scope.base_model}: drift per feature, step {fmt_duration(step)}", fontsize=11)
    save_png(fig, path, dpi)


def _drift_hero(drift: _DriftData, scope: Scope, window: str, path: Path) -> None:
    """One axis: every feature's PSI on one window, thresholds, alerts; sized for a README."""
    from matplotlib.lines import Line2D

    fig = new_figure(11, 4.2)
    ax = fig.subplots()
    psi_values: list[float] = []
    handles: list[Any] = []
    for i, feature in enumerate(drift.features):
        color = PALETTE[i % len(PALETTE)]
        for adapter in drift.adapters:
            if (feature, window, adapter) in drift.series:
                ts, values = drift.points(feature, window, adapter, "psi")
                psi_values += values
                ax.plot(ts, values, color=color, linestyle=drift.style(adapter), lw=1.8)
        handles.append(Line2D([], [], color=color, lw=1.8, label=feature))
    for adapter in drift.adapters:
        n = max(
            (v for (f, w, a), v in drift.newest_n.items() if w == window and a == adapter),
            default=0,
        )
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                linestyle=drift.style(adapter),
                lw=1.4,
                label=f"adapter {adapter} (newest n={fmt_n(n)})",
            )
        )
    _thresholds(ax, drift)
    marks = [a for a in drift.alerts if a["window"] == window]
    _alert_marks(ax, marks, "alerts")
    extra, labels = ax.get_legend_handles_labels()
    handles += [h for h, lab in zip(extra, labels, strict=True) if not lab.startswith("_")]
    psi_axis(ax, psi_values, drift.warn, drift.alert)
    time_axis(ax)
    ax.set_ylabel("PSI vs training baseline")
    ax.set_title(
        f"{scope.base_model}: input and output drift, rolling {window} window", fontsize=11
    )
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path, 150)
