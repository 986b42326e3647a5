"""A static HTML report with PNG plots, built only from ClickHouse SQL over the store.

:func:`build_report` queries the store (``drift_stats``, ``window_counts`` with the
``baselines`` payload, ``judge_scores``, ``golden_runs``, ``retrain_jobs``, ``adapters``,
``alerts``) for one base model over a time range, renders one PNG per section with
matplotlib (``Figure`` objects, no pyplot state, Agg canvas) and writes ``index.html``
next to them. Every statistic on the page carries its sample size. A section whose tables
have no rows says "no data yet" instead of failing; the page is always written.

Sections: drift over time (PSI and JSD per feature and window, thresholds, alert markers),
cluster shares of the newest 24 h vs the baseline, output length vs the baseline, judge
rolling means per dimension, golden pass rate per adapter version, the retrain/adapter
timeline, and the most recent alerts. ``drift_overview.png`` is a compact figure of the
same drift (one axis, one window) for a README.

>>> report = build_report(store, "report/", ReportConfig(base_model="m"))  # doctest: +SKIP
>>> report.index                                                           # doctest: +SKIP
PosixPath('report/index.html')
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.baseline import FEATURES, Baseline, load_baseline_by_id
from workers.exceptions import BaselineError
from workers.stats import chi2_homogeneity, jsd, psi

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from workers.store import Store

__all__ = [
    "FIGURES",
    "HERO",
    "Report",
    "ReportConfig",
    "Section",
    "build_report",
    "parse_since",
    "section_summary",
]

#: The drift windows in display order (``workers.drift.WINDOWS``).
WINDOW_ORDER: tuple[str, ...] = ("1h", "24h", "7d")
#: The compact README figure.
HERO = "drift_overview.png"
#: Every PNG the report may write; stale ones from an earlier run are removed.
FIGURES: tuple[str, ...] = (
    HERO,
    "drift.png",
    "cluster_shares.png",
    "output_length.png",
    "judge_means.png",
    "golden_pass_rate.png",
    "timeline.png",
)
#: Time-series steps the report picks from (seconds): round numbers on the axis.
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
_DAY = 86400
#: The comparison window of the share plots: the 24 h up to the newest counts.
SHARES_WINDOW = timedelta(hours=24)
#: Where the ADAPTER filter goes in a query (a constant fragment; the value is bound).
_ADAPTER = "/*ADAPTER*/"
_SEVERITY_COLORS = {"info": "tab:gray", "warn": "tab:orange", "alert": "tab:red", "page": "black"}


# --------------------------------------------------------------------------------------
# options and results
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportConfig:
    """What the report covers and how it draws.

    ``base_model`` None picks the model with the most recent activity (the page names the
    others). ``adapter`` None covers every adapter of the model; golden runs and the
    retrain timeline always show every adapter version, since comparing versions is
    their point.
    """

    base_model: str | None = None
    adapter: str | None = None
    since: timedelta = timedelta(days=7)
    hero_window: str = "7d"
    max_points: int = 240
    alerts_limit: int = 50
    dpi: int = 110

    def __post_init__(self) -> None:
        if self.since <= timedelta(0):
            raise ValueError(f"since must be a positive duration, got {self.since}")
        if self.hero_window not in WINDOW_ORDER:
            raise ValueError(f"hero_window must be one of {WINDOW_ORDER}, got {self.hero_window!r}")
        if not 10 <= self.max_points <= 10_000:
            raise ValueError(f"max_points must be in [10, 10000], got {self.max_points}")
        if not 1 <= self.alerts_limit <= 10_000:
            raise ValueError(f"alerts_limit must be in [1, 10000], got {self.alerts_limit}")
        if not 50 <= self.dpi <= 400:
            raise ValueError(f"dpi must be in [50, 400], got {self.dpi}")


@dataclass(frozen=True)
class Section:
    """One part of the page: its HTML, the PNGs it shows, and how many observations it
    rests on (0 = "no data yet")."""

    key: str
    title: str
    body: str
    images: tuple[str, ...] = ()
    n: int = 0
    queries: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.n == 0


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    index: Path
    base_model: str | None
    adapter: str | None
    start: datetime
    end: datetime
    sections: tuple[Section, ...]
    other_models: tuple[str, ...] = ()

    @property
    def images(self) -> list[Path]:
        return [self.out_dir / name for s in self.sections for name in s.images]

    @property
    def hero(self) -> Path | None:
        """``drift_overview.png`` when there was drift data to draw, else None."""
        path = self.out_dir / HERO
        return path if any(HERO in s.images for s in self.sections) else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": _DAY, "w": 7 * _DAY}


def parse_since(text: str, now: datetime) -> timedelta:
    """``--since``: a duration (``90m``, ``36h``, ``7d``, ``2w``) or an ISO date/time (UTC
    when it has no zone), as the duration back from ``now``.

    >>> parse_since("36h", datetime(2026, 3, 2, tzinfo=UTC))
    datetime.timedelta(days=1, seconds=43200)
    >>> parse_since("2026-03-01", datetime(2026, 3, 2, 12, tzinfo=UTC))
    datetime.timedelta(days=1, seconds=43200)
    """
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds <= 0:
            raise ValueError(f"--since {text!r}: the duration must be positive")
        return timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (30m, 24h, 7d, 2w) nor an ISO "
            "date/time (2026-03-01 or 2026-03-01T12:00)"
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at >= now:
        raise ValueError(f"--since {text!r} is not in the past (now is {now:%Y-%m-%d %H:%M} UTC)")
    return now - at


# --------------------------------------------------------------------------------------
# SQL: every number on the page comes from one of these
# --------------------------------------------------------------------------------------
_RANGE64 = "ts >= {start:DateTime64(3, 'UTC')} AND ts <= {end:DateTime64(3, 'UTC')}"

MODELS_SQL = f"""
SELECT base_model, max(last) AS last FROM (
    SELECT toString(base_model) AS base_model, max(ts) AS last
    FROM drift_stats WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), toDateTime64(max(bucket), 3, 'UTC') FROM window_counts
    WHERE bucket >= {{start:DateTime64(3, 'UTC')}} AND bucket <= {{end:DateTime64(3, 'UTC')}}
    GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM judge_scores WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM golden_runs WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM alerts WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(ts) FROM retrain_jobs WHERE {_RANGE64} GROUP BY base_model
    UNION ALL
    SELECT toString(base_model), max(updated_at) FROM adapters
    WHERE updated_at >= {{start:DateTime64(3, 'UTC')}} AND updated_at <= {{end:DateTime64(3, 'UTC')}}
    GROUP BY base_model
)
GROUP BY base_model ORDER BY last DESC, base_model
"""

TRAFFIC_SQL = f"""
SELECT count() AS requests FROM inference_logs
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
"""

DRIFT_EXTENT_SQL = f"""
SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
"""

DRIFT_SERIES_SQL = f"""
SELECT feature, window, adapter_version,
       toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t,
       maxIfOrNull(psi, status != 'insufficient') AS psi,
       maxIfOrNull(jsd, status != 'insufficient') AS jsd,
       argMax(sample_size, ts) AS sample_size,
       argMax(psi_warn, ts) AS psi_warn, argMax(psi_alert, ts) AS psi_alert
FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY feature, window, adapter_version, t
ORDER BY feature, window, adapter_version, t
"""

DRIFT_LATEST_SQL = f"""
SELECT feature, window, adapter_version, max(ts) AS last, argMax(psi, ts) AS psi,
       argMax(jsd, ts) AS jsd, argMax(p_value, ts) AS p_value,
       argMax(sample_size, ts) AS sample_size, argMax(baseline_size, ts) AS baseline_size,
       argMax(status, ts) AS status, count() AS evaluations
FROM drift_stats
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY feature, window, adapter_version
"""

DRIFT_ALERTS_SQL = f"""
SELECT ts, adapter_version, feature, window, severity, value FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
  AND kind IN ('embedding_drift', 'output_drift'){_ADAPTER}
ORDER BY ts LIMIT 20000
"""

NEWEST_COUNTS_SQL = f"""
SELECT baseline_id, max(bucket) AS last, sum(count) AS n FROM window_counts
WHERE base_model = {{m:String}} AND feature = {{f:String}}
  AND bucket >= {{start:DateTime64(3, 'UTC')}} AND bucket <= {{end:DateTime64(3, 'UTC')}}{_ADAPTER}
GROUP BY baseline_id ORDER BY last DESC, n DESC LIMIT 1
"""

BIN_COUNTS_SQL = f"""
SELECT bin, sum(count) AS n FROM window_counts
WHERE base_model = {{m:String}} AND feature = {{f:String}} AND baseline_id = {{b:String}}
  AND bucket > {{from:DateTime64(3, 'UTC')}} AND bucket <= {{last:DateTime64(3, 'UTC')}}{_ADAPTER}
GROUP BY bin ORDER BY bin
"""

BASELINE_SQL = (
    "SELECT payload FROM baselines FINAL WHERE baseline_id = {b:String} "
    "ORDER BY created_at DESC LIMIT 1"
)

JUDGE_EXTENT_SQL = f"""
SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM judge_scores FINAL
WHERE base_model = {{m:String}} AND ok = 1 AND score IS NOT NULL AND {_RANGE64}{_ADAPTER}
"""

# The rolling mean is a window function over per-step sums: RANGE over the step's start
# in seconds, so a step with no scores does not stretch the window.
JUDGE_ROLLING_SQL = f"""
SELECT dimension, adapter_version, t,
       sum(s) OVER w / sum(n) OVER w AS rolling_mean, sum(n) OVER w AS rolling_n
FROM (
    SELECT dimension, adapter_version,
           toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t,
           sum(toFloat64(assumeNotNull(score))) AS s, count() AS n
    FROM judge_scores FINAL
    WHERE base_model = {{m:String}} AND ok = 1 AND score IS NOT NULL
      AND {_RANGE64}{_ADAPTER}
    GROUP BY dimension, adapter_version, t
)
WINDOW w AS (PARTITION BY dimension, adapter_version ORDER BY toUInt32(toDateTime(t))
             RANGE BETWEEN {{lookback:UInt32}} PRECEDING AND CURRENT ROW)
ORDER BY dimension, adapter_version, t
"""

JUDGE_SUMMARY_SQL = f"""
SELECT dimension, adapter_version,
       avgIf(score, ok = 1 AND score IS NOT NULL) AS mean_score,
       countIf(ok = 1 AND score IS NOT NULL) AS scored, countIf(ok = 0) AS failures,
       sum(injection_flag) AS injection_flags, max(ts) AS last
