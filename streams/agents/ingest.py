"""The ingest agent: raw inference logs in; DLQ, judge sample, raw rows and counts out.

The agent is thin: it takes a batch, hands it to :class:`workers.ingest.IngestProcessor`
(off the event loop), sends rejects to the DLQ and the judge sample to its topic (waiting
for delivery), flushes to the store (retrying with backoff while the store is down, so
the stream back-pressures instead of losing data), and only then acks the batch's offsets.
Events are never acked by an exception: ``noack_take`` leaves acking to us.

What the store refuses for good is bisected out of the batch to the DLQ
(``store_rejected``); an error that is neither bad input nor transient, or a rebalance that
has waited too long for a batch that cannot be flushed (the fence), ends the worker with
that batch unacked, so that Kafka redelivers it rather than later acks committing past it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.exceptions import ProducerSendError

from streams.agents._plumbing import (
    RebalanceFence,
    deliver,
    raw_record,
    retry_forever,
    stop_unacked,
)
from streams.app import WorkerContext, raw_topic
from workers.dlq import RawRecord, Rejected, dlq_headers, truncated
from workers.ingest import BatchResult

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings
    processor = ctx.ingest
    # The native topic, and the Collector's OTLP topics when OTLP ingest is on: the
    # processor decodes each by its topic, with the same offsets, replay rule and DLQ.
    source = raw_topic(app, ctx.topics.inference_logs, *sorted(processor.decoders))
    dlq = raw_topic(app, ctx.topics.dlq)
    judge_requests = raw_topic(app, ctx.topics.judge_requests)
    fenced = RebalanceFence(lambda: bool(app.rebalancing), settings.rebalance_fence_s)

    async def to_dlq(rejected: Rejected) -> None:
        log.warning(
            "to DLQ: %s reason=%s: %s",
            rejected.record.coordinates,
            rejected.reason,
            rejected.error[:300],
        )
        # The value has PII masked and an oversize payload cut (workers.dlq.redact_rejected).
        try:
            await deliver(dlq, rejected.record.key, rejected.value, dlq_headers(rejected))
        except ProducerSendError as exc:
            if "MessageSizeTooLarge" not in repr(exc):
                raise
            # The DLQ topic refused the original size: keep a prefix and say so.
            cut = truncated(rejected)
            await deliver(dlq, cut.record.key, cut.value, dlq_headers(cut))
        ctx.metrics.inc("sentryml_dlq_events_total")

    ctx.metrics.inc("sentryml_store_errors_total", 0)  # exported (as 0) before any error

    def store_error(exc: BaseException) -> None:
        ctx.metrics.inc("sentryml_store_errors_total")
        ctx.health.failed(processor.redactor.redact(str(exc))[:300])

    async def handle(result: BatchResult) -> int:
        """DLQ, judge sample, flush; the number of events the store refused (DLQ'd too)."""
        for rejected in result.rejected:
            await to_dlq(rejected)
        if ctx.judge is not None:
            # select reads today's judge usage from the store: never on the event loop.
            for event in await asyncio.to_thread(ctx.judge.sampler.select, result.accepted):
                await deliver(judge_requests, event.request_id.encode(), event.to_bytes())
        refused = await retry_forever(
            processor.flush, result, what="flush to the store", on_error=store_error, fenced=fenced
        )
        ctx.health.succeeded()
        for rejected in refused:  # counted nowhere: the DLQ holds them before the ack
            await to_dlq(rejected)
        # Wall-clock seconds, for Prometheus' time(): alert when a worker with a backlog
        # has not flushed for minutes (docs/operations.md, "Alerting on SentryML").
        ctx.metrics.set("sentryml_last_flush_timestamp_seconds", time.time())
        return len(refused)

    async def ingest_batch(stream: Any, events: list[Any], records: list[RawRecord]) -> None:
        started = time.perf_counter()
        # Processing reads flush_log and baselines: it waits for the store like a flush.
        result = await retry_forever(
            processor.process,
            records,
            what="processing a batch",
            on_error=store_error,
            fenced=fenced,
        )
        refused = await handle(result)
        for event in events:
            await stream.ack(event)
        # Seconds per second = how busy this worker is, and how much of it is embedding.
        ctx.metrics.inc("sentryml_batch_seconds_total", time.perf_counter() - started)
        ctx.metrics.inc("sentryml_embed_seconds_total", result.embed_seconds)
        ctx.metrics.inc("sentryml_events_total", len(records))
        ctx.metrics.inc("sentryml_events_counted_total", len(result.accepted) - refused)
        ctx.metrics.inc("sentryml_events_store_rejected_total", refused)
        ctx.metrics.inc("sentryml_events_skipped_replay_total", result.skipped)
        ctx.metrics.inc("sentryml_events_expired_total", result.expired)
        ctx.metrics.inc("sentryml_flushes_total")

    @app.agent(source, name="ingest")
    async def ingest(stream: Any) -> None:  # faust.StreamT lacks noack_take in its stubs
        async for events in stream.noack_take(
            settings.ingest.batch_max, within=settings.ingest.batch_seconds
        ):
            records = [raw_record(e) for e in events]
            for e in events:
                ctx.health.first_fetched.setdefault(e.message.tp, e.message.offset)
            ctx.health.batch_started()
            try:
                await ingest_batch(stream, events, records)
                ctx.health.batch_finished()
            except Exception as exc:
                await stop_unacked(ctx, records, exc, redact=processor.redactor.redact)
