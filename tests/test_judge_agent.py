"""The judge agent on the real local broker and chDB, judging through a misbehaving server.

Every judge request ends in exactly one place: its three ``judge_scores`` rows (scores, or
recorded judge failures) or the DLQ with a reason; offsets are committed only after that.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.events import Alert, InferenceLog, JudgeScore, decode_event
from schemas.topics import Topics
from streams.app import create_app
from streams.config import WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.harness import running
from tests.servers.faulty_openai import FaultyOpenAI
from workers.judge import JudgeModelSettings, JudgeSettings
from workers.kafka import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MODEL = "support-bot"


def _produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(kafka.client_config())
    for key, value in messages:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def _consume_all(kafka: KafkaSettings, topic: str, expected: int) -> list:
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list = []

    def got_all() -> bool:
        out.extend(m for m in consumer.consume(100, timeout=0.5) if not m.error())
        return len(out) >= expected

    try:
        wait_for(got_all, timeout=60, what=f"{expected} messages on {topic}")
        out.extend(m for m in consumer.consume(100, timeout=1.0) if not m.error())
    finally:
        consumer.close()
    return out


def _committed_everything(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> bool:
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(tps, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset != high:
                return False
        return True
    finally:
        consumer.close()


def _log(completion: str, model: str = MODEL) -> InferenceLog:
    return InferenceLog(
        request_id=f"req-{uuid.uuid4().hex[:10]}",
        base_model=model,
        adapter_version="v1",
        prompt="Summarise the ticket in one sentence.",
        completion=completion,
    )


def test_scores_are_stored_once_failures_go_to_the_dlq_and_offsets_commit(
    kafka, store, store_settings
) -> None:
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with FaultyOpenAI(retry_after_s=0.2, hang_s=20) as server:
        judge = JudgeSettings(
            base_url=server.base_url,
            model="faulty-judge",
            timeout_s=0.5,
            max_attempts=2,
            backoff_s=0.01,
            max_backoff_s=1.0,
            max_concurrency=3,
            batch_size=8,
            batch_seconds=0.3,
            models={"spent-model": JudgeModelSettings(daily_token_budget=10)},
        )
        settings = WorkerSettings(
            kafka=kafka, store=store_settings, consumer_group=group, judge=judge
        )
        app, ctx = create_app(settings, store=store, agent_modules=("streams.agents.judge",))
        assert ctx.judge is not None and ctx.judge.sampler.rate_for(MODEL) == 0.02

        # spent-model already used its 10 tokens today
        store.insert(
            "judge_scores",
            [
                JudgeScore(
                    ts=datetime.now(UTC) - timedelta(seconds=5),
                    request_id="earlier",
                    base_model="spent-model",
                    judge_model="faulty-judge",
                    dimension="format",
                    score=3,
                    prompt_tokens=50,
                ).to_row()
            ],
        )
        scored = [_log(f"Fine answer {i}.") for i in range(8)]
        flaky = [_log(f"Answer. fault={f}#{uuid.uuid4().hex[:6]}") for f in ("429x1", "500x1")]
        unparsable = _log(f"Answer. fault=badjsonx2#{uuid.uuid4().hex[:6]}")
        hang = _log(f"Answer. fault=hangx99#{uuid.uuid4().hex[:6]}")
        broken = _log(f"Answer. fault=500x99#{uuid.uuid4().hex[:6]}")
        over_budget = _log("Answer.", model="spent-model")
        good = [*scored, *flaky, unparsable]
        messages = [(e.request_id.encode(), e.to_bytes()) for e in [*good, hang, broken]]
        messages.append((scored[0].request_id.encode(), scored[0].to_bytes()))  # redelivered
        messages.append((b"garbage", b'{"request_id": "x", '))
        messages.append((over_budget.request_id.encode(), over_budget.to_bytes()))
        _produce(kafka, topics.judge_requests, messages)

        with running(app):

            def stored() -> int:
                return int(
                    store.query(
                        "SELECT count() FROM judge_scores FINAL WHERE base_model = {m:String}",
                        {"m": MODEL},
                    ).scalar()
                )

            wait_for(lambda: stored() >= 3 * len(good), timeout=90, what="judge scores stored")
            dlq = _consume_all(kafka, topics.dlq, expected=3)
            wait_for(
                lambda: _committed_everything(kafka, group, topics.judge_requests, 3),
                timeout=60,
                what="offsets committed",
            )
            # the agent found spent-model's budget spent: one alert, sent by the worker's timer
            alerts = _consume_all(kafka, topics.alerts, expected=1)

        per_request = dict(
            store.query(
                "SELECT request_id, count() FROM judge_scores FINAL "
                "WHERE base_model = {m:String} GROUP BY request_id",
                {"m": MODEL},
            ).rows
        )
        assert per_request == {e.request_id: 3 for e in good}  # none lost, none twice
        failures = store.query(
            "SELECT DISTINCT request_id FROM judge_scores FINAL WHERE ok = 0 AND score IS NULL"
        ).rows
        assert failures == [(unparsable.request_id,)]
        ok_scores = store.query(
            "SELECT min(score), max(score) FROM judge_scores FINAL "
            "WHERE ok = 1 AND dimension != 'refusal' AND base_model = {m:String}",
            {"m": MODEL},
        ).rows
        assert ok_scores == [(4, 4)]

        reasons = {}
        for msg in dlq:
            headers = {k: v.decode() for k, v in msg.headers() or []}
            reasons[headers["sentryml-reason"]] = msg.value()
            assert headers["sentryml-source-topic"] == topics.judge_requests
            assert int(headers["sentryml-source-offset"]) >= 0
            assert headers["sentryml-error"]
        assert reasons == {
            "timeout": hang.to_bytes(),
            "server_error": broken.to_bytes(),
            "invalid_json": b'{"request_id": "x", ',
        }
        # the over-budget request was neither scored nor dead-lettered, and it alerted once
        assert (
            store.query(
                "SELECT count() FROM judge_scores WHERE request_id = {r:String}",
                {"r": over_budget.request_id},
            ).scalar()
            == 0
        )
        (alert_msg,) = alerts
        alert = decode_event(alert_msg.value(), Alert)
        assert (alert.kind, alert.base_model, alert.severity) == (
            "judge_budget",
            "spent-model",
            "warn",
        )
        assert store.query("SELECT count() FROM alerts WHERE kind = 'judge_budget'").scalar() == 1
        m = ctx.metrics.counters
        assert m["sentryml_judge_dlq_total"] == 3
        assert m["sentryml_judge_skipped_budget_total"] == 1
        assert m["sentryml_judge_max_in_flight"] <= 3 and server.max_in_flight <= 3
