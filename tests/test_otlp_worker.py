"""OTLP through the real worker: what the Collector's Kafka exporter writes is counted once,
redacted and stored like a native event, and what cannot be mapped is dead-lettered."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import Topics
from streams.app import create_app
from streams.config import IngestSettings, WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.faults import caught_up, consume_all, flushed_events, produce
from tests.harness import running
from tests.test_otlp import otlp_json, telemetry, vllm_style_span
from workers.judge import JudgeSettings
from workers.kafka import KafkaSettings
from workers.otlp import OtlpSettings
from workers.store import StoreSettings

pytestmark = [pytest.mark.kafka]


def _create(kafka: KafkaSettings, *names: str) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics(
        [NewTopic(n, num_partitions=kafka.partitions, replication_factor=1) for n in names]
    ).values():
        future.result(30)


def test_collector_topics_are_counted_once_redacted_and_dead_lettered(
    kafka: KafkaSettings, store: object, store_settings: StoreSettings
) -> None:
    create_topics(kafka)
    spans_topic, logs_topic = f"{kafka.topic_prefix}otlp_spans", f"{kafka.topic_prefix}otlp_logs"
    _create(kafka, spans_topic, logs_topic)
    settings = WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=50, batch_seconds=0.5),
        judge=JudgeSettings(enabled=False),
        otlp=OtlpSettings(enabled=True, traces_topic=spans_topic, logs_topic=logs_topic),
    )
    # One protobuf record with two inferences (one with PII) and a span that is none.
    tel = telemetry()
    vllm_style_span(tel, **{"gen_ai.request.id": "cmpl-1"})
    vllm_style_span(
        tel,
        **{"gen_ai.request.id": "cmpl-2", "gen_ai.prompt": "Mail jane.doe@example.com today"},
    )
    with tel.tracer_provider.get_tracer("http").start_as_current_span("GET /health"):
        pass
    protobuf = tel.span_request().SerializeToString()
    # One OTLP/JSON record with a third inference, and one record nobody can decode.
    tel3 = telemetry()
    vllm_style_span(tel3, **{"gen_ai.request.id": "cmpl-3"})
    produce(
        kafka,
        spans_topic,
        [(None, protobuf), (None, otlp_json(tel3.span_request())), (None, b"{not otlp")],
    )
    app, _ = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
    with running(app):
        wait_for(
            lambda: caught_up(kafka, settings.consumer_group, spans_topic),
            timeout=120,
            what="the OTLP records acked",
        )
        dlq = consume_all(kafka, Topics(kafka.topic_prefix).dlq, 1)
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT request_id, prompt, completion, prompt_tokens FROM inference_logs FINAL "
        "ORDER BY request_id"
    ).rows
    assert [r[0] for r in rows] == ["cmpl-1", "cmpl-2", "cmpl-3"]
    assert rows[1][1] == "Mail [EMAIL] today"  # the same redaction as the native topic
    assert rows[0][2] == "Bonjour" and rows[0][3] == 17
    assert flushed_events(store) == 3  # counted once each, the HTTP span not at all
    assert [dict(m.headers())["sentryml-reason"] for m in dlq] == [b"otlp_decode"]
    assert dlq[0].value() == b"{not otlp"
    assert dict(dlq[0].headers())["sentryml-source-topic"] == spans_topic.encode()
