"""Bin shares now vs the baseline: one feature's counts over the 24 h up to the newest
counts against the baseline's reference split (``cluster_shares.png``,
``output_length.png``), with the drift monitor's evaluation of them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.baseline import Baseline, load_baseline_by_id
from workers.exceptions import BaselineError
from workers.report._config import ReportConfig, Section
from workers.report._html import esc, fmt_n, fmt_ts, html_table, img_tag, no_data
from workers.report._plots import new_figure, save_png
from workers.report._queries import BASELINE_SQL, BIN_COUNTS_SQL, NEWEST_COUNTS_SQL, Scope
from workers.stats import chi2_homogeneity, jsd, psi

if TYPE_CHECKING:
    from workers.store import Store

#: The comparison window of the share plots: the 24 h up to the newest counts.
SHARES_WINDOW = timedelta(hours=24)


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
            no_data(f"no window_counts rows for feature '{feature}' in range"),
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
        return Section(key, title, no_data(f"no counts for '{feature}' in the newest 24 h"))
    now_shares = observed / n_now
    base_shares = np.asarray(fb.shares, dtype=np.float64)
    psi_value = psi(observed, np.asarray(fb.counts))
    jsd_value = jsd(observed, np.asarray(fb.counts))
    _, p_value = chi2_homogeneity(observed, np.asarray(fb.counts))
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
        f"{feature}: PSI {psi_value:.3f}, JSD {jsd_value:.3f}, p={p_value:.2g} "
        f"(n={fmt_n(n_now)} vs baseline n={fmt_n(fb.n)})",
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
        f"n = {fmt_n(fb.n)}). PSI {psi_value:.3f}, JSD {jsd_value:.3f}, chi-square "
        f"p = {p_value:.2g}.{note}</p>" + img_tag(image, title) + table
    )
    return Section(key, title, body, (image,), n_now, queries)
