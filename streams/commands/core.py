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

    @store_app.command("serve")
    def store_serve(
        path: str = typer.Option(
            None,
            "--path",
            help="chDB data folder, optionally with chDB options: "
            "DIR?backups.allowed_path=/backups (default: the folder of a chdb:// store URL)",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
        port: int = typer.Option(8123, "--port", help="Port (ClickHouse's HTTP port is 8123)"),
        user: list[str] = typer.Option(
            [],
            "--user",
            envvar="SENTRYML_SERVE_USERS",
            help="NAME:PASSWORD of a user who may write (repeatable). "
            "Default: user 'default' without a password.",
        ),
        readonly_user: list[str] = typer.Option(
            [],
            "--readonly-user",
            envvar="SENTRYML_SERVE_READONLY_USERS",
            help="NAME:PASSWORD of a user who may only read (repeatable).",
        ),
    ) -> None:
        """Share one embedded (chDB) store between processes on this machine.

        chDB lets one process open a data folder: this one opens it and speaks ClickHouse HTTP.

        Point the worker, trainer and `sentryml sql` at SENTRYML_STORE_URL=http://127.0.0.1:8123.

        For real deployments use a ClickHouse server.
        """
        from workers.store.chdb_server import ChdbHTTPServer, parse_user, serve

        if path is None:
            url = store_settings().url
            if not url.startswith("chdb://"):
                raise typer.BadParameter(
                    f"the store URL is {url}, not chdb://...: give the folder with --path"
                )
            path = url.removeprefix("chdb://")
        users = [parse_user(u) for u in user] + [
            parse_user(u, readonly=True) for u in readonly_user
        ]
        if not users:
            users = [parse_user("default")]
        if host not in ("127.0.0.1", "localhost", "::1") and any(not u.password for u in users):
            console.print(f"[yellow]warning: serving on {host} with a passwordless user[/]")

        def ready(server: ChdbHTTPServer) -> None:
            console.print(
                f"serving the chDB folder {server.engine.path} at {server.url} "
                f"(ClickHouse HTTP); use SENTRYML_STORE_URL={server.url}. Ctrl-C stops."
            )

        try:
            serve(path, host, port, users, on_ready=ready)
        except OSError as exc:  # the port is taken, or the address is not ours
            raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}") from exc

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
