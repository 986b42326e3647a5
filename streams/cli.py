"""The `sentryml` command line: one CLI, one subcommand per job.

Each command group lives in its own module under ``streams/commands/`` and exposes
``register(app)``; heavy imports (torch, faust) happen inside the commands, so
``sentryml --help`` and the producer-only install stay light.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from schemas.exceptions import SentryMLError

app = typer.Typer(
    name="sentryml",
    help="Watch fine-tuned LLMs in production: drift, judge, golden sets, gated retraining.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Command modules, each with ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (
    "streams.commands.core",
    "streams.commands.demo",
    "streams.commands.worker",
    "streams.commands.judge",
    "streams.commands.baseline",
    "streams.commands.golden",
    "streams.commands.trainer",
    "streams.commands.deployer",
    "streams.commands.dataset",
    "streams.commands.report",
    "streams.commands.drift",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else os.environ.get("SENTRYML_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    """Console entry point: SentryML errors print one clear line and exit 1."""
    _register()
    try:
        app()
    except SentryMLError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
