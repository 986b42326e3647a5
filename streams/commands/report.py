"""`sentryml report --out DIR`: a static HTML page with PNG plots, from SQL over the store."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.commands.core import store_settings
from streams.console import console, print_table


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        out: Path = typer.Option(..., "--out", help="Folder for index.html and the PNGs"),
        base_model: str | None = typer.Option(
            None, "--base-model", help="Model to report on (default: the most recently active)"
        ),
        adapter: str | None = typer.Option(
            None, "--adapter", help="Only this adapter version (default: every adapter)"
        ),
        since: str = typer.Option(
            "7d", "--since", help="Range start: a duration (90m, 24h, 7d, 2w) or an ISO date/time"
        ),
        hero_window: str = typer.Option(
            "7d", "--hero-window", help="Drift window of drift_overview.png: 1h | 24h | 7d"
        ),
    ) -> None:
        """Write a static HTML report: drift, cluster and length shares vs the baseline,
        judge trends, golden pass rates, the retrain timeline and recent alerts."""
        from schemas.events import utcnow
        from streams.config import WorkerSettings
        from workers.report import ReportConfig, build_report, parse_since, section_summary
        from workers.store import open_store

        if out.exists() and not out.is_dir():
            raise typer.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
        now = utcnow()
        try:
            config = ReportConfig(
                base_model=base_model,
                adapter=adapter,
                since=parse_since(since, now),
                hero_window=hero_window,
                drift=WorkerSettings().drift,  # the thresholds the alerts use (SENTRYML_DRIFT_*)
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        with open_store(store_settings()) as store:
            result = build_report(store, out, config, now=now)
        print_table(
            ["section", "n", "output"],
            list(section_summary(result)),
            title=f"report: {result.base_model or 'no model with data'}",
        )
        if result.other_models:
            console.print(f"other models in the store: {', '.join(result.other_models)}")
        console.print(f"open {result.index.resolve()}")
