"""The trainer worker's settings (`sentryml trainer`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from workers.kafka import KafkaSettings
from workers.settings import EnvSettings, default_data_dir
from workers.store import (
    StoreSettings,
)


class TrainerSettings(EnvSettings):
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