FROM judge_scores FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY dimension, adapter_version
ORDER BY dimension, adapter_version
"""

GOLDEN_RUNS_SQL = f"""
SELECT adapter_version, golden_set, ts, pass_rate FROM golden_runs FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
ORDER BY ts LIMIT 10000
"""

GOLDEN_SQL = f"""
SELECT adapter_version, golden_set, count() AS runs, min(ts) AS first_run,
       max(ts) AS last_run, argMax(pass_rate, ts) AS last_pass_rate,
       argMax(passed, ts) AS last_passed, argMax(total, ts) AS last_total,
       argMax(threshold, ts) AS threshold, avg(pass_rate) AS mean_pass_rate
FROM golden_runs FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
GROUP BY adapter_version, golden_set
ORDER BY first_run, adapter_version, golden_set
"""

TIMELINE_ALERTS_SQL = f"""
SELECT ts, kind, severity, adapter_version FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}
ORDER BY ts LIMIT 20000
"""

TIMELINE_JOBS_SQL = f"""
SELECT ts, job_id, adapter_version, decision, reason FROM retrain_jobs
WHERE base_model = {{m:String}} AND {_RANGE64} AND decision != 'held'
ORDER BY ts LIMIT 2000
"""

TIMELINE_HELD_SQL = f"""
SELECT toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})) AS t, count() AS n
FROM retrain_jobs
WHERE base_model = {{m:String}} AND {_RANGE64} AND decision = 'held'
GROUP BY t ORDER BY t
"""

TIMELINE_ADAPTERS_SQL = """
SELECT updated_at, version, parent_version, status, method, job_id FROM adapters FINAL
WHERE base_model = {m:String}
  AND updated_at >= {start:DateTime64(3, 'UTC')} AND updated_at <= {end:DateTime64(3, 'UTC')}
ORDER BY updated_at
"""

RECENT_ALERTS_SQL = f"""
SELECT ts, adapter_version, kind, feature, window, severity, value, threshold, p_value,
       sample_size, message
FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
ORDER BY ts DESC, alert_id LIMIT {{limit:UInt32}}
"""

ALERT_COUNTS_SQL = f"""
SELECT kind, severity, count() AS n FROM alerts FINAL
WHERE base_model = {{m:String}} AND {_RANGE64}{_ADAPTER}
GROUP BY kind, severity ORDER BY kind, severity
"""


@dataclass(frozen=True)
class _Scope:
    """The model, adapter filter and time range every query of one report shares."""

    base_model: str
    adapter: str | None
    start: datetime
    end: datetime

    def sql(self, text: str, column: str = "adapter_version") -> str:
        """``text`` with the adapter filter in place (the value itself is bound)."""
        fragment = "" if self.adapter is None else f" AND {column} = {{a:String}}"
        return text.replace(_ADAPTER, fragment)

    def params(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"m": self.base_model, "start": self.start, "end": self.end}
        if self.adapter is not None:
            out["a"] = self.adapter
        out.update(extra)
        return out


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _nice_step(span_s: float, max_points: int) -> int:
    """The smallest round step (seconds) that draws ``span_s`` in at most ``max_points``."""
    need = span_s / max_points
    for step in _STEPS:
        if step >= need:
            return step
    return _DAY * max(1, math.ceil(need / _DAY))


def _human(seconds: float) -> str:
    """``90`` -> ``'90 s'``, ``3600`` -> ``'1 h'``, ``86400`` -> ``'1 d'``."""
    for unit, size in (("d", _DAY), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def _n(value: Any) -> str:
    """A count with thousands separators."""
    return f"{int(value):,}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    number = float(value)
    if math.isnan(number):
        return "–"
    return f"{number:.{digits}f}"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else _esc(value)


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _empty(what: str) -> str:
    return f'<p class="empty">No data yet: {_esc(what)}</p>'


def _img(name: str, alt: str) -> str:
    return f'<img src="{_esc(name)}" alt="{_esc(alt)}">'


def _figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A Figure object, not pyplot: no global state, and savefig renders with Agg.

    Grids of axes get fixed margins (:func:`_margins`) instead of constrained layout, which
    costs seconds per figure on a busy 2-core machine.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained" if constrained else None)


def _margins(fig: Figure, *, left: float, right: float, top: float, bottom: float) -> None:
    """Fixed margins in inches."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=0.45,
        wspace=0.12,
    )


def _save(fig: Figure, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")


def _time_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)


def _window_sort(window: str) -> int:
    return WINDOW_ORDER.index(window) if window in WINDOW_ORDER else len(WINDOW_ORDER)


def _feature_sort(feature: str) -> tuple[int, str]:
    return (FEATURES.index(feature) if feature in FEATURES else len(FEATURES), feature)


_LINESTYLES = ("-", "--", ":", "-.")


def _sql_details(queries: Sequence[str]) -> str:
    if not queries:
        return ""
    text = "\n\n".join(q.strip() for q in queries)
    return f"<details><summary>SQL</summary><pre>{_esc(text)}</pre></details>"


