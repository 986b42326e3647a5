"""Nothing lost, nothing stuck (issue 16): every event the schema accepts is counted or
dead-lettered with a reason, whatever the producer sends and whatever the store does.

Real parts, as in tests/test_reliability.py: the local Kafka broker, ``sentryml worker``
as a subprocess, and the chDB store behind its ClickHouse-HTTP endpoint (and a TCP proxy).
kcat, a non-Python client, produces where it is installed. Every test checks exact
counts: events counted in ``flush_log`` plus DLQ records equal the events produced, and
``inference_logs FINAL`` holds each counted request once.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import Alert
from schemas.topics import Topics
from streams.app import EXIT_FATAL, EXIT_STOP_TIMEOUT, create_app, publisher
from streams.config import IngestSettings, WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.faults import (
    Rig,
    TcpProxy,
    caught_up,
    consume_all,
    flushed_events,
    free_port,
    make_events,
    produce,
    report,
    rig_on,
    stored_logs,
)
from tests.harness import running
from workers.alerts import AlertSink
from workers.baseline import fit_baseline, save_baseline
from workers.embedding import load_embedder
from workers.ingest import EVENT_RETENTION
from workers.judge import JudgeSettings
from workers.store import migrations
from workers.synthetic import support_records

pytestmark = [pytest.mark.kafka]

MODEL, ADAPTER = "support-bot-base", "v1"


@pytest.fixture
def rig(kafka, store, store_settings, clickhouse_http_url, tmp_path) -> Iterator[Rig]:
    with rig_on(kafka, store, store_settings, clickhouse_http_url, tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def model2vec():
    return load_embedder("model2vec")


def with_baseline(rig: Rig, embedder) -> None:
    """A baseline for the test events' model, so that every event has window counts."""
    baseline = fit_baseline(
        support_records(200, seed=1), embedder, base_model=MODEL, adapter_version=ADAPTER, k=4,
        seed=0, progress=False,
    )  # fmt: skip
    save_baseline(rig.store, baseline)


def kcat_produce(rig: Rig, values: list[bytes], key: bytes = b"one-key") -> None:
    """Produce with kcat (one line per message, tab between key and value) where it is
    installed, else with confluent-kafka; every message keyed alike (one partition)."""
    if any(b"\n" in v or b"\t" in v for v in values) or shutil.which("kcat") is None:
        produce(rig.kafka, rig.topics.inference_logs, [(key, v) for v in values])
        return
    lines = b"".join(key + b"\t" + v + b"\n" for v in values)
    subprocess.run(
        ["kcat", "-P", "-b", rig.kafka.bootstrap, "-t", rig.topics.inference_logs, "-K", "\t"],
        input=lines,
        check=True,
        timeout=60,
    )


def _wire(event) -> dict:
    return json.loads(event.to_bytes())


def _count_of(rig: Rig, feature: str) -> int:
    return int(
        rig.store.query(
            "SELECT sum(count) FROM window_counts WHERE feature = {f:String}", {"f": feature}
        ).scalar()
        or 0
    )


