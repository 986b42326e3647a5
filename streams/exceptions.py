"""Errors of the streaming layer (producer SDK, topics, Faust app)."""

from __future__ import annotations

from schemas.exceptions import SentryMLError


class StreamsError(SentryMLError):
    """Base of the streaming layer's errors."""


class BrokerUnavailable(StreamsError):
    """Kafka could not be reached or refused the operation.

    Check ``SENTRYML_KAFKA_BOOTSTRAP`` and the broker; for local work run
    ``scripts/kafka-local start``.
    """


class Fenced(StreamsError):
    """A rebalance took this worker's partitions while it held a batch it could not flush.

    The worker exits without flushing or acking that batch, so that the partitions' next
    owner reads and counts it once (two owners flushing the same offsets with different
    batch boundaries would count them twice). The orchestrator restarts the worker.
    """
