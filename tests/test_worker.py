"""The stream worker on the real local broker and chDB: DLQ routing, exact counts, drift alerts."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.events import Feedback, InferenceLog
from schemas.topics import Topics
from streams.agents.drift import evaluate_once
from streams.app import create_app
from streams.config import IngestSettings, WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.faults import consume_all
from tests.harness import running
from workers.baseline import fit_baseline, save_baseline
from workers.dlq import DLQ_KEEP_BYTES
from workers.embedding import load_embedder
from workers.judge import JudgeSettings
from workers.kafka import KafkaSettings
from workers.synthetic import domain_prompts, support_records

pytestmark = [pytest.mark.kafka]

MODEL = "support-bot-base"
ADAPTER = "v1"


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def fitted(embedder):
    """A k=8 baseline fitted on synthetic support-assistant traffic (the training set)."""
    return fit_baseline(
        support_records(600, seed=1),
        embedder,
        base_model=MODEL,
        adapter_version=ADAPTER,
        k=8,
        seed=0,
        progress=False,
    )


def _settings(kafka: KafkaSettings, store_settings, **ingest) -> WorkerSettings:
    return WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=200, batch_seconds=0.5, **ingest),
        judge=JudgeSettings(enabled=False),  # the judge has its own tests
    )


def _produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {**kafka.client_config(), "enable.idempotence": True, "message.max.bytes": 16_000_000}
    )
    for key, value in messages:
        producer.produce(topic, value, key)
        producer.poll(0)
    assert producer.flush(30) == 0


def _log(i: int, prompt: str, completion: str, ts: datetime, **kw: object) -> InferenceLog:
    return InferenceLog(
        request_id=f"req-{i}-{uuid.uuid4().hex[:6]}",
        ts=ts,
        base_model=MODEL,
        adapter_version=ADAPTER,
        prompt=prompt,
        completion=completion,
        **kw,  # type: ignore[arg-type]
    )


def _counted(store, feature: str = "output_length") -> int:
    return int(
        store.query(
            "SELECT sum(count) FROM window_counts WHERE feature = {f:String}", {"f": feature}
        ).scalar()
        or 0
    )


@pytest.fixture
def worker_env(kafka, store, store_settings, fitted) -> Iterator[tuple]:
    save_baseline(store, fitted)
    create_topics(kafka)
    settings = _settings(kafka, store_settings)
    app, ctx = create_app(settings, store=store)
    yield settings, app, ctx


def test_bad_input_goes_to_the_dlq_and_good_input_is_counted_once(kafka, store, worker_env) -> None:
    _, app, ctx = worker_env
    topics = Topics(kafka.topic_prefix)
    now = datetime.now(UTC)
    good = [
        _log(i, r.prompt, r.completion, now - timedelta(minutes=1))
        for i, r in enumerate(support_records(40, seed=5))
    ]
    valid = json.loads(good[0].to_bytes())
    bad: dict[str, bytes] = {
        "encoding": b"\xff\xfe\x00garbage",
        "json": b'{"request_id": "x", ',
        "schema": json.dumps({**valid, "base_model": 7}).encode(),
        "size": json.dumps({**valid, "completion": "x" * 1_100_000}).encode(),
        "type_tag": json.dumps({**valid, "type": "sentryml.inference_log.v99"}).encode(),
        "nan": json.dumps({**valid, "latency_ms": math.nan}).encode(),  # NaN literal
        "timestamp": json.dumps({**valid, "ts": (now + timedelta(days=3)).isoformat()}).encode(),
        "nesting": ("[" * 5000 + "]" * 5000).encode(),
    }
    messages = [(e.request_id.encode(), e.to_bytes()) for e in good[:20]]
    messages += [(f"bad-{k}".encode(), v) for k, v in bad.items()]
    messages += [(e.request_id.encode(), e.to_bytes()) for e in good[20:]]
    _produce(kafka, topics.inference_logs, messages)

    with running(app):
        wait_for(lambda: _counted(store) == len(good), timeout=120, what="good events counted")
        dlq = consume_all(kafka, topics.dlq, len(bad))

    assert len(dlq) == len(bad)  # the count of DLQ messages equals the injected count
    reasons = {}
    for msg in dlq:
        headers = dict(msg.headers())
        reasons[msg.key().decode()] = headers["sentryml-reason"].decode()
        assert headers["sentryml-source-topic"].decode() == topics.inference_logs
        assert int(headers["sentryml-source-offset"]) >= 0
        assert headers["sentryml-error"]
        original = bad[msg.key().decode().removeprefix("bad-")]
        if headers["sentryml-reason"] == b"size":  # an oversize payload keeps only its head
            assert int(headers["sentryml-truncated-from"]) == len(original)
            original = original[:DLQ_KEEP_BYTES]
        assert msg.value() == original  # original bytes (no PII in these to mask)
    assert reasons == {
        "bad-encoding": "encoding",
        "bad-json": "json",
        "bad-schema": "schema",
        "bad-size": "size",
        "bad-type_tag": "type_tag",
        "bad-nan": "json",
        "bad-timestamp": "timestamp",
        "bad-nesting": "json",
    }
    # Every good event counted exactly once in every feature, and stored raw (redacted).
    for feature in ("embedding", "output_length", "ttr", "distinct2", "refusal"):
        assert _counted(store, feature) == len(good), feature
    assert store.query("SELECT count() FROM inference_logs FINAL").scalar() == len(good)
    counters = ctx.metrics.counters
    assert counters["sentryml_dlq_events_total"] == len(bad)
    assert 0 < counters["sentryml_embed_seconds_total"] < counters["sentryml_batch_seconds_total"]


def test_a_replayed_batch_is_not_counted_twice(kafka, store, store_settings, worker_env) -> None:
    """A restart that re-reads flushed-but-uncommitted offsets skips them (flush_log)."""
    settings, app, _ctx = worker_env
    topics = Topics(kafka.topic_prefix)
    now = datetime.now(UTC) - timedelta(minutes=2)
    events = [
        _log(i, r.prompt, r.completion, now) for i, r in enumerate(support_records(60, seed=9))
    ]
    _produce(kafka, topics.inference_logs, [(e.request_id.encode(), e.to_bytes()) for e in events])
    with running(app):
        wait_for(lambda: _counted(store) == len(events), timeout=120, what="first pass counted")
    # Rewind the group's committed offsets to 0, as if the worker had crashed after its
    # flushes but before committing: the next worker re-reads everything and must skip it.
    admin = AdminClient(kafka.client_config())
    tps = [TopicPartition(topics.inference_logs, p, 0) for p in range(kafka.partitions)]
    futures = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(settings.consumer_group, tps)]
    )
    for future in futures.values():
        future.result(30)
    app2, ctx2 = create_app(settings, store=store)
    with running(app2):
        wait_for(
            lambda: (
                ctx2.metrics.counters.get("sentryml_events_skipped_replay_total", 0) == len(events)
            ),
            timeout=120,
            what="replayed events skipped",
        )
    assert _counted(store) == len(events)


@pytest.mark.slow
def test_domain_shift_raises_embedding_and_output_drift_alerts(kafka, store, worker_env) -> None:
    _, app, ctx = worker_env
    topics = Topics(kafka.topic_prefix)
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    clock = {"now": t0}
    ctx.now = lambda: clock["now"]
    ctx.alerts.golden.now = ctx.now
    ctx.alerts.drift.now = ctx.now

    # Phase 1: 5,000 in-distribution events in the half hour before t0.
    phase1 = [
        _log(i, r.prompt, r.completion, t0 - timedelta(seconds=30 * 60 * i / 5000))
        for i, r in enumerate(support_records(5000, seed=11))
    ]
    # Phase 2: other domains, rambling long outputs, 90–100 minutes after t0.
    shifted_prompts = [p for d in ("cooking", "legal") for p in domain_prompts(d, 200, seed=3)]
    long_answer = " ".join(["Well, there are many considerations to weigh here."] * 30)
    phase2 = [
        _log(10_000 + i, p, long_answer, t0 + timedelta(minutes=90 + 10 * i / len(shifted_prompts)))
        for i, p in enumerate(shifted_prompts)
    ]
    _produce(kafka, topics.inference_logs, [(e.request_id.encode(), e.to_bytes()) for e in phase1])
    with running(app) as runner:
        wait_for(lambda: _counted(store) == len(phase1), timeout=300, what="phase 1 counted")
        assert runner.call(evaluate_once(ctx)) == []  # in-distribution: no alert
        _produce(
            kafka, topics.inference_logs, [(e.request_id.encode(), e.to_bytes()) for e in phase2]
        )
        wait_for(lambda: _counted(store) == len(phase1) + len(phase2), timeout=300, what="phase 2")
        clock["now"] = t0 + timedelta(hours=2)
        sent = runner.call(evaluate_once(ctx))
        alerts_on_topic = consume_all(kafka, topics.alerts, len(sent))
    # one notification per incident (model, adapter, kind, feature), whatever the windows
    kinds = [(a.kind, a.feature) for a in sent]
    assert ("embedding_drift", "embedding") in kinds
    assert ("output_drift", "output_length") in kinds
    assert len(set(kinds)) == len(kinds) and {a.incident_state for a in sent} == {"open"}
    assert len(alerts_on_topic) == len(sent)
    stat = store.query(
        "SELECT status, psi, p_value, sample_size FROM drift_stats "
        "WHERE feature = 'embedding' AND window = '1h' ORDER BY ts DESC LIMIT 1"
    ).dicts()[0]
    assert stat["status"] == "alert" and stat["p_value"] < 0.01
    assert stat["sample_size"] == len(phase2)


def test_feedback_is_stored_redacted_and_bad_feedback_goes_to_the_dlq(
    kafka, store, worker_env
) -> None:
    _, app, _ = worker_env
    topics = Topics(kafka.topic_prefix)
    good = [
        Feedback(request_id="r1", base_model=MODEL, label="bad", correction='{"intent": "refund"}'),
        Feedback(
            request_id="r2",
            base_model=MODEL,
            correction="Write to jane.doe@example.com for a refund.",
            prompt="refund please",
        ),
        Feedback(request_id="r3", base_model=MODEL, preference={"chosen": "a", "rejected": "b"}),
    ]
    messages = [(f.request_id.encode(), f.to_bytes()) for f in good]
    messages.append((b"bad", b'{"request_id": "r4", "base_model": "m"}'))  # says nothing
    _produce(kafka, topics.feedback, messages)
    with running(app):
        wait_for(
            lambda: store.query("SELECT count() FROM feedback").scalar() == 3,
            timeout=90,
            what="feedback stored",
        )
        dlq = consume_all(kafka, topics.dlq, 1)
    assert [m.key() for m in dlq] == [b"bad"]
    rows = {r["request_id"]: r for r in store.query("SELECT * FROM feedback").dicts()}
    assert "jane.doe@example.com" not in rows["r2"]["correction"]
    assert rows["r3"]["chosen"] == "a" and rows["r3"]["rejected"] == "b"
