"""Configuration: one frozen pydantic-settings class per deployable, env prefix ``SENTRYML_``.

Nested sections are plain models and are set with a single underscore after the section
name: ``SENTRYML_KAFKA_BOOTSTRAP``, ``SENTRYML_STORE_URL``, ``SENTRYML_JUDGE_BASE_URL``.
Secrets are ``SecretStr`` and never printed: :func:`redacted` gives the printable view
that ``sentryml config show`` uses.

>>> ProducerSettings(kafka=KafkaSettings(bootstrap="10.0.0.5:9092")).kafka.bootstrap
'10.0.0.5:9092'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import DEFAULT_MAX_EVENT_BYTES, JudgeDimension, RetrainMethod, TaskGoal


def default_data_dir() -> Path:
    """Where embedded state lives when nothing is configured (XDG data dir)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "sentryml"


#: Addresses that only this machine reaches.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def serve_password_file() -> Path:
    """Where `sentryml store serve` keeps the password it generated (owner-only file)."""
    return default_data_dir() / "store-password"


def read_password_file(path: Path) -> str:
    """The first line of a password file ("" when it is empty)."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the store password file {path}: {exc}") from exc
    return lines[0].strip() if lines else ""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("sentryml.", description="Prefix of every SentryML topic")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    partitions: int = Field(6, ge=1, description="Partitions for `topics create`")
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        return conf


class StoreSettings(_Section):
    url: str = Field(
        default_factory=lambda: f"chdb://{default_data_dir() / 'chdb'}",
        description="chdb:///path (embedded) or http(s)://host:8123 (ClickHouse server)",
    )
    database: str = "sentryml"
    username: str = "default"
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None,
        description="File holding the password (e.g. the one `sentryml store serve` writes); "
        "read when no password is given",
    )

    def secret(self) -> str:
        """The password: ``password``, else ``password_file``'s first line, else the file that
        `sentryml store serve` generated, for a store on this machine (loopback URL)."""
        if self.password is not None:
            return self.password.get_secret_value()
        path = self.password_file
        if path is None:
            path = serve_password_file()
            if urlsplit(self.url).hostname not in LOOPBACK_HOSTS or not path.is_file():
                return ""
        return read_password_file(path)

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError("database must be letters, digits and underscores")
        return value


class IngestSettings(_Section):
    """How the ingest agent batches and embeds."""

    batch_max: int = Field(500, ge=1, le=100_000, description="Events per batch (and flush)")
    batch_seconds: float = Field(2.0, gt=0, le=60, description="Max wait to fill a batch")
    embed_batch_size: int = Field(64, ge=1, le=4096)
    embed_sample_rate: float = Field(
        1.0, gt=0, le=1, description="Share of traffic embedded for input drift (deterministic)"
    )
    max_event_age_days: float = Field(
        30.0,
        gt=0,
        le=36_500,
        description="Older events go to the DLQ as `expired` (keep it at or under the "
        "shortest table TTL on event time: inference_logs, 30 days)",
    )


class HealthSettings(_Section):
    """When the worker's ``/health`` answers 503 instead of 200."""

    max_failing_s: float = Field(
        60.0, gt=0, le=86_400, description="Flushes failing for longer than this: unhealthy"
    )
    max_batch_s: float = Field(
        120.0, gt=0, le=86_400, description="One batch in flight for longer than this: unhealthy"
    )


class GoldenSettings(_Section):
    """Golden-set runs by the worker: daily (cron, UTC) and on every promoted/deployed adapter.

    Off until ``file`` is set (``SENTRYML_GOLDEN_FILE``). See docs/golden.md.
    """

    enabled: bool = True
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


class RedactionRuleSettings(_Section):
    """One extra redaction rule: a Python regex and its replacement (``\\1`` refers to groups)."""

    name: str = Field(..., min_length=1, max_length=64)
    pattern: str = Field(..., min_length=1)
    replacement: str = "[REDACTED]"
    requires: str | None = Field(
        None,
        description="Optional cheap regex that every match contains (e.g. a literal prefix "
        "such as 'EMP-'): text without it skips the rule, which saves the full scan",
    )

    @field_validator("pattern", "requires")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        import re

        try:
            if value is not None:
                re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value


class RedactionSettings(_Section):
    """What is masked before raw rows are stored (see docs/drift.md, "Redaction").

    ``SENTRYML_REDACTION_RULES='[{"name": "employee", "pattern": "EMP-\\\\d{6}",
    "replacement": "[EMPLOYEE]"}]'`` adds a rule; ``SENTRYML_REDACTION_DISABLED='["phone"]'``
    switches a default rule off; ``SENTRYML_REDACTION_USE_DEFAULTS=false`` drops them all.
    """

    use_defaults: bool = Field(True, description="Apply the built-in rules (workers.redact)")
    disabled: tuple[str, ...] = Field((), description="Names of built-in rules to skip")
    rules: tuple[RedactionRuleSettings, ...] = Field((), description="Extra rules, run last")