# --------------------------------------------------------------------------------------
# drift over time (and the hero figure)
# --------------------------------------------------------------------------------------
def _drift_sections(
    store: Store, scope: _Scope, out: Path, cfg: ReportConfig
) -> tuple[Section, Section]:
    """The drift grid (``drift.png`` with its table) and the overview (``drift_overview.png``)."""
    extent_sql = scope.sql(DRIFT_EXTENT_SQL)
    n_rows, first, last = store.query(extent_sql, scope.params()).rows[0]
    if not n_rows:
        hint = "no drift_stats rows in range; the worker's drift evaluator writes them"
        return (
            Section("overview", "Overview", _empty(hint), queries=(extent_sql,)),
            Section("drift", "Drift over time", _empty(hint), queries=(extent_sql,)),
        )
    step = _nice_step(max((last - first).total_seconds(), 1.0), cfg.max_points)
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
    table = _table(
        [
            "feature",
            "window",
            "adapter",
            "last evaluated",
            "PSI",
            "JSD",
            "p-value",
            "n (window)",
            "n (baseline)",
            "status",
            "evaluations",
        ],
        [
            (
                _esc(r["feature"]),
                _esc(r["window"]),
                _esc(r["adapter_version"]),
                _ts(r["last"]),
                _num(r["psi"]),
                _num(r["jsd"]),
                f"{float(r['p_value']):.2g}",
                _n(r["sample_size"]),
                _n(r["baseline_size"]),
                f'<span class="status-{_esc(r["status"])}">{_esc(r["status"])}</span>',
                _n(r["evaluations"]),
            )
            for r in rows
        ],
    )
    drift_body = (
        f"<p>{_n(n_rows)} drift evaluations from {_ts(first)} to {_ts(last)} UTC, drawn per "
        f"{_human(step)} step (the largest value in each step). Dashed lines: PSI warn "
        f"{drift.warn:g} and alert {drift.alert:g}; triangles: drift alerts at their PSI. A "
        "window alerts only when its PSI passes the threshold <em>and</em> the chi-square "
        "test rejects, so every legend entry gives the window's newest sample size n; "
        "evaluations on too few events (status <code>insufficient</code>) are gaps.</p>"
        + _img("drift.png", "PSI and JSD over time per feature")
        + "<h3>Newest evaluation per feature, window and adapter</h3>"
        + table
    )
    overview_body = (
        f"<p>PSI of every feature on the rolling {_esc(hero_window)} window against the "
        "training baseline, with the thresholds and the alerts raised on that window; n is "
        "the window's newest sample size per adapter.</p>" + _img(HERO, "Drift overview")
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
        return _LINESTYLES[self.adapters.index(adapter) % len(_LINESTYLES)]


#: Line colours of windows / features: not orange or red, which mark the thresholds.
_PALETTE = ("C0", "C2", "C4", "C5", "C9", "C8", "C6")
_PSI_TICKS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def _psi_axis(ax: Axes, values: Iterable[float], warn: float, alert: float) -> None:
    """Symlog above 1 (so 0.1/0.2 stay readable next to a PSI of 5), ticks in plain numbers."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter

    finite = [v for v in values if not math.isnan(v)]
    peak = max([*finite, alert], default=alert)
    if peak > 1.0:
        ax.set_yscale("symlog", linthresh=max(warn, 0.05), linscale=1.0)
    top = peak * (1.6 if peak > 1.0 else 1.15)
    ax.set_ylim(0, top)
    ax.yaxis.set_major_locator(FixedLocator([t for t in _PSI_TICKS if t <= top]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(FixedLocator([]))


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
                color=_SEVERITY_COLORS[severity],
                zorder=3,
                label=f"{label}: {severity} ({len(hits)})",
            )


def _drift_grid(drift: _DriftData, scope: _Scope, step: int, path: Path, dpi: int) -> None:
    fig = _figure(14, 2.3 * len(drift.features) + 0.9, constrained=False)
    _margins(fig, left=0.8, right=2.9, top=0.7, bottom=0.5)
    axes = fig.subplots(len(drift.features), 2, squeeze=False, sharex=True)
    colors = {w: _PALETTE[i % len(_PALETTE)] for i, w in enumerate(drift.windows)}
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
                ax_psi.plot(ts, values, label=f"{who}{window} (n={_n(n)})", **kw)
                ax_jsd.plot(*drift.points(feature, window, adapter, "jsd"), **kw)
        _thresholds(ax_psi, drift)
        _alert_marks(ax_psi, [a for a in drift.alerts if a["feature"] == feature], "alerts")
        _psi_axis(ax_psi, psi_values, drift.warn, drift.alert)
        ax_jsd.set_ylim(0, max(0.05, min(1.0, ax_jsd.get_ylim()[1])))
        ax_psi.set_ylabel(feature)
        handles, labels = ax_psi.get_legend_handles_labels()
        ax_jsd.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        for ax in (ax_psi, ax_jsd):
            _time_axis(ax)
    axes[0][0].set_title("PSI (max per step)", fontsize=10)
    axes[0][1].set_title("JSD, base 2 (max per step)", fontsize=10)
    fig.suptitle(f"{scope.base_model}: drift per feature, step {_human(step)}", fontsize=11)
    _save(fig, path, dpi)


def _drift_hero(drift: _DriftData, scope: _Scope, window: str, path: Path) -> None:
    """One axis: every feature's PSI on one window, thresholds, alerts; sized for a README."""
    from matplotlib.lines import Line2D

    fig = _figure(11, 4.2)
    ax = fig.subplots()
    psi_values: list[float] = []
    handles: list[Any] = []
    for i, feature in enumerate(drift.features):
        color = _PALETTE[i % len(_PALETTE)]
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
                label=f"adapter {adapter} (newest n={_n(n)})",
            )
        )
    _thresholds(ax, drift)
    marks = [a for a in drift.alerts if a["window"] == window]
    _alert_marks(ax, marks, "alerts")
    extra, labels = ax.get_legend_handles_labels()
    handles += [h for h, lab in zip(extra, labels, strict=True) if not lab.startswith("_")]
    _psi_axis(ax, psi_values, drift.warn, drift.alert)
    _time_axis(ax)
    ax.set_ylabel("PSI vs training baseline")
    ax.set_title(
        f"{scope.base_model}: input and output drift, rolling {window} window", fontsize=11
    )
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path, 150)