def test_as_tried_history_replay_and_a_1960_timestamp_are_dead_lettered_not_wedging(
    rig: Rig, model2vec
) -> None:
    """The issue's sequence through kcat: 200 valid, 6 malformed, 300 from 400-100 days
    ago, one from 1960, then good traffic. Before the fix the old rows vanished past the
    TTL and the 1960 event wedged the partition (the flush failed forever)."""
    with_baseline(rig, model2vec)
    now = datetime.now(UTC)
    good = make_events(200, tag="good")
    valid = _wire(good[0])
    malformed = [
        b'{"type": "sentryml.inference_log.v1", "request_id": ',  # not JSON
        json.dumps({k: v for k, v in valid.items() if k != "completion"}).encode(),
        json.dumps({**valid, "type": "sentryml.inference_log.v9"}).encode(),
        json.dumps({**valid, "surprise": 1}).encode(),
        json.dumps({**valid, "completion_tokens": -3}).encode(),
        json.dumps({**valid, "ts": "2999-01-01T00:00:00Z"}).encode(),
    ]
    history = [
        e.model_copy(update={"ts": now - timedelta(days=400 - i)})
        for i, e in enumerate(make_events(300, tag="old"))
    ]
    ancient = json.dumps({**_wire(make_events(1, tag="y1960")[0]), "ts": "1960-01-01T00:00:00Z"})
    after = make_events(50, tag="after")
    values = [
        *(e.to_bytes() for e in good),
        *malformed,
        *(e.to_bytes() for e in history),
        ancient.encode(),
        *(e.to_bytes() for e in after),
    ]
    kcat_produce(rig, values)
    counted = len(good) + len(after)
    dead = len(malformed) + len(history) + 1
    assert counted + dead == len(values)

    worker = rig.worker("w1")
    try:
        wait_for(rig.caught_up, timeout=180, what="every event committed (none stuck)")
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0
    assert flushed_events(rig.store) == counted
    assert stored_logs(rig.store) == (counted, counted)
    for feature in ("output_length", "refusal"):
        assert _count_of(rig, feature) == counted, feature  # nothing counted then TTL-dropped
    assert rig.dlq_reasons(dead) == {
        "json": 1,
        "schema": 3,
        "type_tag": 1,
        "timestamp": 1,
        "expired": len(history) + 1,
    }
    assert metrics["sentryml_events_expired_total"] == len(history) + 1
    report("expired on arrival", produced=len(values), counted=counted, dead_lettered=dead)


def test_the_retention_is_the_shortest_event_time_ttl_of_the_tables() -> None:
    """EVENT_RETENTION follows the migrations: a shorter TTL on event time would drop
    events the worker counted; a longer one would dead-letter events the tables keep."""
    ttls = {}
    for _, _, statements in migrations():
        for sql in statements:
            table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", sql)
            ttl = re.search(r"TTL (?:toDateTime\()?(\w+)\)? \+ INTERVAL (\d+) DAY", sql)
            if table and ttl and table.group(1) in ("inference_logs", "window_counts"):
                ttls[table.group(1)] = (ttl.group(1), int(ttl.group(2)))
    assert ttls == {"inference_logs": ("ts", 30), "window_counts": ("bucket", 90)}
    assert timedelta(days=min(days for _, days in ttls.values())) == EVENT_RETENTION
    assert IngestSettings().max_event_age_days == EVENT_RETENTION.days


def test_rows_the_store_refuses_are_bisected_to_the_dlq_and_the_rest_counted(
    rig: Rig, model2vec
) -> None:
    """4 of 300 events carry a token count the schema accepts and the UInt32 column cannot
    hold (clickhouse-connect refuses to encode it): before the fix the worker retried the
    batch forever as if the store were down."""
    with_baseline(rig, model2vec)
    bad = {17, 150, 151, 299}
    events = [
        e.model_copy(update={"prompt_tokens": 2**32}) if i in bad else e
        for i, e in enumerate(make_events(300, tag="bis"))
    ]
    kcat_produce(rig, [e.to_bytes() for e in events])
    counted = len(events) - len(bad)

    worker = rig.worker("w1")
    try:
        wait_for(rig.caught_up, timeout=180, what="every event committed (none stuck)")
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0
    assert flushed_events(rig.store) == counted
    assert stored_logs(rig.store) == (counted, counted)
    assert _count_of(rig, "output_length") == counted
    dlq = consume_all(rig.kafka, rig.topics.dlq, len(bad))
    assert len(dlq) == len(bad)
    headers = [dict(m.headers()) for m in dlq]
    assert {h["sentryml-reason"] for h in headers} == {b"store_rejected"}
    assert all(b"prompt_tokens" in h["sentryml-error"] for h in headers)
    assert sorted(int(h["sentryml-source-offset"]) for h in headers) == sorted(bad)
    assert metrics["sentryml_events_store_rejected_total"] == len(bad)
    assert metrics["sentryml_events_counted_total"] == counted
    assert metrics["sentryml_store_errors_total"] == 0  # not mistaken for an outage
    report("deterministic store rejection", produced=len(events), counted=counted, refused=4)


