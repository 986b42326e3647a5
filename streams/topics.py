"""Topic names (with the configurable prefix) and their creation through the AdminClient."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import KafkaSettings
from streams.exceptions import BrokerUnavailable


@dataclass(frozen=True)
class Topics:
    """Every SentryML topic name for one prefix.

    >>> Topics("acme.").inference_logs
    'acme.inference-logs'
    """

    prefix: str = "sentryml."

    @property
    def inference_logs(self) -> str:
        return f"{self.prefix}inference-logs"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def judge_requests(self) -> str:
        return f"{self.prefix}judge-requests"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def retrain_requests(self) -> str:
        return f"{self.prefix}retrain-requests"

    @property
    def adapter_events(self) -> str:
        return f"{self.prefix}adapter-events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    def all(self) -> list[str]:
        return [
            self.inference_logs,
            self.feedback,
            self.judge_requests,
            self.alerts,
            self.retrain_requests,
            self.adapter_events,
            self.dlq,
        ]


def create_topics(
    kafka: KafkaSettings, *, partitions: int | None = None, timeout: float = 30.0
) -> dict[str, str]:
    """Create every SentryML topic that does not exist yet. Returns ``{topic: outcome}``.

    Outcome is ``"created"`` or ``"exists"``; any other failure raises
    :class:`BrokerUnavailable`.
    """
    admin = AdminClient({**kafka.client_config(), "socket.timeout.ms": int(timeout * 1000)})
    topics = Topics(kafka.topic_prefix)
    n = partitions or kafka.partitions
    config = {"retention.ms": str(kafka.retention_ms), "compression.type": "producer"}
    new = [
        NewTopic(name, num_partitions=n, replication_factor=kafka.replication_factor, config=config)
        for name in topics.all()
    ]
    try:
        futures = admin.create_topics(new, request_timeout=timeout, operation_timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot create topics on {kafka.bootstrap}: {exc}") from exc
    outcome: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() == "TOPIC_ALREADY_EXISTS":
                outcome[name] = "exists"
            else:
                raise BrokerUnavailable(f"cannot create topic {name}: {error.str()}") from exc
    return outcome
