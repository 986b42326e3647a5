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

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from workers.report._alerts_section import alerts_section
from workers.report._changes_section import changes_section
from workers.report._config import FIGURES, Report, ReportConfig, Section
from workers.report._drift_section import drift_sections
from workers.report._evaluation import Evaluator
from workers.report._golden_section import golden_section
from workers.report._html import fmt_n, render_page
from workers.report._judge_section import judge_section
from workers.report._queries import MODELS_SQL, TRAFFIC_SQL, Scope
from workers.report._shares_section import SHARES_WINDOW, shares_section
from workers.report._timeline_section import timeline_section

if TYPE_CHECKING:
    from workers.store import Store


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
    scope = Scope(base_model or "", cfg.adapter, start, end)
    if base_model is not None:
        traffic = int(store.query(scope.sql(TRAFFIC_SQL), scope.params()).scalar() or 0)
    evaluator = Evaluator(store, scope, cfg.drift, SHARES_WINDOW)
    builders: list[Callable[[], Section | tuple[Section, ...]]] = [
        lambda: drift_sections(store, scope, out, cfg),
        lambda: shares_section(
            store,
            scope,
            out,
            cfg,
            evaluator,
            key="clusters",
            feature="embedding",
            title="Prompt clusters: newest 24 h vs baseline",
            image="cluster_shares.png",
            xlabel="embedding cluster (novelty: outside every cluster)",
        ),
        lambda: changes_section(store, scope),
        lambda: shares_section(
            store,
            scope,
            out,
            cfg,
            evaluator,
            key="output_length",
            feature="output_length",
            title="Output length: newest 24 h vs baseline",
            image="output_length.png",
            xlabel="output length bin (tokens, baseline quantile edges)",
        ),
        lambda: judge_section(store, scope, out, cfg),
        lambda: golden_section(store, scope, out, cfg),
        lambda: timeline_section(store, scope, out, cfg),
        lambda: alerts_section(store, scope, cfg),
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
    report.index.write_text(render_page(report, traffic, datetime.now(UTC)), encoding="utf-8")
    return report


def section_summary(report: Report) -> list[tuple[str, str, str]]:
    """``(section, n, status)`` rows for a CLI table."""
    return [
        (s.title, fmt_n(s.n), "no data yet" if s.empty else ", ".join(s.images) or "table")
        for s in report.sections
    ]