def test_a_constraint_the_server_enforces_is_bisected_in_the_app(
    kafka, store, store_settings, model2vec
) -> None:
    """The same through the embedded store, the refusal coming from ClickHouse itself (a
    CHECK constraint an operator added: VIOLATED_CONSTRAINT), on three partitions."""
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    baseline = fit_baseline(
        support_records(200, seed=1), model2vec, base_model=MODEL, adapter_version=ADAPTER, k=4,
        seed=0, progress=False,
    )  # fmt: skip
    save_baseline(store, baseline)
    store.command(
        "ALTER TABLE inference_logs ADD CONSTRAINT no_canary "
        "CHECK position(prompt, 'forbidden-canary') = 0"
    )
    bad = {3, 99, 100, 250}
    events = [
        e.model_copy(update={"prompt": f"{e.prompt} forbidden-canary"}) if i in bad else e
        for i, e in enumerate(make_events(300, tag="cc"))
    ]
    produce(kafka, topics.inference_logs, [(e.request_id.encode(), e.to_bytes()) for e in events])
    settings = WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=500, batch_seconds=1.0),
        judge=JudgeSettings(enabled=False),
    )
    app, ctx = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
    with running(app):
        wait_for(
            lambda: caught_up(kafka, settings.consumer_group, topics.inference_logs),
            timeout=120,
            what="all committed",
        )
        dlq = consume_all(kafka, topics.dlq, len(bad))
    counted = len(events) - len(bad)
    assert flushed_events(store) == counted
    assert stored_logs(store) == (counted, counted)
    assert len(dlq) == len(bad)
    assert {json.loads(m.value())["request_id"] for m in dlq} == {f"cc-{i}" for i in bad}
    for msg in dlq:
        headers = dict(msg.headers())
        assert headers["sentryml-reason"] == b"store_rejected"
        assert b"VIOLATED_CONSTRAINT" in headers["sentryml-error"]
    assert ctx.metrics.counters["sentryml_events_store_rejected_total"] == len(bad)


def test_replay_skips_only_the_offset_ranges_that_were_flushed(
    kafka, store, store_settings
) -> None:
    """flush_log says offsets 0-9 and 20-29 were counted (by an earlier owner), 10-19 were
    not (a batch that never flushed). Before the fix everything up to the highest flushed
    offset (29) was skipped, so the ten events in the gap were lost."""
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    settings = WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=500, batch_seconds=0.5),
        judge=JudgeSettings(enabled=False),
    )
    events = make_events(30, tag="gap")
    produce(kafka, topics.inference_logs, [(b"one-key", e.to_bytes()) for e in events])
    earlier = [
        {"consumer_group": settings.consumer_group, "topic": topics.inference_logs,
         "partition": p, "first_offset": first, "last_offset": first + 9,
         "worker_id": "earlier-owner", "events": 10}
        for p in range(kafka.partitions) for first in (0, 20)
    ]  # fmt: skip
    store.insert("flush_log", earlier)
    app, ctx = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
    with running(app):
        wait_for(
            lambda: caught_up(kafka, settings.consumer_group, topics.inference_logs),
            timeout=120,
            what="all committed",
        )
    ours = store.query(
        "SELECT sum(events) FROM flush_log WHERE worker_id != 'earlier-owner'"
    ).scalar()
    assert ours == 10
    ids = {r[0] for r in store.query("SELECT request_id FROM inference_logs FINAL").rows}
    assert ids == {f"gap-{i}" for i in range(10, 20)}
    assert ctx.metrics.counters["sentryml_events_skipped_replay_total"] == 20


