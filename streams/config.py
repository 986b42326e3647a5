"""Configuration of every deployable, composed from the sections that live beside the code
they configure (``workers.store.StoreSettings``, ``workers.judge.JudgeSettings``, ...).

One frozen pydantic-settings class per deployable, env prefix ``SENTRYML_``: the producer SDK
and the worker here, the judge's own (``workers.judge``) and the trainer's
(``trainer.settings``) re-exported, so ``sentryml config show`` finds them all. Nested sections are plain models and are set with a single underscore after the section
name: ``SENTRYML_KAFKA_BOOTSTRAP``, ``SENTRYML_STORE_URL``, ``SENTRYML_JUDGE_BASE_URL``.
Secrets are ``SecretStr`` and never printed: :func:`redacted` gives the printable view
that ``sentryml config show`` uses.

>>> ProducerSettings(kafka=KafkaSettings(bootstrap="10.0.0.5:9092")).kafka.bootstrap
'10.0.0.5:9092'
"""

from __future__ import annotations

import os

from pydantic import Field

from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
)
from trainer.settings import TrainerSettings
from workers.drift import DriftSettings
from workers.golden import GoldenSettings
from workers.judge import JudgeSettings
from workers.kafka import KafkaSettings
from workers.otlp import OtlpSettings
from workers.redact import RedactionSettings
from workers.retrain_gate import RetrainGateSettings
from workers.settings import EnvSettings, Section
from workers.store import (
    StoreSettings,
)

__all__ = [
    "HealthSettings",
    "IngestSettings",
    "JudgeSettings",
    "ProducerSettings",
    "TrainerSettings",
    "WorkerSettings",
]


class IngestSettings(Section):
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


class HealthSettings(Section):
    """When the worker's ``/health`` answers 503 instead of 200."""

    max_failing_s: float = Field(
        60.0, gt=0, le=86_400, description="Flushes failing for longer than this: unhealthy"
    )
    max_batch_s: float = Field(
        120.0, gt=0, le=86_400, description="One batch in flight for longer than this: unhealthy"
    )


class ProducerSettings(EnvSettings):
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


class WorkerSettings(EnvSettings):
    """The stream worker (`sentryml worker`)."""

    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    max_event_bytes: int = Field(DEFAULT_MAX_EVENT_BYTES, ge=1024)
    consumer_group: str = "sentryml-worker"
    ingest: IngestSettings = IngestSettings()
    redaction: RedactionSettings = RedactionSettings()
    otlp: OtlpSettings = OtlpSettings()
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


WorkerSettings.model_rebuild()  # resolve its forward reference to JudgeSettings
