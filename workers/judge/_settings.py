"""The LLM judge's endpoint, sampling, budget and alert settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.events import (
    JudgeDimension,
)
from workers.settings import EnvSettings, Section

#: Judge sample rates allowed without ``allow_rate_override`` (DESIGN: 1–5% of traffic).
JUDGE_RATE_RANGE = (0.01, 0.05)


def check_judge_rate(rate: float, *, allow_override: bool, where: str = "sample_rate") -> float:
    """Return ``rate`` if it is an allowed judge sample rate, else raise ``ValueError``.

    >>> check_judge_rate(0.02, allow_override=False)
    0.02
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"judge {where}={rate} must be a share of traffic in [0, 1]")
    lo, hi = JUDGE_RATE_RANGE
    if not allow_override and not lo <= rate <= hi:
        raise ValueError(
            f"judge {where}={rate} is outside the allowed {lo}–{hi} (1–5% of traffic); "
            "set SENTRYML_JUDGE_ALLOW_RATE_OVERRIDE=true to use it anyway"
        )
    return rate


class JudgeModelSettings(Section):
    """Per-model overrides of the judge defaults, keyed by ``base_model``."""

    sample_rate: float | None = Field(None, ge=0, le=1)
    daily_token_budget: int | None = Field(None, ge=0, description="Judge tokens/UTC day")
    daily_cost_budget_usd: float | None = Field(None, ge=0, description="Judge USD/UTC day")
    output_schema: Path | None = Field(
        None, description="JSON Schema file the model's completions must satisfy"
    )


class JudgeSettings(EnvSettings):
    """The LLM judge client (OpenAI-compatible endpoint), its sampling, budget and alerts.

    Env: ``SENTRYML_JUDGE_<FIELD>`` (standalone and as ``WorkerSettings.judge``);
    ``SENTRYML_JUDGE_MODELS='{"my-model": {"sample_rate": 0.05}}'`` for per-model values.
    """

    model_config = SettingsConfigDict(env_prefix="SENTRYML_JUDGE_")

    enabled: bool = Field(True, description="Sample and judge traffic in the worker")
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr = SecretStr("sk-local")
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=256)
    # sampling
    sample_rate: float = Field(0.02, ge=0, le=1, description="Default share of traffic judged")
    allow_rate_override: bool = Field(False, description="Allow rates outside 0.01–0.05")
    sample_salt: SecretStr | None = Field(
        None,
        description="Secret mixed into the sample hash (the same on every worker); without "
        "it the judged request ids are predictable",
    )
    models: dict[str, JudgeModelSettings] = Field(default_factory=dict)
    dimensions: tuple[JudgeDimension, ...] = ("format", "factual", "refusal")
    # calls
    max_attempts: int = Field(4, ge=1, le=20, description="HTTP attempts per judge call")
    backoff_s: float = Field(0.5, ge=0, le=60, description="First retry delay (jittered, x2)")
    max_backoff_s: float = Field(30.0, ge=0, le=600, description="Cap of one retry delay")
    max_tokens: int = Field(256, ge=16, le=8192)
    temperature: float = Field(0.0, ge=0, le=2)
    response_format: Literal["auto", "json_schema", "json_object"] = Field(
        "auto",
        description="json_schema (OpenAI, vLLM, Ollama); json_object+schema (llama-cpp-python); "
        "auto tries json_schema and falls back once the endpoint rejects it",
    )
    # budget (per base_model, per UTC day; None = unlimited)
    daily_token_budget: int | None = Field(2_000_000, ge=0)
    daily_cost_budget_usd: float | None = Field(None, ge=0)
    price_per_1k_prompt_tokens_usd: float = Field(0.0, ge=0)
    price_per_1k_completion_tokens_usd: float = Field(0.0, ge=0)
    budget_refresh_s: float = Field(5.0, gt=0, le=3600, description="Cache of today's usage")
    # the judge agent
    batch_size: int = Field(32, ge=1, le=10_000)
    batch_seconds: float = Field(2.0, gt=0, le=60)
    # rolling-mean alerts
    drop_delta: float = Field(0.5, gt=0, description="Alert when a 1–5 mean drops this much")
    refusal_rate_delta: float = Field(0.1, gt=0, le=1, description="... or refusals rise this much")
    drop_min_samples: int = Field(20, ge=1, description="Scores needed in each rolling window")
    rolling_window_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Rolling window compared with the one before it"
    )
    baseline_means: dict[str, float] = Field(
        default_factory=dict, description="Per-dimension reference means, e.g. {'format': 4.2}"
    )
    alert_interval_s: float = Field(300.0, gt=0)
    renotify_s: float = Field(6 * 3600.0, ge=0)
    # scores as OpenTelemetry events (gen_ai.evaluation.result), next to the traces
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP logs endpoint, e.g. http://collector:4318/v1/logs"
    )
    otlp_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers of the OTLP requests (API keys: secrets)"
    )

    @model_validator(mode="after")
    def _rates_allowed(self) -> JudgeSettings:
        check_judge_rate(self.sample_rate, allow_override=self.allow_rate_override)
        for name, model in self.models.items():
            if model.sample_rate is not None:
                check_judge_rate(
                    model.sample_rate,
                    allow_override=self.allow_rate_override,
                    where=f"models[{name!r}].sample_rate",
                )
        return self
