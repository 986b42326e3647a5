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
