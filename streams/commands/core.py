"""Core commands: config, topics, store migrations, SQL."""

from __future__ import annotations

import json
import os
import secrets

import typer

from streams.config import ProducerSettings, WorkerSettings
from streams.console import console, print_table
from trainer.settings import TrainerSettings
from workers.judge import JudgeSettings
from workers.settings import redacted
from workers.store import (
    LOOPBACK_HOSTS,
    StoreSettings,
    read_password_file,
    serve_password_file,
)


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
            help="NAME:PASSWORD of a user who may write (repeatable). Default: the user "
            "SENTRYML_STORE_USERNAME with SENTRYML_STORE_PASSWORD (or _PASSWORD_FILE); without "
            "either, a password is generated once and kept in an owner-only file.",
        ),
        readonly_user: list[str] = typer.Option(
            [],
            "--readonly-user",
            envvar="SENTRYML_SERVE_READONLY_USERS",
            help="NAME:PASSWORD of a user who may only read (repeatable).",
        ),
        allow_origin: list[str] = typer.Option(
            [],
            "--allow-origin",
            envvar="SENTRYML_SERVE_ALLOWED_ORIGINS",
            help="Web origin (https://grafana.example) whose browser requests are accepted "
            "(repeatable); requests from any other web page are refused.",
        ),
    ) -> None:
        """Share one embedded (chDB) store between processes on this machine.

        chDB lets one process open a data folder: this one opens it and speaks ClickHouse HTTP.
        Every request needs a user and password; nothing in SQL reaches the host's files or
        the network.

        Point the worker, trainer and `sentryml sql` at SENTRYML_STORE_URL=http://127.0.0.1:8123.

        For real deployments use a ClickHouse server.
        """
        from workers.store.server import ChdbHTTPServer, ServeUser, parse_user, serve

        settings = store_settings()
        if path is None:
            if not settings.url.startswith("chdb://"):
                raise typer.BadParameter(
                    f"the store URL is {settings.url}, not chdb://...: give the folder with --path"
                )
            path = settings.url.removeprefix("chdb://")
        try:
            users = [parse_user(u) for u in user] + [
                parse_user(u, readonly=True) for u in readonly_user
            ]
            if not user:
                users.insert(0, ServeUser(settings.username, writer_password(settings)))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if host not in LOOPBACK_HOSTS:
            console.print(
                f"[yellow]listening on {host}: other machines can reach this endpoint (plain "
                "HTTP, no TLS); every request needs a user's password[/]"
            )

        def ready(server: ChdbHTTPServer) -> None:
            console.print(
                f"serving the chDB folder {server.engine.path} at {server.url} "
                f"(ClickHouse HTTP) for users {', '.join(u.name for u in users)}; use "
                f"SENTRYML_STORE_URL={server.url}. Ctrl-C stops.",
                soft_wrap=True,
            )

        try:
            serve(path, host, port, users, on_ready=ready, allowed_origins=allow_origin)
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


def writer_password(settings: StoreSettings) -> str:
    """The writer's password for `store serve`: configured, or generated once into a file.

    The file (SENTRYML_STORE_PASSWORD_FILE, default ~/.local/share/sentryml/store-password)
    is created readable by its owner only; clients on this machine read it by themselves.
    """
    if settings.password is not None:
        return settings.password.get_secret_value()
    path = settings.password_file or serve_password_file()
    if path.is_file() and (known := read_password_file(path)):
        return known
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    os.chmod(path, 0o600)
    console.print(
        f"generated a password for store user {settings.username!r} in {path} (readable by "
        "you only); `sentryml` commands on this machine read it from there, other clients "
        f"log in as {settings.username!r} with it",
        soft_wrap=True,
    )
    return password
