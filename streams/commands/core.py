"""Core commands: config, topics, store migrations, SQL."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from streams.config import (
    JudgeSettings,
    ProducerSettings,
    StoreSettings,
    TrainerSettings,
    WorkerSettings,
    redacted,
)

console = Console()


def print_table(columns: list[str], rows: list[tuple[Any, ...]], title: str | None = None) -> None:
    """Print query results as a table (shared by every command that shows rows)."""
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
    topics_app = typer.Typer(help="Manage SentryML's Kafka topics.", no_args_is_help=True)
    store_app = typer.Typer(help="Manage the ClickHouse store.", no_args_is_help=True)
    app.add_typer(config_app, name="config")
    app.add_typer(topics_app, name="topics")
    app.add_typer(store_app, name="store")

    @config_app.command("show")
    def config_show() -> None:
        """Print every deployable's effective config (env SENTRYML_*), secrets masked."""
        shown = {
            "producer": redacted(ProducerSettings()),
            "worker": redacted(WorkerSettings()),
            "judge": redacted(JudgeSettings()),
            "trainer": redacted(TrainerSettings()),
        }
        console.print_json(json.dumps(shown, default=str))

    @topics_app.command("create")
    def topics_create(
        partitions: int = typer.Option(None, help="Partitions per topic (default: config)"),
    ) -> None:
        """Create every SentryML topic that does not exist yet (idempotent)."""
        from streams.topics import create_topics

        settings = WorkerSettings()
        outcome = create_topics(settings.kafka, partitions=partitions)
        print_table(["topic", "outcome"], sorted(outcome.items()))

    @store_app.command("migrate")
    def store_migrate() -> None:
        """Create or upgrade every SentryML table and view (idempotent)."""
        from workers.store import open_store

        with open_store(store_settings()) as store:
            applied = store.migrate()
        console.print(f"applied: {', '.join(applied) or 'nothing (up to date)'}")

    @app.command("sql")
    def sql(
        query: str = typer.Argument(..., help="A ClickHouse SQL query"),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
    ) -> None:
        """Run a SQL query on the configured store and print the result."""
        from workers.store import open_store

        with open_store(store_settings()) as store:
            result = store.query(query)
        if fmt == "json":
            console.print_json(json.dumps(result.dicts(), default=str))
        else:
            print_table(result.columns, result.rows)


def store_settings() -> StoreSettings:
    """The store section as the worker reads it from the environment."""
    return WorkerSettings().store
