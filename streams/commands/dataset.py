"""`sentryml dataset export`: what the trainer would train on, in the formats trainers read."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from streams.commands.core import store_settings
from streams.console import console

if TYPE_CHECKING:
    from trainer.dataset import Example


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="The training data SentryML curates.", no_args_is_help=True)
    app.add_typer(dataset_app, name="dataset")

    @dataset_app.command("export")
    def export(
        base_model: str = typer.Option(..., "--base-model", "-m", help="Base model, as logged"),
        fmt: str = typer.Option(
            ..., "--format", "-f", help="trl-sft | trl-dpo | openai-sft | openai-dpo"
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Train split JSONL (held-out beside)"),
        since: str = typer.Option("7d", "--since", help="How far back: 36h, 7d, 2w (whole days)"),
        config: Path | None = typer.Option(
            None, "--config", "-c", help="Training config YAML (system prompt, sources, split)"
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Export the redacted, deduplicated examples of the trainer's dataset builder."""
        from rich.progress import track

        from schemas.events import utcnow
        from streams.commands.trainer import _train_config
        from trainer.export import FORMATS, export_dataset
        from workers.report import parse_since
        from workers.store import open_store

        if fmt not in FORMATS:
            raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
        now = utcnow()
        try:
            days = max(1, math.ceil(parse_since(since, now).total_seconds() / 86_400))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--since") from exc
        cfg = _train_config(config, None).replace(lookback_days=days)

        def bar(items: Iterator[Example], total: int) -> Iterator[Example]:
            return iter(track(items, total=total, description="writing", console=console))

        with open_store(store_settings()) as store:
            summary = export_dataset(
                store, base_model, cfg, fmt, out, now=now,  # type: ignore[arg-type]
                progress=bar if progress else None,
            )  # fmt: skip
        console.print(f"[bold]{fmt}[/] export of {base_model}, last {days} days:")
        for line in summary.lines():
            console.print(f"  {line}")