class DriftModelSettings(_Section):
    """Per-model overrides of the drift thresholds, keyed by ``base_model``."""

    psi_warn: float | None = Field(None, gt=0)
    psi_alert: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, lt=1)
    min_samples: int | None = Field(None, ge=1)
    share_warn: float | None = Field(None, gt=0, le=1)
    share_alert: float | None = Field(None, gt=0, le=1)


class DriftSettings(_Section):
    """Drift thresholds and the evaluator's schedule (see docs/drift.md).

    A window is ``alert`` when PSI >= ``psi_alert`` AND the two-sample test against the
    baseline's reference counts rejects, Holm-adjusted over the evaluation, at ``alpha``;
    ``warn`` likewise with ``psi_warn``; ``insufficient`` under ``min_samples`` events. The
    ``novelty`` feature uses ``share_warn`` / ``share_alert`` instead: the estimated share of
    traffic unlike the training data. Per model:
    ``SENTRYML_DRIFT_MODELS='{"my-model": {"psi_alert": 0.3}}'``.
    """

    psi_warn: float = Field(0.1, gt=0, description="PSI at which a significant shift warns")
    psi_alert: float = Field(0.2, gt=0, description="PSI at which a significant shift alerts")
    alpha: float = Field(
        0.01, gt=0, lt=1, description="False-alarm bound of one evaluation (Holm, all tests)"
    )
    min_samples: int = Field(30, ge=1, description="Fewer events in a window: 'insufficient'")
    share_warn: float = Field(
        0.05, gt=0, le=1, description="Share of traffic unlike the training data that warns"
    )
    share_alert: float = Field(
        0.15, gt=0, le=1, description="Share of traffic unlike the training data that alerts"
    )
    models: dict[str, DriftModelSettings] = Field(default_factory=dict)
    interval_s: float = Field(60.0, gt=0, description="Seconds between evaluations")
    renotify_s: float = Field(
        3600.0, ge=0, description="An open incident notifies again at most this often"
    )
    resolve_after: int = Field(
        3, ge=1, le=10_000, description="Healthy evaluations in a row that resolve an incident"
    )
    windows: tuple[Literal["1h", "24h", "7d"], ...] = ("1h", "24h", "7d")
    alert_windows: tuple[Literal["1h", "24h", "7d"], ...] = ("1h", "24h", "7d")

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        extra = sorted(set(self.alert_windows) - set(self.windows))
        if extra:
            raise ValueError(f"alert_windows {extra} are not evaluated; add them to windows")
        self.thresholds_for("")  # validates the defaults
        for name in self.models:
            self.thresholds_for(name)
        return self

    def thresholds_for(self, base_model: str) -> Any:
        """The :class:`workers.drift.DriftThresholds` for ``base_model`` (overrides applied)."""
        from workers.drift import DriftThresholds

        own = self.models.get(base_model)
        values: dict[str, Any] = {
            "psi_warn": self.psi_warn,
            "psi_alert": self.psi_alert,
            "alpha": self.alpha,
            "min_samples": self.min_samples,
            "share_warn": self.share_warn,
            "share_alert": self.share_alert,
        }
        if own is not None:
            values.update({k: v for k, v in own.model_dump().items() if v is not None})
        try:
            return DriftThresholds(**values)
        except ValueError as exc:
            where = f"drift.models[{base_model!r}]" if own is not None else "drift"
            raise ValueError(f"{where}: {exc}") from exc


#: New labelled examples a retrain needs per declared task goal (the low ends of the usual
#: ranges: style/format 200–500, vocabulary 500–1.5k, task 1k–5k, instruction 2k–10k).
DEFAULT_MIN_EXAMPLES: dict[str, int] = {
    "style": 200,
    "vocabulary": 500,
    "task": 1000,
    "instruction": 2000,
}


