"""`sentryml worker`: the Faust stream worker."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        loglevel: str = typer.Option("info", help="crit | error | warn | info | debug"),
        create_topics: bool = typer.Option(
            True, help="Create missing SentryML topics before starting"
        ),
    ) -> None:
        """Run the stream worker: validate/DLQ, embed, count, flush, evaluate drift, alert."""
        from streams.app import create_app, run_worker
        from streams.config import WorkerSettings
        from streams.topics import create_topics as make_topics
        from workers.store import open_store

        settings = WorkerSettings()
        store = open_store(settings.store)
        store.migrate()
        if create_topics:
            make_topics(settings.kafka)
        app, ctx = create_app(settings, store=store)
        run_worker(app, ctx, loglevel=loglevel)