def _set_topic_config(kafka, topic: str, **config: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient(kafka.client_config())
    entries = [
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in config.items()
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_an_unexpected_handler_error_ends_the_worker_and_nothing_is_skipped(rig: Rig) -> None:
    """The DLQ topic refuses a rejected event (max.message.bytes below its size, even cut):
    not bad input, not transient. Before the fix Faust restarted the agent and later acks
    committed past the unacked batch; now the worker exits and commits nothing past it,
    and once the DLQ topic is fixed a new worker counts every event exactly once."""
    _set_topic_config(rig.kafka, rig.topics.dlq, max_message_bytes="4096")
    good = make_events(600, tag="ue")
    poison = b'{"request_id": "poison", "broken json' + b"x" * 20_000
    values = [*(e.to_bytes() for e in good[:250]), poison, *(e.to_bytes() for e in good[250:])]
    kcat_produce(rig, values)

    first = rig.worker("w1")
    try:
        code = first.wait(120)  # ends by itself
    finally:
        first.stop()
    assert code == EXIT_FATAL
    assert "unexpected error in the batch" in first.log_text()
    committed = rig.committed_total()
    assert committed <= 250, "committed past the event that was never dead-lettered"
    assert flushed_events(rig.store) == committed  # flushed exactly what was committed

    _set_topic_config(rig.kafka, rig.topics.dlq, max_message_bytes="1048588")
    second = rig.worker("w2")
    try:
        wait_for(rig.caught_up, timeout=180, what="everything committed after the fix")
    finally:
        assert second.stop() == 0
    assert flushed_events(rig.store) == len(good)
    assert stored_logs(rig.store) == (len(good), len(good))
    assert rig.dlq_reasons(1) == {"json": 1}
    report(
        "unexpected handler error",
        produced=len(values),
        committed_at_exit=committed,
        counted=len(good),
        dead_lettered=1,
    )


def test_sigterm_while_the_store_is_failing_ends_the_worker_in_bounded_time(rig: Rig) -> None:
    """Before the fix the worker kept retrying the in-flight batch after SIGTERM (Faust
    waits for it to be acked) and only SIGKILL ended it."""
    n = 2_000
    events = make_events(n, tag="tf")
    rig.produce(events[: n // 2])
    first = rig.worker("w1", SENTRYML_SHUTDOWN_TIMEOUT_S="15")
    try:
        wait_for(rig.caught_up, timeout=180, what="first half committed")
        rig.proxy.down()
        rig.produce(events[n // 2 :])
        wait_for(
            lambda: "failed (attempt 2)" in first.log_text(), timeout=120, what="failing flushes"
        )
        committed_before = rig.committed_total()
        stopping = time.monotonic()
        first.signal(signal.SIGTERM)
        code = first.wait(90)
        stop_s = time.monotonic() - stopping
    finally:
        first.stop()
    assert code == EXIT_STOP_TIMEOUT
    assert stop_s < 15 + 20  # the deadline, plus a generous margin for a busy machine
    assert rig.committed_total() == committed_before == flushed_events(rig.store) == n // 2

    rig.proxy.up()
    second = rig.worker("w2")
    try:
        wait_for(rig.caught_up, timeout=180, what="everything committed after the restart")
    finally:
        assert second.stop() == 0
    rig.assert_exact(n)
    report("SIGTERM under a failing store", produced=n, stop_s=round(stop_s, 1), lost=0)


def test_health_is_503_with_the_reason_while_flushes_fail_and_lag_counts_fetched_events(
    rig: Rig,
) -> None:
    """The store goes away before the group ever committed: before the fix /health said
    ok and the lag read 0 (nothing committed, so nothing was counted as behind)."""
    n = 300
    worker = rig.worker("w1", SENTRYML_HEALTH_MAX_FAILING_S="3")
    try:
        wait_for(lambda: worker.health()[0] == 200, timeout=120, what="the worker up")
        rig.proxy.down()
        down_at = time.monotonic()
        rig.produce(make_events(n, tag="hl"))
        _, body = wait_for(lambda: (h := worker.health())[0] == 503 and h, timeout=120, what="503")
        unhealthy_after_s = time.monotonic() - down_at
        assert body["status"] == "failing"
        assert any("store writes failing" in r for r in body["reasons"]), body
        lag = wait_for(
            lambda: worker.metrics().get("sentryml_consumer_lag") == n, timeout=60, what="lag"
        )
        assert lag and rig.committed_total() == 0
        rig.proxy.up()
        wait_for(rig.caught_up, timeout=180, what="everything committed after the store returned")
        wait_for(lambda: worker.health()[0] == 200, timeout=60, what="healthy again")
        wait_for(
            lambda: worker.metrics().get("sentryml_consumer_lag") == 0, timeout=60, what="lag 0"
        )
    finally:
        rig.proxy.up()
        assert worker.stop() == 0
    rig.assert_exact(n)
    report("health", produced=n, lag_while_failing=n, unhealthy_after_s=unhealthy_after_s)


def _source_topics_in_dlq(rig: Rig) -> dict[str, int]:
    size = rig.dlq_size()
    out: dict[str, int] = {}
    for msg in consume_all(rig.kafka, rig.topics.dlq, size) if size else []:
        topic = dict(msg.headers())["sentryml-source-topic"].decode()
        out[topic] = out.get(topic, 0) + 1
    return out


def test_a_hung_store_freezes_nothing_on_the_event_loop(rig: Rig) -> None:
    """The store endpoint accepts connections and answers nothing for 30 s, with the judge
    sampling on (its budget check reads the store). Before the fix the sampler's budget
    query ran on the event loop: /metrics, /health and the commit loop froze with it."""
    n = 1_000
    events = make_events(n, tag="hang")
    worker = rig.worker(
        "w1",
        SENTRYML_JUDGE_ENABLED="true",
        SENTRYML_JUDGE_ALLOW_RATE_OVERRIDE="true",
        SENTRYML_JUDGE_SAMPLE_RATE="0.2",
        SENTRYML_JUDGE_BUDGET_REFRESH_S="0.1",  # re-read the usage every batch
        SENTRYML_JUDGE_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",  # nobody: judge fails
        SENTRYML_JUDGE_MAX_ATTEMPTS="1",
        SENTRYML_HEALTH_MAX_BATCH_S="10",
    )
    answered = missed = 0
    try:
        rig.produce(events[: n // 2])
        wait_for(rig.caught_up, timeout=180, what="first half committed")
        rig.proxy.hang()
        hung_at = time.monotonic()
        rig.produce(events[n // 2 :])
        committed_during = rig.committed_total()
        unhealthy = None
        while time.monotonic() - hung_at < 30:
            metrics, (status, body) = worker.metrics(), worker.health()
            if metrics and status:
                answered += 1
            else:
                missed += 1
            if status == 503:
                unhealthy = body
            time.sleep(1)
        assert rig.committed_total() == committed_during, "committed before the flush"
        rig.proxy.unhang()
        unhung_at = time.monotonic()
        wait_for(rig.caught_up, timeout=180, what="everything committed after the hang")
        recovery_s = time.monotonic() - unhung_at
    finally:
        rig.proxy.unhang()
        assert worker.stop() == 0
    assert missed == 0 and answered >= 10, (answered, missed)
    assert unhealthy is not None and any("batch in flight" in r for r in unhealthy["reasons"])
    assert flushed_events(rig.store) == n
    assert stored_logs(rig.store) == (n, n)
    assert rig.topics.inference_logs not in _source_topics_in_dlq(rig)  # judge failures only
    report("hung store", produced=n, answered=answered, missed=missed, recovery_s=recovery_s)


def test_an_alert_whose_publish_failed_is_not_suppressed_and_is_delivered_later(
    kafka, store, store_settings
) -> None:
    """The alerts topic refuses the alert (max.message.bytes too small). Before the fix the
    row was stored first, so the next evaluation's renotify check suppressed an alert that
    was never delivered."""
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    _set_topic_config(kafka, topics.alerts, max_message_bytes="200")
    settings = WorkerSettings(kafka=kafka, store=store_settings, judge=JudgeSettings(enabled=False))
    app, ctx = create_app(settings, store=store, agent_modules=())
    now = datetime.now(UTC)
    alert = Alert(
        ts=now, alert_id="drift-a1", base_model=MODEL, adapter_version=ADAPTER,
        kind="drift", feature="output_length", window="1h", severity="alert", value=0.4,
        threshold=0.2, sample_size=500, message="output_length drifted: PSI 0.40 >= 0.20",
    )  # fmt: skip
    sink = AlertSink(
        store, publisher(app, ctx.topics.alerts), renotify=timedelta(hours=1), now=lambda: now
    )

    async def emit() -> list[Alert] | Exception:
        try:
            return await sink.emit([alert])
        except Exception as exc:  # returned, not raised across threads
            return exc

    with running(app) as runner:
        assert "MessageSizeTooLarge" in repr(runner.call(emit()))
        assert store.query("SELECT count() FROM alerts").scalar() == 0  # not recorded
        _set_topic_config(kafka, topics.alerts, max_message_bytes="1048588")
        assert runner.call(emit()) == [alert]  # retried: not suppressed
        assert runner.call(emit()) == []  # delivered once, now suppressed
    # Faust leaves the failed send's FutureMessage unretrieved; collect it now, so that its
    # "never retrieved" log line does not run inside a later ast.parse (CPython 3.11.7
    # then raises "AST constructor recursion depth mismatch" in pytest's assertion rewriter).
    gc.collect()
    delivered = consume_all(kafka, topics.alerts, 1)
    assert [json.loads(m.value())["alert_id"] for m in delivered] == ["drift-a1"]
    assert store.query("SELECT alert_id FROM alerts").rows == [("drift-a1",)]


@pytest.mark.slow
def test_a_rebalance_while_a_worker_cannot_flush_counts_every_event_once(rig: Rig) -> None:
    """w1 can read the store but its inserts are cut off (its proxy resets them), so it
    holds a processed batch it cannot flush; w2, which reaches the store, joins, and the
    partitions move to it. Before the fix w1 held the batch past the rebalance and wrote
    it when its inserts got through again, after w2 had counted the same offsets with
    other batch boundaries (other dedup tokens): 2,188 of 2,000 counted. Now w1 gives the
    batch up unflushed and exits (fenced), and every event is counted once."""
    n = 2_000
    events = make_events(n, tag="rb")
    fast = {"SENTRYML_SESSION_TIMEOUT_S": "10", "SENTRYML_REBALANCE_FENCE_S": "10"}
    other = TcpProxy("127.0.0.1", rig.proxy.target[1]).up()  # w2's own path to the store
    first = rig.worker("w1", **fast)
    second = None
    try:
        rig.produce(events[: n // 2])
        wait_for(rig.caught_up, timeout=180, what="first half committed")
        rig.proxy.refuse_inserts = True
        rig.produce(events[n // 2 :])
        wait_for(
            lambda: "flush to the store failed (attempt 2)" in first.log_text(),
            timeout=120,
            what="w1 holding a processed batch",
        )
        second = rig.worker("w2", SENTRYML_STORE_URL=other.url, **fast)
        wait_for(rig.caught_up, timeout=300, what="w2 counted everything")
        rig.proxy.refuse_inserts = False  # w1's writes would get through again now
        code = wait_for(
            lambda: first.proc.poll() if first.proc.poll() is not None else None,
            timeout=120,
            what="w1 gone",
        )
    finally:
        rig.proxy.refuse_inserts = False
        first.stop()
        if second is not None:
            assert second.stop() == 0
        other.down()
    assert code == EXIT_FATAL and "fenced" in first.log_text()
    rig.assert_exact(n)
    report("rebalance during a store outage", produced=n, lost=0, duplicates=0)


def _recreate(kafka, topic: str) -> None:
    """Delete ``topic`` and create it again (new topic id, offsets from 0)."""
    from confluent_kafka.admin import AdminClient

    from streams.exceptions import BrokerUnavailable

    admin = AdminClient(kafka.client_config())
    admin.delete_topics([topic], operation_timeout=30)[topic].result(30)

    def created() -> bool:
        try:  # refused while the old one is still being deleted
            return create_topics(kafka).get(topic) == "created"
        except BrokerUnavailable:
            return False

    wait_for(created, timeout=60, what=f"{topic} created again")


def test_a_re_created_topic_is_counted_not_skipped_as_a_replay(
    kafka, store, store_settings
) -> None:
    """30 events counted; the topic is deleted and created again; 20 new events arrive at
    offsets 0-19 again. Before the fix the replay rule took them for the old topic's
    already-flushed offsets and skipped them all."""
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    settings = WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=500, batch_seconds=0.5),
        judge=JudgeSettings(enabled=False),
    )

    def count(events: list) -> None:
        produce(kafka, topics.inference_logs, [(b"one-key", e.to_bytes()) for e in events])
        app, _ = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
        with running(app):
            wait_for(
                lambda: caught_up(kafka, settings.consumer_group, topics.inference_logs),
                timeout=120,
                what="all committed",
            )

    count(make_events(30, tag="old"))
    assert flushed_events(store) == 30
    _recreate(kafka, topics.inference_logs)
    count(make_events(20, tag="new"))
    assert flushed_events(store) == 50
    assert stored_logs(store) == (50, 50)
    epochs = store.query("SELECT uniqExact(topic_id) FROM flush_log WHERE topic_id != ''")
    assert epochs.scalar() == 2
