"""Bin shares now vs the baseline: one feature's counts over the 24 h up to the newest
counts against the baseline's reference split (``cluster_shares.png``,
``output_length.png``), with the drift monitor's evaluation of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.baseline import Baseline, load_baseline_by_id
from workers.exceptions import BaselineError
from workers.report._config import ReportConfig, Section
from workers.report._evaluation import Evaluation, Evaluator
from workers.report._html import esc, fmt_n, fmt_num, fmt_ts, html_table, img_tag, no_data
from workers.report._plots import new_figure, save_png
from workers.report._queries import BASELINE_SQL, NEWEST_COUNTS_SQL, Scope

if TYPE_CHECKING:
    from workers.store import Store

#: The comparison window of the share plots: the 24 h up to the newest counts.
SHARES_WINDOW = "24h"


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


def shares_section(
    store: Store,
    scope: Scope,
    out: Path,
    cfg: ReportConfig,
    evaluator: Evaluator,
    *,
    key: str,
    feature: str,
    title: str,
    image: str,
    xlabel: str,
) -> Section:
    newest_sql = scope.sql(NEWEST_COUNTS_SQL)
    queries = (newest_sql, evaluator.sql, BASELINE_SQL)
    newest = store.query(newest_sql, scope.params(f=feature)).rows
    if not newest:
        return Section(
            key,
            title,
            no_data(f"no window_counts rows for feature '{feature}' in range"),
            queries=queries,
        )
    baseline_id, last, _ = newest[0]
    try:
        baseline = load_baseline_by_id(store, str(baseline_id))
    except BaselineError as exc:
        return Section(key, title, no_data(f"baseline {baseline_id}: {exc}"), queries=queries)
    if baseline is None or feature not in baseline.features:
        return Section(
            key,
            title,
            no_data(
                f"the counts reference baseline {baseline_id}, which is not in the baselines "
                "table (or has no such feature)"
            ),
            queries=queries,
        )
    evaluation = evaluator.at(baseline, last)
    shown = evaluation.results[(SHARES_WINDOW, feature)]
    fb = baseline.features[feature]
    observed, outside, window_from = shown.observed, shown.outside, shown.start
    n_now = int(observed.sum())
    if n_now == 0:
        return Section(key, title, no_data(f"no counts for '{feature}' in the newest 24 h"))
    now_shares = observed / n_now
    base_shares = np.asarray(fb.shares, dtype=np.float64)
    result = shown.result
    labels = _bin_labels(feature, baseline)

    fig = new_figure(max(6.0, 0.55 * fb.bins + 2.5), 3.8)
    ax = fig.subplots()
    x = np.arange(fb.bins)
    ax.bar(x - 0.2, base_shares, width=0.4, color="C7", label=f"baseline (n={fmt_n(fb.n)})")
    ax.bar(x + 0.2, now_shares, width=0.4, color="C0", label=f"newest 24 h (n={fmt_n(n_now)})")
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
        f"{feature}: PSI {result.psi:.3f}, JSD {result.jsd:.3f}, p={shown.p_adjusted:.2g} "
        f"(adjusted), {shown.status} (n={fmt_n(n_now)} vs baseline n={fmt_n(fb.n)})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    save_png(fig, out / image, cfg.dpi)

    table = html_table(
        ["bin", "range", "baseline count", "baseline share", "newest 24 h count", "share"],
        [
            (
                b,
                esc(labels[b]),
                fmt_n(fb.counts[b]),
                f"{base_shares[b]:.1%}",
                fmt_n(observed[b]),
                f"{now_shares[b]:.1%}",
            )
            for b in range(fb.bins)
        ],
        cls="compact",
    )
    note = (
        f" {fmt_n(outside)} counts fell in bins the baseline does not have and are left out."
        if outside
        else ""
    )
    adapters = "every adapter" if scope.adapter is None else f"adapter {esc(scope.adapter)}"
    body = (
        f"<p>Counts of {adapters} from {fmt_ts(window_from)} to {fmt_ts(last)} UTC (the 24 h up to "
        f"the newest counts; n = {fmt_n(n_now)} events) against the held-out reference split of "
        f"baseline <code>{esc(baseline_id)}</code> ({esc(baseline.embedder)}, "
        f"n = {fmt_n(fb.n)}). PSI {result.psi:.3f}, JSD {result.jsd:.3f}, "
        f"p = {shown.p_adjusted:.2g} (Holm-adjusted), status {_status(shown.status)}.{note}</p>"
        + img_tag(image, title)
        + table
        + _evaluation_table(evaluation, feature)
    )
    return Section(key, title, body, (image,), n_now, queries)


def _status(status: str) -> str:
    return f'<span class="status-{esc(status)}">{esc(status)}</span>'


def _evaluation_table(evaluation: Evaluation, feature: str) -> str:
    """``feature`` on every window of the evaluation, as the drift monitor decides it."""
    rows = [
        (
            esc(w.window),
            fmt_ts(w.start),
            fmt_n(w.result.sample_size),
            fmt_num(w.result.psi),
            fmt_num(w.result.jsd),
            f"{w.result.p_value:.2g}",
            f"{w.p_adjusted:.2g}",
            _status(w.status),
        )
        for w in evaluation.feature(feature)
    ]
    return (
        f"<h3>The drift monitor's evaluation at the newest counts</h3><p>{esc(feature)} on "
        f"every window ending at {fmt_ts(evaluation.last)} UTC, by the monitor's own "
        "functions and thresholds: the homogeneity test is exact where counts are small, and "
        f"each p-value is Holm-adjusted over the {evaluation.tests} tests of every feature and "
        "window before the status is decided.</p>"
        + html_table(
            ["window", "after", "n", "PSI", "JSD", "p-value", "p (adjusted)", "status"],
            rows,
            cls="evaluation",
        )
    )
