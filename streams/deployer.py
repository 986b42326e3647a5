"""The deployer process (`sentryml deployer`): adapter events in, deployments out.

A plain confluent-kafka consumer of the adapter-events topic (keyed by base model, so each
base model's events arrive in order at one deployer of the group). Every ``promoted`` or
``rolled_back`` event makes :meth:`~trainer.deploy.DeployService.sync` serve the registry's
current adapter of that base model; the ``deployed`` events it publishes go to the same
topic and are skipped here. All logic is in :mod:`trainer.deploy`.

Delivery: the offset is committed after the event was handled. A deployment that fails
with a :class:`~trainer.deploy.DeployError` (the previous model still serves) is logged with
the event's coordinates and committed: the next promotion or rollback is not blocked
behind it, and ``sentryml deployer --sync MODEL`` retries it. Any other SentryML error (the
store or broker down) leaves the event uncommitted; it is read again after a pause.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from schemas.events import AdapterEvent, decode_event
from schemas.exceptions import InvalidEvent, SentryMLError
from trainer.deploy import DEPLOY_ON, DeployError, Deployment, DeployService
from workers.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: Longest a deployment may hold the consumer between two polls (a conversion of a large
#: adapter and a server restart), before the group hands its partitions to another member.
MAX_POLL_INTERVAL_MS = 30 * 60 * 1000


@dataclass(frozen=True)
class Handled:
    """One adapter event and what the deployer did with it."""

    where: str
    event: AdapterEvent | None
    deployment: Deployment | None = None
    error: str = ""


class DeployerAgent:
    """Consume ``topic`` as ``group`` and run ``service.sync`` for every deploy event."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        service: DeployService,
        *,
        group: str = "sentryml-deployer",
        poll_timeout_s: float = 1.0,
        retry_pause_s: float = 5.0,
        stop: threading.Event | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.service = service
        self.poll_timeout_s = poll_timeout_s
        self.retry_pause_s = retry_pause_s
        self.stop = stop or threading.Event()
        self.consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": group,
                "enable.auto.commit": False,
                # A new group reads the history; replayed events converge on the current
                # adapter (sync is idempotent), so nothing promoted before it started is missed.
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
            }
        )

    def run(self, max_events: int | None = None) -> list[Handled]:
        """Handle deploy events until ``stop`` is set (or ``max_events`` were handled)."""
        from confluent_kafka import KafkaError

        self.consumer.subscribe([self.topic])
        log.info("deployer consuming %s", self.topic)
        handled: list[Handled] = []
        try:
            while not self.stop.is_set() and (max_events is None or len(handled) < max_events):
                msg = self.consumer.poll(self.poll_timeout_s)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.error("consumer error: %s", error)
                    continue
                result = self._handle(msg)
                if result is not None:
                    handled.append(result)
        finally:
            self.consumer.close()
        return handled

    def _handle(self, msg: Any) -> Handled | None:
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            event = decode_event(msg.value() or b"", AdapterEvent)
        except InvalidEvent as exc:
            log.error("deployer: skipping invalid adapter event at %s: %s", where, exc)
            self._commit(msg, where)
            return None
        if event.status not in DEPLOY_ON:
            self._commit(msg, where)
            return None
        log.info(
            "deployer: %s %s/%s at %s",
            event.status,
            event.base_model,
            event.adapter_version,
            where,
        )
        try:
            deployment = self.service.sync(event.base_model)
        except DeployError as exc:
            log.error(
                "deployer: %s %s/%s at %s not deployed (the previous model still serves): %s",
                event.status,
                event.base_model,
                event.adapter_version,
                where,
                exc,
            )
            self._commit(msg, where)
            return Handled(where, event, error=str(exc))
        except SentryMLError as exc:
            log.error("deployer: %s at %s will be retried: %s", event.status, where, exc)
            self._retry(msg)
            return None
        self._commit(msg, where)
        return Handled(where, event, deployment)

    def _commit(self, msg: Any, where: str) -> None:
        from confluent_kafka import KafkaException

        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:  # a rebalance moved the partition: its owner syncs
            log.error("deployer: commit at %s failed: %s", where, exc)

    def _retry(self, msg: Any) -> None:
        from confluent_kafka import TopicPartition

        self.stop.wait(self.retry_pause_s)
        self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
