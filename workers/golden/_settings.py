"""Golden-set runs by the worker: file, endpoint, schedule, pages."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from schemas.events import AdapterStatus
from workers.settings import Section


class GoldenSettings(Section):
    """Golden-set runs by the worker: daily (cron, UTC) and on every promoted/deployed adapter.

    Off until ``file`` is set (``SENTRYML_GOLDEN_FILE``). See docs/golden.md.
    """

    enabled: bool = True
    run_on: tuple[AdapterStatus, ...] = Field(
        ("promoted", "deployed"),
        description="Adapter events that start a run; with a deployer, ['deployed'] runs "
        "only once the server serves the adapter",
    )
    file: Path | None = Field(None, description="Golden set (.jsonl/.yaml); None = no runs")
    base_url: str = Field("http://127.0.0.1:8080/v1", description="OpenAI-compatible endpoint")
    model: str = Field("smollm2-135m-instruct", description="Model name sent to the endpoint")
    base_model: str | None = Field(None, description="base_model label of the runs (= model)")
    adapter_version: str = Field("none", description="Adapter label of the daily runs")
    api_key: SecretStr = SecretStr("sk-local")
    cron: str = Field("0 6 * * *", description="Daily schedule, cron syntax, UTC")
    threshold: float = Field(0.95, ge=0, le=1, description="Page when the pass rate is lower")
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(60.0, gt=0)
    max_tokens: int = Field(256, ge=1, le=8192, description="Generation cap per case")
    tick_s: float = Field(60.0, gt=0, le=3600, description="How often the schedule is checked")
    webhook_url: SecretStr | None = Field(None, description="Slack-compatible webhook for pages")

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, value: str) -> str:
        if len(value.split()) not in (5, 6):
            raise ValueError(f"cron {value!r} must have 5 fields, e.g. '0 6 * * *'")
        return value