# --------------------------------------------------------------------------------------
# bin shares now vs the baseline
# --------------------------------------------------------------------------------------
def _bin_labels(feature: str, baseline: Baseline) -> list[str]:
    fb = baseline.features[feature]
    if fb.edges is not None:
        edges = fb.edges
        out = []
        for b in range(fb.bins):
            lo = "–∞" if b == 0 else f"{edges[b - 1]:g}"
            hi = "∞" if b == len(edges) else f"{edges[b]:g}"
            out.append(f"[{lo}, {hi})")
        return out
    if feature == "embedding":
        return [("novelty" if b == baseline.k else f"c{b}") for b in range(fb.bins)]
    return [str(b) for b in range(fb.bins)]


def _shares_section(
    store: Store,
    scope: _Scope,
    out: Path,
    cfg: ReportConfig,
    *,
    key: str,
    feature: str,
    title: str,
    image: str,
    xlabel: str,
) -> Section:
    newest_sql, bins_sql = scope.sql(NEWEST_COUNTS_SQL), scope.sql(BIN_COUNTS_SQL)
    queries = (newest_sql, bins_sql, BASELINE_SQL)
    newest = store.query(newest_sql, scope.params(f=feature)).rows
    if not newest:
        return Section(
            key,
            title,
            _empty(f"no window_counts rows for feature '{feature}' in range"),
            queries=queries,
        )
    baseline_id, last, _ = newest[0]
    # ``bucket > window_from``: exactly the 24 h of minute buckets up to the newest one
    window_from = max(last - SHARES_WINDOW, scope.start - timedelta(seconds=1))
    counts_rows = store.query(
        bins_sql, scope.params(f=feature, b=baseline_id, **{"from": window_from, "last": last})
    ).rows
    try:
        baseline = load_baseline_by_id(store, str(baseline_id))
    except BaselineError as exc:
        return Section(key, title, _empty(f"baseline {baseline_id}: {exc}"), queries=queries)
    if baseline is None or feature not in baseline.features:
        return Section(
            key,
            title,
            _empty(
                f"the counts reference baseline {baseline_id}, which is not in the baselines "
                "table (or has no such feature)"
            ),
            queries=queries,
        )
    fb = baseline.features[feature]
    observed = np.zeros(fb.bins, dtype=np.int64)
    outside = 0
    for b, n in counts_rows:
        if 0 <= int(b) < fb.bins:
            observed[int(b)] = int(n)
        else:
            outside += int(n)
    n_now = int(observed.sum())
    if n_now == 0:
        return Section(key, title, _empty(f"no counts for '{feature}' in the newest 24 h"))
    now_shares = observed / n_now
    base_shares = np.asarray(fb.shares, dtype=np.float64)
    psi_value = psi(observed, np.asarray(fb.counts))
    jsd_value = jsd(observed, np.asarray(fb.counts))
    _, p_value = chi2_homogeneity(observed, np.asarray(fb.counts))
    labels = _bin_labels(feature, baseline)

    fig = _figure(max(6.0, 0.55 * fb.bins + 2.5), 3.8)
    ax = fig.subplots()
    x = np.arange(fb.bins)
    ax.bar(x - 0.2, base_shares, width=0.4, color="C7", label=f"baseline (n={_n(fb.n)})")
    ax.bar(x + 0.2, now_shares, width=0.4, color="C0", label=f"newest 24 h (n={_n(n_now)})")
    ax.set_xticks(
        x,
        labels,
        rotation=45 if fb.bins > 8 else 0,
        ha="right" if fb.bins > 8 else "center",
        fontsize=8,
    )
    ax.set_ylabel("share of events")
    ax.set_xlabel(xlabel)
    ax.set_title(
        f"{feature}: PSI {psi_value:.3f}, JSD {jsd_value:.3f}, p={p_value:.2g} "
        f"(n={_n(n_now)} vs baseline n={_n(fb.n)})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, out / image, cfg.dpi)

    table = _table(
        ["bin", "range", "baseline count", "baseline share", "newest 24 h count", "share"],
        [
            (
                b,
                _esc(labels[b]),
                _n(fb.counts[b]),
                f"{base_shares[b]:.1%}",
                _n(observed[b]),
                f"{now_shares[b]:.1%}",
            )
            for b in range(fb.bins)
        ],
        cls="compact",
    )
    note = (
        f" {_n(outside)} counts fell in bins the baseline does not have and are left out."
        if outside
        else ""
    )
    adapters = "every adapter" if scope.adapter is None else f"adapter {_esc(scope.adapter)}"
    body = (
        f"<p>Counts of {adapters} from {_ts(window_from)} to {_ts(last)} UTC (the 24 h up to "
        f"the newest counts; n = {_n(n_now)} events) against the held-out reference split of "
        f"baseline <code>{_esc(baseline_id)}</code> ({_esc(baseline.embedder)}, "
        f"n = {_n(fb.n)}). PSI {psi_value:.3f}, JSD {jsd_value:.3f}, chi-square "
        f"p = {p_value:.2g}.{note}</p>" + _img(image, title) + table
    )
    return Section(key, title, body, (image,), n_now, queries)


# --------------------------------------------------------------------------------------
# judge
# --------------------------------------------------------------------------------------
_DIMENSION_LABELS = {
    "format": "format compliance (1–5)",
    "factual": "factual consistency (1–5)",
    "refusal": "refusal rate (0–1)",
}


def _judge_section(store: Store, scope: _Scope, out: Path, cfg: ReportConfig) -> Section:
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
        return Section("judge", title, _empty(hint), queries=(extent_sql, summary_sql))
    span = max((last - first).total_seconds(), 1.0)
    step = _nice_step(span, cfg.max_points)
    # A day when there is more than a few days of data; else an eighth of the span.
    lookback = _DAY if span >= 3 * _DAY else max(step, _nice_step(span, 8))
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
    fig = _figure(11, 2.3 * len(dimensions) + 0.6, constrained=False)
    _margins(fig, left=0.8, right=0.2, top=0.7, bottom=0.5)
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
                    f"(n={_n(newest['rolling_n'])} in the last {_human(lookback)})"
                ),
            )
        if dimension == "refusal":
            ax.set_ylim(-0.02, 1.02)
        elif dimension in _DIMENSION_LABELS:
            ax.set_ylim(0.9, 5.1)
        ax.set_ylabel(dimension)
        ax.set_title(_DIMENSION_LABELS.get(dimension, dimension), fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="lower left")
        _time_axis(ax)
    fig.suptitle(
        f"{scope.base_model}: judge means over a trailing {_human(lookback)}, step {_human(step)}",
        fontsize=11,
    )
    _save(fig, out / "judge_means.png", cfg.dpi)
    table = _table(
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
                _esc(r["dimension"]),
                _esc(r["adapter_version"]),
                _num(r["mean_score"], 2),
                _n(r["scored"]),
                _n(r["failures"]),
                _n(r["injection_flags"]),
                _ts(r["last"]),
            )
            for r in summary
        ],
    )
    body = (
        f"<p>{_n(n_scored)} scored verdicts from {_ts(first)} to {_ts(last)} UTC. Each "
        f"point is the mean of the scores in the trailing {_human(lookback)}; the legend "
        "gives the newest mean and how many scores it rests on (n). Refusal is a rate: a "
        "rise is bad; format and factual are 1–5: a drop is bad.</p>"
        + _img("judge_means.png", "Judge rolling means per dimension")
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


# --------------------------------------------------------------------------------------
# golden sets
# --------------------------------------------------------------------------------------
def _golden_section(store: Store, scope: _Scope, out: Path, cfg: ReportConfig) -> Section:
    title = "Golden pass rate per adapter version"
    queries = (GOLDEN_SQL, GOLDEN_RUNS_SQL)
    rows = store.query(GOLDEN_SQL, scope.params()).dicts()
    if not rows:
        return Section("golden", title, _empty("no golden_runs rows in range"), queries=queries)
    runs_by_bar: dict[tuple[str, str], list[float]] = defaultdict(list)
    for adapter, golden_set, _, rate in store.query(GOLDEN_RUNS_SQL, scope.params()).rows:
        runs_by_bar[(str(adapter), str(golden_set))].append(float(rate))
    several_sets = len({r["golden_set"] for r in rows}) > 1
    labels = [
        f"{r['adapter_version']}\n{r['golden_set']}" if several_sets else r["adapter_version"]
        for r in rows
    ]
    fig = _figure(max(5.5, 1.3 * len(rows) + 2.5), 3.8)
    ax = fig.subplots()
    x = np.arange(len(rows))
    rates = [float(r["last_pass_rate"]) for r in rows]
    colors = [
        "tab:green" if rate >= float(r["threshold"]) else "tab:red"
        for rate, r in zip(rates, rows, strict=True)
    ]
    ax.bar(x, rates, width=0.6, color=colors, alpha=0.85)
    for i, r in enumerate(rows):
        every = runs_by_bar.get((r["adapter_version"], r["golden_set"]), [])
        offsets = np.linspace(-0.18, 0.18, len(every)) if len(every) > 1 else np.zeros(len(every))
        ax.scatter(i + offsets, every, s=14, color="black", zorder=3)
        ax.hlines(float(r["threshold"]), i - 0.4, i + 0.4, colors="black", linestyles="--", lw=1)
        ax.annotate(
            f"{r['last_passed']}/{r['last_total']}\n({r['runs']} run{'s' * (r['runs'] != 1)})",
            (i, rates[i]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("pass rate of the newest run")
    ax.set_title("golden set pass rate per adapter version", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, out / "golden_pass_rate.png", cfg.dpi)
    table = _table(
        [
            "adapter",
            "golden set",
            "runs",
            "newest pass rate",
            "passed / cases (newest)",
            "threshold",
            "mean pass rate",
            "first run",
            "newest run",
        ],
        [
            (
                _esc(r["adapter_version"]),
                _esc(r["golden_set"]),
                _n(r["runs"]),
                f"{float(r['last_pass_rate']):.1%}",
                f"{_n(r['last_passed'])} / {_n(r['last_total'])}",
                f"{float(r['threshold']):.0%}",
                f"{float(r['mean_pass_rate']):.1%}",
                _ts(r["first_run"]),
                _ts(r["last_run"]),
            )
            for r in rows
        ],
    )
    runs = sum(int(r["runs"]) for r in rows)
    body = (
        f"<p>{_n(runs)} golden runs of {_esc(scope.base_model)}; adapter versions in order "
        "of their first run. Bars: the newest run's pass rate, labelled passed/cases and "
        "the number of runs, green when it reaches its threshold (dashed); dots: every "
        "run.</p>" + _img("golden_pass_rate.png", "Golden pass rate per adapter version") + table
    )
    return Section("golden", title, body, ("golden_pass_rate.png",), runs, queries)


# --------------------------------------------------------------------------------------
# retrain / adapter timeline
# --------------------------------------------------------------------------------------
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


def _timeline_section(store: Store, scope: _Scope, out: Path, cfg: ReportConfig) -> Section:
    title = "Retrain and adapter timeline"
    alerts = store.query(TIMELINE_ALERTS_SQL, scope.params()).dicts()
    jobs = store.query(TIMELINE_JOBS_SQL, scope.params()).dicts()
    adapters = store.query(TIMELINE_ADAPTERS_SQL, scope.params()).dicts()
    times = [r["ts"] for r in alerts + jobs] + [r["updated_at"] for r in adapters]
    span = (max(times) - min(times)).total_seconds() if times else 3600.0
    step = _nice_step(max(span, 1.0), cfg.max_points)
    held = store.query(TIMELINE_HELD_SQL, scope.params(step=step)).rows
    queries = (TIMELINE_ALERTS_SQL, TIMELINE_JOBS_SQL, TIMELINE_HELD_SQL, TIMELINE_ADAPTERS_SQL)
    n_held = sum(int(n) for _, n in held)
    total = len(alerts) + len(jobs) + len(adapters) + n_held
    if not total:
        return Section(
            "timeline",
            title,
            _empty("no alerts, retrain_jobs or adapters rows in range"),
            queries=queries,
        )
    fig = _figure(12, 3.6)
    ax = fig.subplots()
    lanes = ["adapters", "trainer", "retrain gate", "alerts"]
    # alerts: one marker per alert, coloured by severity
    for severity, color in _SEVERITY_COLORS.items():
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
    _time_axis(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{scope.base_model}: alerts, retrain decisions and adapters", fontsize=10)
    _save(fig, out / "timeline.png", cfg.dpi)
    job_rows = [
        (
            _ts(j["ts"]),
            _esc(j["job_id"]),
            _esc(j["adapter_version"]),
            _esc(j["decision"]),
            _esc(str(j["reason"])[:200]),
        )
        for j in jobs
    ]
    adapter_rows = [
        (
            _ts(a["updated_at"]),
            _esc(a["version"]),
            _esc(a["parent_version"]),
            _esc(a["method"]),
            _esc(a["status"]),
            _esc(a["job_id"]),
        )
        for a in adapters
    ]
    body = (
        f"<p>{_n(len(alerts))} alerts, {_n(n_held)} held gate decisions, {_n(len(jobs))} "
        f"retrain job events and {_n(len(adapters))} adapter versions (their newest status) "
        "in range.</p>"
        + _img("timeline.png", "Retrain and adapter timeline")
        + "<h3>Retrain jobs</h3>"
        + (
            _table(["time", "job", "incumbent", "decision", "reason"], job_rows)
            if job_rows
            else _empty("no retrain job has fired or run in range")
        )
        + "<h3>Adapters</h3>"
        + (
            _table(["updated", "version", "parent", "method", "status", "job"], adapter_rows)
            if adapter_rows
            else _empty("no adapter was registered in range")
        )
    )
    return Section("timeline", title, body, ("timeline.png",), total, queries)


# --------------------------------------------------------------------------------------
# alerts
# --------------------------------------------------------------------------------------
def _changes_section(store: Store, scope: _Scope) -> Section:
    """What changed in the newest 24 h, per adapter (``workers.drift``)."""
    from workers.drift import active_streams, explain_window

    title = "What changed: newest 24 h"
    parts: list[str] = []
    n = 0
    for stream in active_streams(store, scope.end):
        model, adapter, baseline = stream
        if model != scope.base_model or (scope.adapter is not None and adapter != scope.adapter):
            continue
        explanation = explain_window(store, stream, "24h", scope.end)
        if not explanation.sample_size:
            continue
        n += explanation.sample_size
        items = "".join(f"<li>{_esc(line)}</li>" for line in explanation.lines())
        parts.append(
            f"<h3>adapter {_esc(adapter)} (baseline {_esc(baseline.baseline_id)})</h3>"
            f"<ul>{items}</ul>"
        )
    if not n:
        return Section("changes", title, _empty("no embedded prompts in the newest 24 h"))
    body = (
        "<p>The share of prompts unlike the training data (with its 95 % interval), the "
        "clusters that grew and shrank most (named by their training prompts' keywords), "
        "keywords of the new prompts against the typical ones, and up to five of them "
        "(redacted; a bottom-k sample by hash of request id).</p>" + "".join(parts)
    )
    return Section("changes", title, body, (), n)


def _alerts_section(store: Store, scope: _Scope, cfg: ReportConfig) -> Section:
    title = "Recent alerts"
    recent_sql, counts_sql = scope.sql(RECENT_ALERTS_SQL), scope.sql(ALERT_COUNTS_SQL)
    counts = store.query(counts_sql, scope.params()).rows
    total = sum(int(n) for _, _, n in counts)
    if not total:
        return Section(
            "alerts", title, _empty("no alerts in range"), queries=(recent_sql, counts_sql)
        )
    rows = store.query(recent_sql, scope.params(limit=cfg.alerts_limit)).dicts()
    summary = ", ".join(f"{_esc(k)}/{_esc(s)}: {_n(n)}" for k, s, n in counts)
    table = _table(
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
                _ts(r["ts"]),
                _esc(r["adapter_version"]),
                _esc(r["kind"]),
                _esc(r["feature"]),
                _esc(r["window"]),
                f'<span class="status-{_esc(r["severity"])}">{_esc(r["severity"])}</span>',
                _num(r["value"]),
                _num(r["threshold"]),
                "–" if r["p_value"] is None else f"{float(r['p_value']):.2g}",
                _n(r["sample_size"]),
                _esc(r["message"]),
            )
            for r in rows
        ],
        cls="alerts",
    )
    body = (
        f"<p>{_n(total)} alerts in range ({summary}); the newest {len(rows)} below, each "
        "with the sample size n it was computed on.</p>" + table
    )
    return Section("alerts", title, body, (), total, (recent_sql, counts_sql))


# --------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 20px 40px; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 18px; margin: 28px 0 6px; }
h3 { font-size: 14px; margin: 16px 0 4px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px 16px 12px;
          margin: 14px 0; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
table.alerts td:last-child { max-width: 480px; }
.empty { color: #777; font-style: italic; }
.meta { color: #555; font-size: 13px; }
.status-alert, .status-page { color: #b00020; font-weight: 600; }
.status-warn { color: #8a5300; font-weight: 600; }
nav a { margin-right: 12px; font-size: 13px; color: #333; }
details pre { font-size: 11px; background: #f6f6f6; padding: 8px; overflow-x: auto; }
"""


def _page(report: Report, traffic: int | None, generated: datetime) -> str:
    model = report.base_model or "no model"
    adapter = report.adapter or "every adapter"
    others = (
        f" Other models in the store: {', '.join(_esc(m) for m in report.other_models)} "
        "(pass <code>--base-model</code>)."
        if report.other_models
        else ""
    )
    traffic_text = "" if traffic is None else f" {_n(traffic)} requests logged in range."
    nav = "".join(f'<a href="#{s.key}">{_esc(s.title)}</a>' for s in report.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>SentryML report: {_esc(model)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<header><h1>SentryML report: {_esc(model)}</h1>",
        f'<p class="meta">Adapter: {_esc(adapter)}. Range: {_ts(report.start)} to '
        f"{_ts(report.end)} UTC. Generated {_ts(generated)} UTC from SQL over the store; "
        f"every statistic gives its sample size n.{traffic_text}{others}</p>",
        f"<nav>{nav}</nav></header>",
    ]
    if report.base_model is None:
        parts.append(_empty("no model has rows in the store in this range"))
    for s in report.sections:
        parts.append(
            f'<section id="{_esc(s.key)}"><h2>{_esc(s.title)}</h2>{s.body}'
            f"{_sql_details(s.queries)}</section>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _pick_model(
    store: Store, cfg: ReportConfig, start: datetime, end: datetime
) -> tuple[str | None, tuple[str, ...]]:
    models = [str(m) for m, _ in store.query(MODELS_SQL, {"start": start, "end": end}).rows]
    if cfg.base_model is not None:
        return cfg.base_model, tuple(m for m in models if m != cfg.base_model)
    if not models:
        return None, ()
    return models[0], tuple(models[1:])


def build_report(
    store: Store,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    *,
    now: datetime | None = None,
) -> Report:
    """Query the store, draw the PNGs and write ``out_dir/index.html``; return what was written.

    Sections without rows say "no data yet"; PNGs of an earlier report in ``out_dir``
    that this one did not draw are removed, so the folder matches the page.
    """
    cfg = config or ReportConfig()
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - cfg.since
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_model, others = _pick_model(store, cfg, start, end)
    sections: list[Section] = []
    traffic: int | None = None
    # With no model found every query still runs (for model ''), so each section says
    # "no data yet" in its own words and the page keeps its shape.
    scope = _Scope(base_model or "", cfg.adapter, start, end)
    if base_model is not None:
        traffic = int(store.query(scope.sql(TRAFFIC_SQL), scope.params()).scalar() or 0)
    builders: list[Callable[[], Section | tuple[Section, ...]]] = [
        lambda: _drift_sections(store, scope, out, cfg),
        lambda: _shares_section(
            store,
            scope,
            out,
            cfg,
            key="clusters",
            feature="embedding",
            title="Prompt clusters: newest 24 h vs baseline",
            image="cluster_shares.png",
            xlabel="embedding cluster (novelty: outside every cluster)",
        ),
        lambda: _changes_section(store, scope),
        lambda: _shares_section(
            store,
            scope,
            out,
            cfg,
            key="output_length",
            feature="output_length",
            title="Output length: newest 24 h vs baseline",
            image="output_length.png",
            xlabel="output length bin (tokens, baseline quantile edges)",
        ),
        lambda: _judge_section(store, scope, out, cfg),
        lambda: _golden_section(store, scope, out, cfg),
        lambda: _timeline_section(store, scope, out, cfg),
        lambda: _alerts_section(store, scope, cfg),
    ]
    for build in builders:
        built = build()
        sections.extend(built if isinstance(built, tuple) else (built,))
    drawn = {name for s in sections for name in s.images}
    for name in FIGURES:
        if name not in drawn:
            (out / name).unlink(missing_ok=True)
    report = Report(
        out_dir=out,
        index=out / "index.html",
        base_model=base_model,
        adapter=cfg.adapter,
        start=start,
        end=end,
        sections=tuple(sections),
        other_models=others,
    )
    report.index.write_text(_page(report, traffic, datetime.now(UTC)), encoding="utf-8")
    return report


def section_summary(report: Report) -> list[tuple[str, str, str]]:
    """``(section, n, status)`` rows for a CLI table."""
    return [
        (s.title, _n(s.n), "no data yet" if s.empty else ", ".join(s.images) or "table")
        for s in report.sections
    ]
