"""`sentryml golden`: run a golden set against a live model; validate a golden file.

``sentryml golden run`` exits 0 when the pass rate reaches the threshold and 1 when it does
not, so it can gate a CI/CD pipeline; under threshold it also pages (alerts table, alerts
topic, optional webhook) unless ``--no-page``.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from schemas.events import GoldenTrigger, utcnow
from streams.commands.core import store_settings
from streams.console import console, print_table

err = Console(stderr=True)


def _report(result: Any, *, diffs: int, paging: bool) -> None:
    from workers.golden import diff_text

    run = result.run
    verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
    console.print(
        f"{verdict} golden set [bold]{run.golden_set}[/] on {run.base_model}/"
        f"{run.adapter_version}: {run.passed}/{run.total} passed "
        f"({run.pass_rate:.1%}, threshold {run.threshold:.1%}), run {run.run_id}"
    )
    if run.tag_pass_rates:
        print_table(
            ["tag", "pass rate"],
            [(tag, f"{rate:.1%}") for tag, rate in run.tag_pass_rates.items()],
            title="per tag",
        )
    failures = result.failures
    if failures:
        print_table(
            ["case", "tags", "failed checks", "why"],
            [
                (
                    r.case_id,
                    ",".join(r.tags),
                    ",".join(r.failed_checks),
                    "; ".join(f"{k}: {v}" for k, v in r.details().items())[:300],
                )
                for r in failures
            ],
            title="failures",
        )
        for r in failures[:diffs]:
            if not r.expected or r.error:
                continue
            console.rule(f"{r.case_id}: expected vs actual", style="dim")
            console.print(diff_text(r.expected, r.output) or "(identical)", markup=False)
    if result.previous_run_id is not None:
        newly = ", ".join(result.newly_failing) or "none"
        console.print(f"newly failing since run {result.previous_run_id}: {newly}")
    if result.alert is not None:
        if result.alert_error:
            state = f"[red]not delivered: {result.alert_error}[/]"
        elif result.paged:
            state = "sent (alerts table, alerts topic, webhook if configured)"
        elif paging:
            state = "suppressed: the same condition was paged within the last hour"
        else:
            state = "not sent (--no-page)"
        console.print(f"page {result.alert.alert_id}: {state}", markup=True)


def register(app: typer.Typer) -> None:
    golden_app = typer.Typer(
        help="Golden-set regression checks against a live model.", no_args_is_help=True
    )
    app.add_typer(golden_app, name="golden")

    @golden_app.command("run")
    def run(
        golden: Path = typer.Option(
            ..., "--golden", exists=True, dir_okay=False, help="Golden set (.jsonl/.yaml)"
        ),
        base_url: str = typer.Option(
            None,
            "--base-url",
            help="OpenAI-compatible endpoint (default: $SENTRYML_GOLDEN_BASE_URL)",
        ),
        model: str = typer.Option(
            None, "--model", help="Model name served there (default: $SENTRYML_GOLDEN_MODEL)"
        ),
        base_model: str = typer.Option(
            None, "--base-model", help="Label stored (default: --model)"
        ),
        adapter: str = typer.Option("none", "--adapter", help="Adapter version being tested"),
        threshold: float = typer.Option(0.95, min=0.0, max=1.0, help="Lowest passing pass rate"),
        concurrency: int = typer.Option(4, min=1, max=256, help="Requests in flight"),
        trigger: GoldenTrigger = typer.Option("manual", help="Why this run happened (stored)"),
        max_tokens: int = typer.Option(256, min=1, help="Generation cap per case"),
        timeout: float = typer.Option(60.0, min=0.1, help="Seconds per request"),
        webhook: str = typer.Option(
            None, "--webhook", help="Slack-compatible webhook for the page", show_default=False
        ),
        page: bool = typer.Option(True, "--page/--no-page", help="Page when under threshold"),
        store: bool = typer.Option(True, "--store/--no-store", help="Record the run"),
        diffs: int = typer.Option(10, min=0, help="Failures to show a diff for"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        judge_base_url: str = typer.Option(
            None, help="Judge endpoint for `judge` checks (default: $SENTRYML_JUDGE_BASE_URL)"
        ),
        judge_model: str = typer.Option(None, help="(default: $SENTRYML_JUDGE_MODEL)"),
    ) -> None:
        """Run a golden set; exit 1 when the pass rate is under --threshold."""
        from schemas.topics import Topics
        from streams.config import WorkerSettings
        from workers.alerts import AlertSink, KafkaAlertPublisher, post_webhook
        from workers.golden import (
            OpenAIChat,
            judge_from_client,
            load_golden_set,
            needs_judge,
            run_golden,
        )
        from workers.judge import JudgeSettings
        from workers.store import open_store

        settings = WorkerSettings()
        conf = settings.golden
        golden_set = load_golden_set(golden)

        async def main(db: Any) -> Any:
            chat = OpenAIChat(
                base_url or conf.base_url,
                model or conf.model,
                api_key=conf.api_key.get_secret_value(),
                timeout_s=timeout,
                max_tokens=max_tokens,
            )
            judge_client = None
            if needs_judge(golden_set):
                from workers.judge import JudgeClient

                # Keyword arguments, not model_validate: env (SENTRYML_JUDGE_*) still applies.
                given = {"base_url": judge_base_url, "model": judge_model}
                overrides: dict[str, Any] = {k: v for k, v in given.items() if v}
                judge_client = JudgeClient(JudgeSettings(**overrides))
            sink = None
            if page and db is not None:
                hook_url = webhook or (
                    conf.webhook_url.get_secret_value() if conf.webhook_url else None
                )
                sink = AlertSink(
                    db,
                    KafkaAlertPublisher(
                        settings.kafka, Topics(settings.kafka.topic_prefix).alerts, timeout_s=15
                    ),
                    now=utcnow,
                    webhook=functools.partial(post_webhook, hook_url) if hook_url else None,
                )
            try:
                return await run_golden(
                    golden_set,
                    chat,
                    base_model=base_model or model or conf.base_model or conf.model,
                    adapter_version=adapter,
                    threshold=threshold,
                    trigger=trigger,
                    concurrency=concurrency,
                    judge=judge_from_client(judge_client) if judge_client else None,
                    store=db if store else None,
                    alerts=sink,
                    progress=progress,
                )
            finally:
                await chat.aclose()
                if judge_client is not None:
                    await judge_client.aclose()

        db = open_store(store_settings()) if store or page else None
        try:
            if db is not None:
                db.migrate()
            result = asyncio.run(main(db))
        finally:
            if db is not None:
                db.close()
        _report(result, diffs=diffs, paging=page and db is not None)
        if not result.ok:
            raise typer.Exit(1)

    @golden_app.command("validate")
    def validate(
        golden: Path = typer.Argument(..., exists=True, dir_okay=False, help="Golden set file"),
    ) -> None:
        """Check a golden file; print its cases per tag and check."""
        from workers.golden import load_golden_set

        gs = load_golden_set(golden)
        checks: dict[str, int] = {}
        for case in gs.cases:
            for name in case.checks.names():
                checks[name] = checks.get(name, 0) + 1
        console.print(f"[green]ok[/] {golden}: golden set {gs.name!r}, {len(gs.cases)} cases")
        print_table(["tag", "cases"], list(gs.tags().items()), title="tags")
        print_table(["check", "cases"], sorted(checks.items()), title="checks")

    @golden_app.command("schema")
    def schema(
        out: Path = typer.Option(
            Path(__file__).resolve().parents[2] / "schemas" / "json",
            help="Folder to write golden_case/golden_set JSON Schemas into",
        ),
    ) -> None:
        """Write the golden-set JSON Schemas (for editors and other languages)."""
        from workers.golden import render_json_schemas

        out.mkdir(parents=True, exist_ok=True)
        for name, text in render_json_schemas().items():
            (out / name).write_text(text)
            console.print(str(out / name))
