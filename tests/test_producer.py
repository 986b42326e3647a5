"""Producer SDK → real local broker → consumer round trip."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer

from schemas.events import InferenceLog, decode_event
from schemas.exceptions import InvalidEvent
from schemas.topics import Topics
from streams.config import ProducerSettings
from streams.producer import InferenceLogger
from streams.topics import create_topics
from workers.kafka import KafkaSettings

pytestmark = pytest.mark.kafka


def _consume_all(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 120.0):
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(1000, timeout=1.0) if not m.error())
        # Drain a little longer: anything beyond `expected` would be a duplicate.
        out.extend(m for m in consumer.consume(1000, timeout=2.0) if not m.error())
    finally:
        consumer.close()
    return out


def test_ten_thousand_events_arrive_once_with_their_keys(kafka: KafkaSettings) -> None:
    assert set(create_topics(kafka).values()) == {"created"}
    assert set(create_topics(kafka).values()) == {"exists"}  # idempotent
    n = 10_000
    with InferenceLogger(ProducerSettings(kafka=kafka), strict=True) as logger:
        for i in range(n):
            logger.log(
                request_id=f"req-{i}", base_model="m", prompt=f"p{i}", completion="c",
                completion_tokens=1,
            )  # fmt: skip
    assert logger.stats.delivered == n and logger.stats.failed == 0
    messages = _consume_all(kafka, Topics(kafka.topic_prefix).inference_logs, n)
    ids = [decode_event(m.value(), InferenceLog).request_id for m in messages]
    assert len(ids) == n and set(ids) == {f"req-{i}" for i in range(n)}
    assert all(
        m.key().decode() == decode_event(m.value(), InferenceLog).request_id for m in messages
    )


def test_invalid_event_is_counted_not_sent(kafka: KafkaSettings) -> None:
    logger = InferenceLogger(ProducerSettings(kafka=kafka))
    assert logger.log(request_id="", base_model="m", prompt="p", completion="c") is False
    assert logger.stats.invalid == 1 and logger.stats.enqueued == 0
    strict = InferenceLogger(ProducerSettings(kafka=kafka), strict=True)
    with pytest.raises(InvalidEvent, match="request_id"):
        strict.log(request_id="", base_model="m", prompt="p", completion="c")


def test_counts_stay_exact_with_many_threads_logging_and_reading(kafka: KafkaSettings) -> None:
    # log() counts without a lock; stats reads in between must neither lose nor add any.
    logger = InferenceLogger(ProducerSettings(kafka=kafka), strict=True)
    reads: list[int] = []

    def service(t: int) -> None:
        for i in range(2_000):
            logger.log(request_id=f"t{t}-{i}", base_model="m", prompt="p", completion="c")
            if i % 100 == 0:
                reads.append(logger.stats.enqueued)

    threads = [threading.Thread(target=service, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert logger.flush(60) == 0
    stats = logger.stats
    assert (stats.enqueued, stats.delivered, stats.failed) == (8_000, 8_000, 0)
    assert len(reads) == 80 and max(reads) <= 8_000


def test_full_queue_drops_and_counts_instead_of_blocking(kafka: KafkaSettings) -> None:
    settings = ProducerSettings(kafka=kafka, queue_max_messages=10, linger_ms=1000)
    logger = InferenceLogger(settings)
    results = [
        logger.log(request_id=f"r{i}", base_model="m", prompt="p", completion="c")
        for i in range(50)
    ]
    assert results.count(False) == logger.stats.dropped > 0
    assert logger.stats.enqueued + logger.stats.dropped == 50
    logger.close()
    assert logger.stats.delivered == logger.stats.enqueued


def test_full_queue_with_block_ms_waits_for_room_and_loses_nothing(kafka: KafkaSettings) -> None:
    settings = ProducerSettings(kafka=kafka, queue_max_messages=10, linger_ms=50, block_ms=10_000)
    with InferenceLogger(settings) as logger:
        results = [
            logger.log(request_id=f"b{i}", base_model="m", prompt="p", completion="c")
            for i in range(100)
        ]
    assert all(results)
    stats = logger.stats
    assert (stats.enqueued, stats.delivered, stats.dropped) == (100, 100, 0)


def test_undeliverable_events_are_counted_as_failed() -> None:
    with socket.socket() as s:  # a port nothing listens on: every connect is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ProducerSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{port}"))
    logger = InferenceLogger(settings, producer_config={"message.timeout.ms": 1000})
    for i in range(5):
        assert logger.log(request_id=f"f{i}", base_model="m", prompt="p", completion="c")
    assert logger.flush(30) == 0
    stats = logger.stats
    assert (stats.enqueued, stats.failed, stats.delivered) == (5, 5, 0)
    assert stats.last_error  # the timeout, or a later "connection refused" from error_cb


def test_text_without_a_utf8_form_is_invalid_not_a_crash(kafka: KafkaSettings) -> None:
    logger = InferenceLogger(ProducerSettings(kafka=kafka))
    assert logger.log(request_id="r", base_model="m", prompt="p", completion="\ud800") is False
    assert logger.stats.invalid == 1
    strict = InferenceLogger(ProducerSettings(kafka=kafka), strict=True)
    with pytest.raises(InvalidEvent, match="cannot be written as JSON"):
        strict.log(request_id="r", base_model="m", prompt="p", completion="\ud800")
