"""The golden section: the newest run's pass rate per adapter version and golden set
(``golden_pass_rate.png``), every run as a dot, and a table of the runs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.report._config import ReportConfig, Section
from workers.report._html import esc, fmt_n, fmt_ts, html_table, img_tag, no_data
from workers.report._plots import new_figure, save_png
from workers.report._queries import GOLDEN_RUNS_SQL, GOLDEN_SQL, Scope

if TYPE_CHECKING:
    from workers.store import Store


def golden_section(store: Store, scope: Scope, out: Path, cfg: ReportConfig) -> Section:
    title = "Golden pass rate per adapter version"
    queries = (GOLDEN_SQL, GOLDEN_RUNS_SQL)
    rows = store.query(GOLDEN_SQL, scope.params()).dicts()
    if not rows:
        return Section("golden", title, no_data("no golden_runs rows in range"), queries=queries)
    runs_by_bar: dict[tuple[str, str], list[float]] = defaultdict(list)
    for adapter, golden_set, _, rate in store.query(GOLDEN_RUNS_SQL, scope.params()).rows:
        runs_by_bar[(str(adapter), str(golden_set))].append(float(rate))
    several_sets = len({r["golden_set"] for r in rows}) > 1
    labels = [
        f"{r['adapter_version']}\n{r['golden_set']}" if several_sets else r["adapter_version"]
        for r in rows
    ]
    fig = new_figure(max(5.5, 1.3 * len(rows) + 2.5), 3.8)
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
    save_png(fig, out / "golden_pass_rate.png", cfg.dpi)
    table = html_table(
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
                esc(r["adapter_version"]),
                esc(r["golden_set"]),
                fmt_n(r["runs"]),
                f"{float(r['last_pass_rate']):.1%}",
                f"{fmt_n(r['last_passed'])} / {fmt_n(r['last_total'])}",
                f"{float(r['threshold']):.0%}",
                f"{float(r['mean_pass_rate']):.1%}",
                fmt_ts(r["first_run"]),
                fmt_ts(r["last_run"]),
            )
            for r in rows
        ],
    )
    runs = sum(int(r["runs"]) for r in rows)
    body = (
        f"<p>{fmt_n(runs)} golden runs of {esc(scope.base_model)}; adapter versions in order "
        "of their first run. Bars: the newest run's pass rate, labelled passed/cases and "
        "the number of runs, green when it reaches its threshold (dashed); dots: every "
        "run.</p>" + img_tag("golden_pass_rate.png", "Golden pass rate per adapter version") + table
    )
    return Section("golden", title, body, ("golden_pass_rate.png",), runs, queries)
