"""Topic names (with the configurable prefix) and their creation through the AdminClient."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import Topics
from streams.exceptions import BrokerUnavailable
from workers.kafka import KafkaSettings


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


class TopicEpochs:
    """The id Kafka gave each topic when it was created, cached for ``refresh_s``.

    A topic deleted and created again keeps its name and restarts its offsets at 0, but
    gets a new id: the ingest agent's replay rule and dedup tokens include it, so the new
    topic's offsets are not mistaken for the old one's. Blocking (an AdminClient call):
    call it off the event loop. Raises :class:`BrokerUnavailable` when the broker cannot
    be asked and no id is known yet (the ingest agent retries, like a store outage).
    """

    def __init__(self, kafka: KafkaSettings, *, refresh_s: float = 30.0, timeout: float = 10.0):
        self._admin = AdminClient(
            {**kafka.client_config(), "socket.timeout.ms": int(timeout * 1000)}
        )
        self._timeout = timeout
        self.refresh_s = refresh_s
        self._cache: dict[str, tuple[float, str]] = {}

    def __call__(self, topic: str) -> str:
        now = time.monotonic()
        hit = self._cache.get(topic)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        try:
            future = self._admin.describe_topics(TopicCollection([topic]))[topic]
            epoch = str(future.result(self._timeout).topic_id)
        except (KafkaException, TimeoutError) as exc:
            if hit is not None:
                return hit[1]  # keep the last known id while the broker is away
            raise BrokerUnavailable(f"cannot describe topic {topic}: {exc}") from exc
        self._cache[topic] = (now, epoch)
        return epoch
