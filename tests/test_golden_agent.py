"""The worker's golden triggers on the real broker and chDB: a deployment event, the daily timer.

The "live model" is a real local OpenAI-compatible server (tests/servers/faulty_openai.py:
it answers every chat with a small JSON object), so these tests are about the triggers; the
real SmolLM2 server is exercised in test_golden_live.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from schemas.events import AdapterEvent, Alert, decode_event
from schemas.topics import Topics
from streams.app import create_app
from streams.config import WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.harness import running
from tests.servers.faulty_openai import FaultyOpenAI
from workers.golden import GoldenSettings
from workers.kafka import KafkaSettings

pytestmark = [pytest.mark.kafka]

GOLDEN = """\
name: triggers
cases:
  - id: is-json
    tags: [format]
    prompt: Answer in JSON.
    checks: {json_schema: {type: object}}
  - id: impossible
    tags: [domain]
    prompt: Say the magic word.
    checks: {regex: '^xyzzy-never$'}
"""


class Clock:
    """The worker's injected clock; the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture(scope="module")
def model_server() -> Iterator[FaultyOpenAI]:
    with FaultyOpenAI(delay_s=0.01) as server:
        yield server


def _settings(
    kafka: KafkaSettings, store_settings, golden_file: Path, server, **golden
) -> WorkerSettings:
    return WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        golden=GoldenSettings(
            file=golden_file, base_url=server.base_url, model=server.model, base_model="support-bot",
            threshold=0.9, tick_s=0.2, **golden,
        ),
    )  # fmt: skip


def consume_alerts(kafka: KafkaSettings, topic: str, timeout: float = 60.0) -> list[Alert]:
    """Every alert on the topic, waiting until at least one arrived."""
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"r-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([topic])
    got: list[Alert] = []

    def poll() -> bool:
        for message in consumer.consume(10, 0.5):
            value = message.value()
            if not message.error() and value is not None:
                got.append(decode_event(value, Alert))
        return bool(got)

    try:
        wait_for(poll, timeout=timeout, what=f"an alert on {topic}")
        poll()  # anything more would be a duplicate page
    finally:
        consumer.close()
    return got


def _runs(store) -> list[tuple]:
    return store.query(
        "SELECT trigger, adapter_version, total, passed, ts FROM golden_runs FINAL ORDER BY ts"
    ).rows


def test_deployment_event_triggers_a_run_and_pages(
    kafka, store, store_settings, model_server, tmp_path: Path
) -> None:
    golden_file = tmp_path / "triggers.yaml"
    golden_file.write_text(GOLDEN)
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    app, ctx = create_app(
        _settings(kafka, store_settings, golden_file, model_server),
        store=store,
        agent_modules=("streams.agents.golden",),
    )

    def event(**kw: object) -> bytes:
        fields = {"base_model": "support-bot", "adapter_version": "v7", "status": "deployed", **kw}
        return AdapterEvent.model_validate(fields).to_bytes()

    producer = Producer(kafka.client_config())
    # Same key: one partition, so these arrive in order and the last one is the deploy.
    for value in (
        event(status="trained"),  # not a deployment: ignored
        event(base_model="another-model"),  # not our model: ignored
        b'{"type": "sentryml.adapter_event.v1", "status": "deployed"}',  # invalid: skipped
        event(),
    ):
        producer.produce(topics.adapter_events, value, b"support-bot")
    assert producer.flush(30) == 0

    with running(app):
        wait_for(lambda: _runs(store), timeout=90, what="a golden run after the deployment")
    runs = _runs(store)
    assert [r[:4] for r in runs] == [("deploy", "v7", 2, 1)]
    assert ctx.metrics.counters["sentryml_golden_invalid_events_total"] == 1
    assert ctx.metrics.counters["sentryml_golden_pass_rate"] == 0.5

    # 50% < 90%: paged through the worker's alert sink, onto the real alerts topic.
    got = consume_alerts(kafka, topics.alerts)
    assert [(a.kind, a.severity, a.adapter_version, a.value) for a in got] == [
        ("golden", "page", "v7", 0.5)
    ]
    assert store.query("SELECT kind, severity FROM alerts").rows == [("golden", "page")]


def test_daily_timer_runs_once_per_slot_on_the_injected_clock(
    kafka, store, store_settings, model_server, tmp_path: Path
) -> None:
    golden_file = tmp_path / "triggers.yaml"
    golden_file.write_text(GOLDEN)
    create_topics(kafka)
    day = datetime(2026, 1, 5, tzinfo=UTC)
    clock = Clock(day + timedelta(hours=5, minutes=59))
    app, ctx = create_app(
        _settings(kafka, store_settings, golden_file, model_server, cron="0 6 * * *"),
        store=store,
        now=clock,
        agent_modules=("streams.agents.golden",),
    )
    checks = ctx.metrics.counters

    def checked_more(than: float) -> bool:
        return checks.get("sentryml_golden_schedule_checks_total", 0) >= than + 3

    with running(app):
        wait_for(lambda: checked_more(0), timeout=60, what="schedule checks before 06:00")
        assert _runs(store) == []  # 05:59: nothing due

        clock.t = day + timedelta(hours=6, seconds=30)
        wait_for(lambda: _runs(store), timeout=60, what="the 06:00 daily run")
        seen = checks["sentryml_golden_schedule_checks_total"]
        wait_for(lambda: checked_more(seen), timeout=60, what="more schedule checks")
        assert len(_runs(store)) == 1  # the slot ran once, not on every check

        clock.t = day + timedelta(days=1, hours=6, minutes=2)
        wait_for(lambda: len(_runs(store)) == 2, timeout=60, what="the next day's run")
    runs = _runs(store)
    assert [r[:4] for r in runs] == [("daily", "none", 2, 1), ("daily", "none", 2, 1)]
    assert [r[4] for r in runs] == [clock.t - timedelta(days=1, minutes=1, seconds=30), clock.t]
