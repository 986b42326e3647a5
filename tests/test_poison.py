"""Poison input and processing bugs on the real broker: DLQ'd with a reason, never lost.

tests/test_worker.py covers invalid UTF-8, invalid JSON, wrong schema, a 1.1 MB payload,
deep nesting, an unknown schema version, a NaN literal and a future timestamp. This file
adds a 10 MiB payload and infinities, an event that makes the embedder raise (a real
``Embedder`` implementation with a bug for one input), and a store outage during
featurization, which must be retried rather than dead-lettered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np
import pytest

from schemas.topics import Topics
from streams.app import create_app
from streams.config import IngestSettings, WorkerSettings
from streams.topics import create_topics
from tests.conftest import http_writer_settings, wait_for
from tests.faults import (
    TcpProxy,
    caught_up,
    consume_all,
    flushed_events,
    make_events,
    produce,
    stored_logs,
)
from tests.harness import running
from workers.baseline import fit_baseline, save_baseline
from workers.dlq import DLQ_KEEP_BYTES
from workers.embedding import load_embedder
from workers.ingest import BaselineCache, IngestProcessor, RawRecord
from workers.judge import JudgeSettings
from workers.kafka import KafkaSettings
from workers.store import StoreSettings, open_store
from workers.store.exceptions import StoreError
from workers.synthetic import support_records

pytestmark = [pytest.mark.kafka]

MODEL, ADAPTER = "support-bot-base", "v1"


def _settings(kafka: KafkaSettings, store_settings: StoreSettings) -> WorkerSettings:
    return WorkerSettings(
        kafka=kafka,
        store=store_settings,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        ingest=IngestSettings(batch_max=200, batch_seconds=0.5),
        judge=JudgeSettings(enabled=False),
    )


def _caught_up(kafka: KafkaSettings, group: str) -> bool:
    return caught_up(kafka, group, Topics(kafka.topic_prefix).inference_logs)


def test_10_mib_payload_and_infinities_go_to_the_dlq_and_the_next_event_is_counted(
    kafka, store, store_settings
) -> None:
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    settings = _settings(kafka, store_settings)
    good = make_events(12, tag="good")
    valid = json.loads(good[0].to_bytes())
    head = json.dumps(valid)[:-1]  # the object without its closing brace
    assert '"latency_ms": 12.5' in head and '"metadata": {}' in head
    poison = {
        "huge": json.dumps({**valid, "completion": "y" * (10 * 1024 * 1024)}).encode(),
        "inf": head.replace('"latency_ms": 12.5', '"latency_ms": Infinity').encode() + b"}",
        "neg_inf": head.replace('"metadata": {}', '"metadata": {"s": -Infinity}').encode() + b"}",
        "overflow": head.replace('"latency_ms": 12.5', '"latency_ms": 1e999').encode() + b"}",
    }
    # Each poison message is followed by a good event: it must be processed all the same.
    messages: list[tuple[bytes, bytes]] = [(b"good-first", good[0].to_bytes())]
    followers = {}
    for i, (name, value) in enumerate(poison.items(), start=1):
        messages.append((f"bad-{name}".encode(), value))
        messages.append((good[i].request_id.encode(), good[i].to_bytes()))
        followers[name] = good[i].request_id
    messages += [(e.request_id.encode(), e.to_bytes()) for e in good[len(poison) + 1 :]]
    # All on one partition, so "the next event" is well defined.
    produce(kafka, topics.inference_logs, [(b"same-key", v) for _, v in messages])

    app, ctx = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
    with running(app):
        wait_for(lambda: _caught_up(kafka, settings.consumer_group), timeout=120, what="all acked")
        dlq = consume_all(kafka, topics.dlq, len(poison))

    assert len(dlq) == len(poison)  # DLQ count == injected count
    by_reason = {}
    for msg in dlq:
        headers = dict(msg.headers())
        by_reason.setdefault(headers["sentryml-reason"].decode(), []).append((msg, headers))
    assert sorted((r, len(v)) for r, v in by_reason.items()) == [
        ("json", 2),
        ("schema", 1),
        ("size", 1),
    ]
    ((huge, huge_headers),) = by_reason["size"]
    assert int(huge_headers["sentryml-truncated-from"]) == len(poison["huge"])
    assert huge.value() == poison["huge"][:DLQ_KEEP_BYTES]
    assert b'"request_id": "good-0"' in huge.value()  # enough to find the producer
    for msg, headers in by_reason["json"] + by_reason["schema"]:
        assert msg.value() in (poison["inf"], poison["neg_inf"], poison["overflow"])
        assert int(headers["sentryml-source-offset"]) >= 0
    assert b"finite" in by_reason["schema"][0][1]["sentryml-error"]

    stored = {r[0] for r in store.query("SELECT request_id FROM inference_logs FINAL").rows}
    assert set(followers.values()) <= stored
    assert flushed_events(store) == len(good)
    assert stored_logs(store) == (len(good), len(good))
    assert ctx.metrics.counters["sentryml_dlq_events_total"] == len(poison)


class FragileEmbedder:
    """model2vec, behind a tokenizer step with a bug: it raises on a NUL character.

    A real implementation of :class:`workers.embedding.Embedder` (real vectors for every
    other text), so the bug is reached through real input, as in production.
    """

    name = "model2vec-fragile"

    def __init__(self) -> None:
        self._inner = load_embedder("model2vec")
        self.dim = self._inner.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        for text in texts:
            if "\x00" in text:
                raise ValueError(f"tokenizer cannot encode {text[:60]!r}")
        return self._inner.encode(texts, batch_size=batch_size)


def test_an_event_that_crashes_the_embedder_goes_to_the_dlq_and_its_batch_is_counted(
    kafka, store, store_settings
) -> None:
    create_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    settings = _settings(kafka, store_settings)
    embedder = FragileEmbedder()
    baseline = fit_baseline(
        support_records(200, seed=1), embedder, base_model=MODEL, adapter_version=ADAPTER, k=4,
        seed=0, progress=False,
    )  # fmt: skip
    save_baseline(store, baseline)
    good = make_events(30, tag="ok")
    bug = make_events(1, tag="nul")[0].model_copy(update={"prompt": "reset my password\x00"})
    # One partition, one batch: the bad event in the middle of good ones.
    ordered = [*good[:15], bug, *good[15:]]
    produce(kafka, topics.inference_logs, [(b"one-key", e.to_bytes()) for e in ordered])

    app, ctx = create_app(
        settings,
        store=store,
        agent_modules=("streams.agents.ingest",),
        embedder_factory=lambda name: {embedder.name: embedder}[name],
    )
    with running(app):
        # Acked only after the DLQ delivery: nothing is left uncommitted, nothing skipped.
        wait_for(lambda: _caught_up(kafka, settings.consumer_group), timeout=120, what="all acked")
        dlq = consume_all(kafka, topics.dlq, 1)

    assert len(dlq) == 1
    headers = dict(dlq[0].headers())
    assert headers["sentryml-reason"] == b"embedding_error"
    assert b"ValueError" in headers["sentryml-error"]
    assert json.loads(dlq[0].value())["request_id"] == bug.request_id
    assert int(headers["sentryml-source-offset"]) == 15
    # Every other event of that batch is counted in every feature.
    for feature in ("embedding", "output_length", "refusal"):
        total = store.query(
            "SELECT sum(count) FROM window_counts WHERE feature = {f:String}", {"f": feature}
        ).scalar()
        assert total == len(good), feature
    assert flushed_events(store) == len(good)
    assert ctx.metrics.counters["sentryml_dlq_events_total"] == 1


def test_a_store_outage_while_loading_a_baseline_is_retried_not_dead_lettered(
    store, store_settings, clickhouse_http_url
) -> None:
    """A StoreError inside featurization propagates (the agent retries the batch); before
    the fix it sent the whole batch to the DLQ as ``embedding_error``."""
    endpoint = urlsplit(clickhouse_http_url)
    proxy = TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 8123).up()
    remote = open_store(http_writer_settings(proxy.url, store_settings.database))
    proxy.down()  # baselines live behind a store that is now refusing connections
    processor = IngestProcessor(
        store, consumer_group="g", worker_id="w", baselines=BaselineCache(remote)
    )
    records = [
        RawRecord("t.inference-logs", 0, i, e.request_id.encode(), e.to_bytes())
        for i, e in enumerate(make_events(3, tag="sb"))
    ]
    try:
        with pytest.raises(StoreError):
            processor.process(records)
    finally:
        remote.close()
    assert flushed_events(store) == 0
