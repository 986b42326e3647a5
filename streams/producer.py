"""The producer SDK: what an inference service calls once per request.

>>> with InferenceLogger() as logger:                                   # doctest: +SKIP
...     logger.log(request_id=rid, base_model="llama-3-8b", adapter_version="v7",
...                prompt=prompt, completion=text, completion_tokens=n, latency_ms=ms)

``log()`` validates the event, hands it to librdkafka's queue and returns at once: it
never waits for the broker. The usual call — plain strings, numbers and dicts — is
checked and encoded by :mod:`schemas.wire` in a few microseconds; anything unusual goes
through the pydantic model, so the rules and the error messages are the schema's own.
When the local queue is full the event is dropped and counted (or, with
``block_ms > 0``, the call waits at most that long for room). Delivery failures are
counted too; read them from :attr:`InferenceLogger.stats`. The producer is idempotent
(retries cannot duplicate), compresses with lz4 and keys by ``request_id``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from schemas.events import InferenceLog
from schemas.exceptions import InvalidEvent
from schemas.topics import Topics
from schemas.wire import encode_inference_log, event_bytes
from streams.config import ProducerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggerStats:
    """Counters since the logger was created (``delivered``: acknowledged by the broker)."""

    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    invalid: int = 0
    last_error: str | None = None


class InferenceLogger:
    """Publish :class:`~schemas.events.InferenceLog` events to Kafka without blocking.

    ``strict=True`` raises :class:`~schemas.exceptions.InvalidEvent` for a bad event (use
    it in tests and development); by default a bad event is counted, logged and skipped,
    so monitoring can never fail a user's request.
    """

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        strict: bool = False,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings or ProducerSettings()
        self.strict = strict
        self.topic = Topics(self.settings.kafka.topic_prefix).inference_logs
        self._counts = {"failed": 0, "dropped": 0, "invalid": 0}
        # ``enqueued`` changes on every call: next() on a count is atomic under the GIL, so
        # the hot path takes no lock. Reading it draws a number too (see ``stats``).
        self._enqueued = itertools.count()
        self._enqueued_reads = 0
        self._max_event_bytes = self.settings.max_event_bytes
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._last_warning = 0.0
        conf: dict[str, Any] = {
            **self.settings.kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": self.settings.linger_ms,
            "queue.buffering.max.messages": self.settings.queue_max_messages,
            "message.max.bytes": max(self.settings.max_event_bytes + 4096, 1_000_000),
            "error_cb": self._on_error,
            # Only failures call back: a callback per delivered event would cost the
            # caller's thread more than the produce itself (poll(0) runs them).
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        conf.update(producer_config or {})
        self._producer = Producer(conf)
        self._send = self._producer.produce
        self._poll = self._producer.poll

    # -- public API -------------------------------------------------------------------
    def log(self, event: InferenceLog | None = None, /, **fields: Any) -> bool:
        """Queue one event; return True if queued, False if it was dropped or invalid."""
        try:
            if event is None and (payload := encode_inference_log(fields)) is not None:
                key = fields["request_id"]  # the common shape, checked by hand
            else:  # anything else: pydantic builds (or rejects) it
                if event is None:
                    event = InferenceLog(**fields)
                payload, key = event_bytes(event), event.request_id
            if len(payload) > self._max_event_bytes:
                raise InvalidEvent(
                    f"event {key} is {len(payload)} bytes, over the "
                    f"{self._max_event_bytes}-byte limit",
                    reason="size",
                )
        except (ValidationError, InvalidEvent) as exc:
            self._count("invalid")
            if self.strict:
                if isinstance(exc, ValidationError):
                    raise InvalidEvent(f"invalid inference log: {exc}") from exc
                raise
            self._warn(f"invalid inference log skipped: {exc}")
            return False
        # One flat path for the common case: this runs once per request in the service.
        try:
            self._send(self.topic, payload, key)  # a str key is sent as its UTF-8 bytes
        except BufferError:
            if not self._produce_when_room(key, payload):
                return False
        next(self._enqueued)
        self._poll(0)  # serves failure callbacks and error_cb; returns at once
        return True

    @property
    def stats(self) -> LoggerStats:
        """A snapshot of the counters; ``delivered`` = enqueued − failed − still queued."""
        with self._lock:
            counts, last_error = dict(self._counts), self._last_error
            enqueued = next(self._enqueued) - self._enqueued_reads
            self._enqueued_reads += 1
        queued = len(self._producer)
        delivered = max(enqueued - counts["failed"] - queued, 0)
        return LoggerStats(enqueued, delivered, last_error=last_error, **counts)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` s for queued events; return how many are still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        remaining = self.flush(timeout)
        if remaining:
            log.warning("%d inference logs were still queued at close", remaining)

    def __enter__(self) -> InferenceLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Events queued locally, not yet acknowledged by the broker."""
        return len(self._producer)

    # -- internals --------------------------------------------------------------------
    def _produce_when_room(self, key: str, payload: bytes) -> bool:
        """The local queue is full: wait up to ``block_ms`` for room, else drop and count."""
        deadline = time.monotonic() + self.settings.block_ms / 1000
        while (remaining := deadline - time.monotonic()) > 0:
            self._producer.poll(min(remaining, 0.05))
            try:
                self._producer.produce(self.topic, payload, key)
                return True
            except BufferError:
                continue
        self._count("dropped")
        self._warn("producer queue full: inference log dropped (raise block_ms?)")
        return False

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # only with producer_config overriding delivery.report.only.error
            return
        with self._lock:
            self._counts["failed"] += 1
            self._last_error = err.str()
        self._warn(f"inference log delivery failed: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        with self._lock:
            self._last_error = err.str()
        self._warn(f"kafka client error: {err.str()}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 5.0:  # rate-limited: never flood the service's logs
            self._last_warning = now
            log.warning("%s (stats: %s)", message, self.stats)
