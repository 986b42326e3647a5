"""`sentryml judge ...`: try the judge endpoint, see the judge trend, check sampling."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import typer

from streams.commands.core import store_settings
from streams.console import console, print_table


def register(app: typer.Typer) -> None:
    judge_app = typer.Typer(help="The LLM judge: score, trend, sample.", no_args_is_help=True)
    app.add_typer(judge_app, name="judge")

    @judge_app.command("score")
    def score(
        prompt: str = typer.Option(..., "--prompt", "-p", help="The request sent to the model"),
        completion: str = typer.Option(..., "--completion", "-c", help="The model's answer"),
        base_model: str = typer.Option("cli", help="base_model label (selects per-model config)"),
        schema: Path = typer.Option(
            None, help="JSON Schema the answer must satisfy (deterministic check)"
        ),
        base_url: str = typer.Option(None, help="Override SENTRYML_JUDGE_BASE_URL"),
        model: str = typer.Option(None, help="Override SENTRYML_JUDGE_MODEL"),
    ) -> None:
        """Score one prompt/completion on every judge dimension and print the verdicts.

        Uses the configured endpoint (SENTRYML_JUDGE_*): a quick check that it answers
        and that its answers parse.
        """
        from schemas.events import InferenceLog
        from workers.judge import JudgeClient, JudgeModelSettings, JudgeSettings

        base = JudgeSettings()
        overrides: dict[str, object] = {}
        if base_url:
            overrides["base_url"] = base_url
        if model:
            overrides["model"] = model
        if schema is not None:
            models = dict(base.models)
            own = models.get(base_model, JudgeModelSettings())
            models[base_model] = own.model_copy(update={"output_schema": schema})
            overrides["models"] = models
        settings = base.model_copy(update=overrides) if overrides else base
        event = InferenceLog(
            request_id="cli", base_model=base_model, prompt=prompt, completion=completion
        )

        async def run() -> list:
            client = JudgeClient(settings)
            try:
                return await client.score(event)
            finally:
                await client.aclose()

        scores = asyncio.run(run())
        print_table(
            ["dimension", "score", "ok", "schema_valid", "injection", "tokens", "ms", "rationale"],
            [
                (
                    s.dimension,
                    s.score,
                    s.ok,
                    s.schema_valid,
                    s.injection_flag,
                    s.prompt_tokens + s.completion_tokens,
                    round(s.latency_ms),
                    s.rationale or s.error,
                )
                for s in scores
            ],
            title=f"judge {settings.model} at {settings.base_url}",
        )

    @judge_app.command("trend")
    def trend(
        days: int = typer.Option(7, min=1, max=90, help="Window length in days"),
    ) -> None:
        """Rolling judge means per model/adapter/dimension: last window vs the one before."""
        from schemas.events import utcnow
        from workers.judge import rolling_judge_means
        from workers.store import open_store

        with open_store(store_settings()) as store:
            means = rolling_judge_means(store, utcnow(), timedelta(days=days))
        if not means:
            console.print("no judge scores in the store yet")
            return

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        print_table(
            ["base_model", "adapter", "dimension", f"mean {days}d", "n", "mean before", "n before"],
            [
                (
                    m.base_model,
                    m.adapter_version,
                    m.dimension,
                    fmt(m.current_mean),
                    m.current_n,
                    fmt(m.previous_mean),
                    m.previous_n,
                )
                for m in means
            ],
        )

    @judge_app.command("sample")
    def sample(
        request_ids: list[str] = typer.Argument(..., help="Request ids to check"),
        base_model: str = typer.Option(None, help="Use this model's configured rate"),
        rate: float = typer.Option(None, help="Rate to test (default: the configured one)"),
    ) -> None:
        """Would these request ids be judged? (Same answer on every worker and replay.)"""
        from workers.judge import JudgeSettings, should_judge

        settings = JudgeSettings()
        salt = settings.sample_salt.get_secret_value() if settings.sample_salt else ""
        own = settings.models.get(base_model or "")
        chosen = rate
        if chosen is None:
            chosen = (
                own.sample_rate if own and own.sample_rate is not None else settings.sample_rate
            )
        print_table(
            ["request_id", "rate", "judged"],
            [(rid, chosen, should_judge(rid, chosen, salt)) for rid in request_ids],
        )
