"""The DLQ contract: Kafka records as the agents receive them, and records bound for the DLQ.

Shared by every agent (ingest, feedback, judge) so the DLQ contract is one piece of code:
the record (:class:`RawRecord`), its rejection (:class:`Rejected`), the DLQ copy of a
rejected payload (PII masked with the store's own rules, :func:`redact_rejected`; cut to
its head, :func:`truncated`, one size for every DLQ record) and the headers that tell an
operator why and where a message failed (:func:`dlq_headers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from workers.redact import Redactor

#: The most of a payload a DLQ record keeps: its head, with ``sentryml-truncated-from``
#: giving the original size. A payload rejected for its size is cut before its PII is
#: masked: the head identifies the producer (type, ts, request_id and base_model serialize
#: first), the payload could never be replayed anyway, and masking PII in megabytes would
#: stall the partition. Any other payload is cut only when the DLQ topic refuses it at full
#: size. Half of Kafka's default message limit (1 MiB), so the cut record and its headers fit.
DLQ_KEEP_BYTES = 512 * 1024


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


def dlq_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    """Headers that tell an operator why and where a message failed."""
    record = rejected.record
    return [
        *record.headers,
        ("sentryml-error", rejected.error[:4000].encode()),
        ("sentryml-reason", rejected.reason.encode()),
        ("sentryml-source-topic", record.topic.encode()),
        ("sentryml-source-partition", str(record.partition).encode()),
        ("sentryml-source-offset", str(record.offset).encode()),
        *rejected.notes,
    ]


def truncated(rejected: Rejected) -> Rejected:
    """``rejected`` with its DLQ payload cut to its first :data:`DLQ_KEEP_BYTES`, and a
    ``sentryml-truncated-from`` note giving the size it had; unchanged when it fits."""
    value = rejected.value
    if len(value) <= DLQ_KEEP_BYTES:
        return rejected
    return replace(
        rejected,
        dlq_value=value[:DLQ_KEEP_BYTES],
        notes=(*rejected.notes, ("sentryml-truncated-from", str(len(value)).encode())),
    )


def redact_rejected(rejected: Rejected, redactor: Redactor) -> Rejected:
    """The DLQ form of a rejected record: PII masked in payload and error, oversize cut.

    The DLQ is for operators, so it gets what the store would get: the same redaction
    rules as accepted events. Headers say what was changed (``sentryml-redacted``: number
    of masks; ``sentryml-truncated-from``: the original size).
    """
    if rejected.reason == "size":
        rejected = truncated(rejected)
    value, hits = redact_payload(redactor, rejected.value)
    if hits:
        rejected = replace(
            rejected,
            dlq_value=value,
            notes=(*rejected.notes, ("sentryml-redacted", str(hits).encode())),
        )
    return replace(rejected, error=redactor.redact(rejected.error))


def redact_payload(redactor: Redactor, raw: bytes) -> tuple[bytes, int]:
    """``raw`` with PII masked, and the number of masks; unchanged bytes when there was none.

    JSON that parses is redacted value by value (keys, strings, and numbers that read as
    card or phone numbers), so PII written with JSON escapes (``jane\\u0040example.com``)
    is found too; it is re-serialized only when something was masked. Anything else
    (invalid UTF-8, broken or truncated JSON) is redacted as Latin-1 text, which maps each
    byte to one character, so every byte outside a mask, invalid ones included, is kept.

    >>> redact_payload(Redactor(), b'{"prompt": "mail jane\\u0040example.com"}')
    (b'{"prompt":"mail [EMAIL]"}', 1)
    >>> redact_payload(Redactor(), b"\\xff\\xfe call 415-555-0134")
    (b'\\xff\\xfe call [PHONE]', 1)
    """
    before = sum(redactor.counts.values())
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return _mask_bytes(redactor, raw)

    def clean(node: Any) -> Any:
        if isinstance(node, str):
            return redactor.redact(node)
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int | float):
            text = str(node)
            masked = redactor.redact(text)
            return node if masked == text else masked
        if isinstance(node, list):
            return [clean(v) for v in node]
        return {clean(k): clean(v) for k, v in node.items()}

    try:
        cleaned = clean(data)
    except RecursionError:  # nested almost as deep as json allows: mask it as text
        return _mask_bytes(redactor, raw)
    hits = _hits(redactor, before)
    if not hits:
        return raw, 0
    return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode(), hits


def _hits(redactor: Redactor, before: int) -> int:
    return sum(redactor.counts.values()) - before


def _mask_bytes(redactor: Redactor, raw: bytes) -> tuple[bytes, int]:
    before = sum(redactor.counts.values())
    text = raw.decode("latin-1")
    masked = redactor.redact(text)
    return (raw, 0) if masked == text else (masked.encode("latin-1"), _hits(redactor, before))
