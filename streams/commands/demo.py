"""`sentryml demo`: the main job end to end on embedded defaults (see streams/demo/)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), help="Folder for logs, store and report"),
        quick: bool = typer.Option(False, help="Reduced story (fewer events and steps)"),
        train_steps: int = typer.Option(None, help="LoRA training steps (default 30; quick 8)"),
    ) -> None:
        """Drift → alert → gated retrain → promotion, with every real part started locally."""
        from streams.demo import DemoConfig, DemoFailed, console, run_demo

        cfg = DemoConfig(out_dir=out.resolve())
        if quick:
            cfg.train_examples, cfg.phase1_events, cfg.phase2_events = 300, 200, 160
            cfg.live_requests, cfg.feedback_examples, cfg.train_steps = 2, 40, 4
            cfg.train_batch_size = 2
        if train_steps:
            cfg.train_steps = train_steps
        try:
            summary = run_demo(cfg)
        except DemoFailed as exc:
            console.print(f"[bold red]demo failed:[/] {exc}", soft_wrap=True)
            raise typer.Exit(1) from exc
        console.print(
            f"[bold green]demo finished in {summary['minutes']} min[/]: "
            f"{summary['alerts_received']} alerts, adapters {summary['adapter_events']}"
        )
