"""Kafka connection settings shared by every confluent-kafka client, and the one
publish-and-wait producer (:class:`SyncPublisher`) of code outside the Faust worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr

from workers.exceptions import WorkerError
from workers.settings import Section


class KafkaSettings(Section):
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


class NotDelivered(WorkerError):
    """The broker refused a record or did not acknowledge it within the timeout.

    ``errors`` are the broker's delivery errors (empty: it timed out). Callers translate
    it into their own error (``NotifyError``, ``TrainerError``) that says what to check.
    """

    def __init__(self, topic: str, errors: list[str], timeout_s: float) -> None:
        self.topic = topic
        self.errors = errors
        self.reason = errors[0] if errors else f"not acknowledged within {timeout_s}s"
        super().__init__(f"not delivered to {topic}: {self.reason}")


class SyncPublisher:
    """A confluent-kafka producer (``acks=all``) that publishes one record and waits until
    the broker acknowledges it: for code outside the Faust worker (the CLI, the trainer).

    ``config`` adds librdkafka settings (``enable.idempotence``, ``linger.ms``, ...).
    :meth:`publish` blocks (call it in a thread from async code) and raises
    :class:`NotDelivered` when the record is refused or not acknowledged in ``timeout_s``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        timeout_s: float = 30.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        from confluent_kafka import Producer

        self.timeout_s = timeout_s
        self._producer = Producer({**kafka.client_config(), "acks": "all", **(config or {})})

    def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            raise NotDelivered(topic, errors, self.timeout_s)