class RetrainGateSettings(_Section):
    """When the worker asks the trainer for a new adapter (docs/training.md, "Retrain gate").

    A request fires only when (a) a drift or judge alert held without a break for
    ``persist_s`` seconds of wall-clock time (evaluations of the current baseline, none more
    than ``max_gap_s`` apart, the newest no older than that), (b) at least ``min_examples[goal]`` new labelled examples exist for
    the model's task goal (``task_goals``, else ``default_goal``), (c) ``cooldown_days``
    passed since the last job, and (d) no job is in flight. Every decision, fired or held,
    is a row in ``retrain_jobs``. A cooldown under 7 days needs ``allow_short_cooldown``.
    """

    enabled: bool = True
    interval_s: float = Field(300.0, gt=0, le=86_400, description="Seconds between gate checks")
    persist_s: float = Field(
        6 * 3600.0, gt=0, le=30 * 86_400, description="Seconds an alert must hold, unbroken"
    )
    max_gap_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Evaluations further apart break the run; an older newest one is stale",
    )
    # Not 7d by default: a window keeps alerting for up to its length after a burst ended, so
    # a window longer than persist_s can look "persistent" after a ten-minute burst.
    drift_windows: tuple[Literal["1h", "24h", "7d"], ...] = Field(
        ("1h", "24h"), description="drift_stats windows whose alerts count"
    )
    judge_interval_s: float | None = Field(
        None, gt=0, description="Spacing of the judge evaluations checked (None: judge's own)"
    )
    task_goals: dict[str, TaskGoal] = Field(
        default_factory=dict, description="Declared task goal per base_model"
    )
    default_goal: TaskGoal = "style"
    min_examples: dict[TaskGoal, int] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_EXAMPLES),  # type: ignore[arg-type]
        description="New labelled examples needed per task goal",
    )
    cooldown_days: float = Field(7.0, ge=0, description="Days between two jobs of one model")
    allow_short_cooldown: bool = Field(False, description="Allow cooldown_days under 7")
    method: RetrainMethod = "lora"
    max_job_hours: float = Field(
        48.0, gt=0, description="A job with no outcome after this no longer counts as in flight"
    )
    lookback_days: float = Field(7.0, gt=0, description="Check models seen in this period")

    @model_validator(mode="after")
    def _cooldown_and_minimums(self) -> RetrainGateSettings:
        if self.cooldown_days < 7 and not self.allow_short_cooldown:
            raise ValueError(
                f"retrain cooldown_days={self.cooldown_days} is under the 7-day default; set "
                "SENTRYML_RETRAIN_ALLOW_SHORT_COOLDOWN=true to use a shorter cooldown"
            )
        merged = {**DEFAULT_MIN_EXAMPLES, **{str(k): v for k, v in self.min_examples.items()}}
        if any(v < 1 for v in merged.values()):
            raise ValueError(f"retrain min_examples must all be >= 1, got {merged}")
        object.__setattr__(self, "min_examples", merged)
        return self


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SENTRYML_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )


class ProducerSettings(_Settings):
    """What the inference-side SDK (:class:`streams.producer.InferenceLogger`) reads."""

    kafka: KafkaSettings = KafkaSettings()
    max_event_bytes: int = Field(DEFAULT_MAX_EVENT_BYTES, ge=1024)
    linger_ms: int = Field(
        50,
        ge=0,
        le=1000,
        description=(
            "How long librdkafka gathers events into one batch. Monitoring can wait 50 ms; "
            "fewer, larger batches cost the service's threads and the broker less."
        ),
    )
    queue_max_messages: int = Field(100_000, ge=1)
    block_ms: int = Field(
        0, ge=0, description="How long log() may wait when the queue is full (0 = drop)"
    )


class WorkerSettings(_Settings):
    """The stream worker (`sentryml worker`)."""

    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    max_event_bytes: int = Field(DEFAULT_MAX_EVENT_BYTES, ge=1024)
    consumer_group: str = "sentryml-worker"
    ingest: IngestSettings = IngestSettings()
    redaction: RedactionSettings = RedactionSettings()
    drift: DriftSettings = DriftSettings()
    golden: GoldenSettings = GoldenSettings()
    retrain: RetrainGateSettings = RetrainGateSettings()
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics (Prometheus) and /health on this port"
    )
    metrics_host: str = "127.0.0.1"
    health: HealthSettings = HealthSettings()
    session_timeout_s: float = Field(
        30.0,
        ge=6,
        le=300,
        description="Kafka group session timeout: how fast a dead worker's "
        "partitions move to the others",
    )
    shutdown_timeout_s: float = Field(
        15.0,
        gt=0,
        le=600,
        description="After SIGTERM, exit within this many seconds even if a flush is "
        "failing (only flushed offsets are committed)",
    )
    rebalance_fence_s: float = Field(
        20.0,
        gt=0,
        le=600,
        description="While a rebalance waits for a batch whose flush keeps failing, exit "
        "after this long without flushing it, so that the next owner counts it once (keep "
        "it well under the rebalance timeout, 60 s)",
    )
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings())
    worker_id: str = Field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")


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


class JudgeModelSettings(_Section):
    """Per-model overrides of the judge defaults, keyed by ``base_model``."""

    sample_rate: float | None = Field(None, ge=0, le=1)
    daily_token_budget: int | None = Field(None, ge=0, description="Judge tokens/UTC day")
    daily_cost_budget_usd: float | None = Field(None, ge=0, description="Judge USD/UTC day")
    output_schema: Path | None = Field(
        None, description="JSON Schema file the model's completions must satisfy"
    )


class JudgeSettings(_Settings):
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


WorkerSettings.model_rebuild()  # resolve its forward reference to JudgeSettings


class TrainerSettings(_Settings):
    """The trainer worker (`sentryml trainer`)."""

    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    adapters_dir: Path = Field(default_factory=lambda: default_data_dir() / "adapters")
    consumer_group: str = Field("sentryml-trainer", description="Kafka group of the trainers")
    config_file: Path | None = Field(
        None, description="Training config YAML (fields of trainer.config.TrainConfig)"
    )
    poll_timeout_s: float = Field(1.0, gt=0, le=60, description="Consumer poll timeout")
    instance_id: str | None = Field(
        None,
        description="Kafka static membership id (one per trainer host): a restarted trainer "
        "takes its partitions back at once instead of after the session timeout",
    )


def redacted(settings: BaseModel) -> dict[str, Any]:
    """The settings as a plain dict with every secret shown as ``'**********'``."""
    return settings.model_dump(mode="json")
