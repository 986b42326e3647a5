"""`sentryml drift explain --window 24h`: what changed in a window, in words and examples."""

from __future__ import annotations

import json
from datetime import timedelta

import typer

from streams.commands.core import store_settings
from streams.console import console


def register(app: typer.Typer) -> None:
    drift_app = typer.Typer(help="Inspect input and output drift.", no_args_is_help=True)
    app.add_typer(drift_app, name="drift")

    @drift_app.command("explain")
    def explain(
        window: str = typer.Option("24h", "--window", help="1h | 24h | 7d"),
        base_model: str | None = typer.Option(
            None, "--base-model", help="Only this model (default: every active one)"
        ),
        adapter: str | None = typer.Option(None, "--adapter", help="Only this adapter version"),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per stream"),
    ) -> None:
        """The share of prompts unlike the training data, the clusters that grew and shrank
        (named by their keywords), keywords and examples of the new prompts."""
        from schemas.events import utcnow
        from workers.drift import WINDOWS, active_streams, explain_window
        from workers.store import open_store

        if window not in WINDOWS:
            raise typer.BadParameter(f"choose one of {', '.join(WINDOWS)}", param_hint="--window")
        now = utcnow()
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        found = 0
        with open_store(store_settings()) as store:
            for stream in active_streams(store, now):
                model, adapter_version, baseline = stream
                if (base_model and model != base_model) or (adapter and adapter_version != adapter):
                    continue
                found += 1
                explanation = explain_window(store, stream, window, end)
                if as_json:
                    print(
                        json.dumps(
                            {
                                "base_model": model,
                                "adapter_version": adapter_version,
                                "baseline_id": baseline.baseline_id,
                                **explanation.to_dict(),
                            }
                        )
                    )
                    continue
                console.print(
                    f"[bold]{model} / {adapter_version}[/bold] (baseline {baseline.baseline_id})"
                )
                for line in explanation.lines():
                    console.print("  " + line, markup=False, highlight=False)
        if not found:
            console.print("no model with window counts in the last 7 days matches")
            raise typer.Exit(1)
