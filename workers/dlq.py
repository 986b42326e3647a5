"""Kafka records as the agents receive them, and records bound for the DLQ.

Shared by every agent (ingest, feedback, judge) so the DLQ contract is one piece of code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawRecord:
    """One Kafka message as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Rejected:
    """A record that goes to the DLQ, with the reason."""

    record: RawRecord
    reason: str
    error: str
    #: the DLQ copy of the payload where it differs from the original (PII masked, truncated)
    dlq_value: bytes | None = None
    #: DLQ headers saying how ``dlq_value`` differs (``sentryml-redacted``, ``-truncated-from``)
    notes: tuple[tuple[str, bytes], ...] = ()

    @property
    def value(self) -> bytes:
        """What the DLQ record carries."""
        return self.record.value if self.dlq_value is None else self.dlq_value
