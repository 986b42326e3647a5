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
import random
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import faust
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError

from streams.app import WorkerContext, raw_topic
from streams.exceptions import BrokerUnavailable, Fenced
from streams.topics import TopicEpochs
from workers.dlq import RawRecord, Rejected, dlq_headers, truncated
from workers.embedding import load_embedder
from workers.ingest import BatchResult, IngestProcessor
from workers.redact import Redactor
from workers.store.exceptions import StoreUnavailable

log = logging.getLogger(__name__)


def raw_record(event: Any) -> RawRecord:
    message = event.message
    headers = tuple((k, v) for k, v in (message.headers or ()))
    return RawRecord(
        message.topic, message.partition, message.offset, message.key, message.value or b"", headers
    )


async def retry_forever(
    fn: Any,
    *args: Any,
    what: str,
    max_backoff: float = 30.0,
    on_error: Callable[[BaseException], None] | None = None,
    fenced: Callable[[], str | None] | None = None,
) -> Any:
    """Call ``fn`` in a thread until it succeeds and return its result; transient store
    and broker errors (:class:`StoreUnavailable`, :class:`BrokerUnavailable`) back off
    exponentially (0.5 s doubling to ``max_backoff``, jittered), other errors raise.
    ``on_error`` is called (on the event loop) with each failed attempt's error; ``fenced``
    is asked during the backoff whether to give up (a reason: :class:`Fenced` is raised)."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    attempt = 0
    while True:
        try:
            result = await loop.run_in_executor(None, fn, *args)
            if attempt:
                log.warning("%s succeeded after %d retries", what, attempt)
            return result
        except (StoreUnavailable, BrokerUnavailable) as exc:
            attempt += 1
            if on_error is not None:
                on_error(exc)
            log.error(
                "%s failed (attempt %d), not committing; retrying in %.1fs: %s",
                what,
                attempt,
                delay,
                exc,
            )
            until = loop.time() + delay * (0.5 + random.random())
            while (left := until - loop.time()) > 0:
                reason = fenced() if fenced is not None else None
                if reason:
                    raise Fenced(f"{what} not done: {reason}") from exc
                await asyncio.sleep(min(left, 0.5))
            delay = min(delay * 2, max_backoff)


def transient_send_error(exc: BaseException) -> bool:
    """A send that may succeed later (the broker away, a leader moving), not a refusal."""
    cause = exc.__cause__ if isinstance(exc, ProducerSendError) and exc.__cause__ else exc
    return isinstance(cause, KafkaTimeoutError) or bool(getattr(cause, "retriable", False))


async def deliver(
    topic: Any,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    max_backoff: float = 30.0,
) -> None:
    """Send and wait for the broker's acknowledgement (before the source offset is acked).

    Transient failures are retried with backoff (the batch waits, as for a store outage);
    a refusal (``MessageSizeTooLarge``, authorization) raises."""
    delay = 0.5
    attempt = 0
    while True:
        try:
            fut = await topic.send(key=key, value=value, headers=headers)
            await fut
            return
        except (ProducerSendError, KafkaTimeoutError) as exc:
            if not transient_send_error(exc):
                raise
            attempt += 1
            log.error(
                "delivery to %s failed (attempt %d), not committing; retrying in %.1fs: %r",
                topic.get_topic_name(),
                attempt,
                delay,
                exc,
            )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_backoff)


def batch_coordinates(records: list[RawRecord]) -> str:
    """``topic[partition]@first-last`` for each partition of a batch."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        lo, hi = spans.get((r.topic, r.partition), (r.offset, r.offset))
        spans[(r.topic, r.partition)] = (min(lo, r.offset), max(hi, r.offset))
    return ", ".join(f"{t}[{p}]@{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items()))


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings
    source = raw_topic(app, ctx.topics.inference_logs)
    dlq = raw_topic(app, ctx.topics.dlq)
    judge_requests = raw_topic(app, ctx.topics.judge_requests)
    processor = IngestProcessor(
        ctx.store,
        consumer_group=settings.consumer_group,
        worker_id=settings.worker_id,
        redactor=Redactor.from_settings(settings.redaction),
        max_event_bytes=settings.max_event_bytes,
        embed_sample_rate=settings.ingest.embed_sample_rate,
        embed_batch_size=settings.ingest.embed_batch_size,
        now=ctx.now,
        max_event_age=timedelta(days=settings.ingest.max_event_age_days),
        topic_epoch=TopicEpochs(settings.kafka),
        # Looked up when a baseline first needs its embedder, so a caller may put another
        # factory (name -> Embedder) in ctx.extras["embedder_factory"] before the app starts.
        embedder_factory=lambda name: ctx.extras.get("embedder_factory", load_embedder)(name),
    )
    ctx.extras["ingest_processor"] = processor

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
        sampler = ctx.extras.get("judge_sampler")
        if sampler is not None:
            # select reads today's judge usage from the store: never on the event loop.
            for event in await asyncio.to_thread(sampler.select, result.accepted):
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

    rebalance_seen: list[float] = []  # when the current rebalance was first seen

    def fenced() -> str | None:
        """Why this worker must give its in-flight batch up (a rebalance waits for it)."""
        if not app.rebalancing:
            rebalance_seen.clear()
            return None
        if not rebalance_seen:
            rebalance_seen.append(time.monotonic())
        waited = time.monotonic() - rebalance_seen[0]
        if waited <= settings.rebalance_fence_s:
            return None
        return (
            f"a rebalance has waited {waited:.0f} s for it (SENTRYML_REBALANCE_FENCE_S); "
            "giving it up unflushed so that the partitions' next owner counts it once"
        )

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
            except Fenced as exc:
                log.error("fenced: the batch %s: %s", batch_coordinates(records), exc)
                ctx.metrics.inc("sentryml_fenced_total")
                ctx.fail(exc)
                await asyncio.Event().wait()  # take nothing more; the stop cancels this
            except Exception as exc:
                # Neither bad input (that went to the DLQ) nor transient (that was retried):
                # carrying on would let later acks commit past this batch. Stop instead, so
                # that Kafka redelivers it to the next owner.
                log.critical(
                    "unexpected error in the batch %s, not acked; stopping the worker so "
                    "that Kafka redelivers it: %s",
                    batch_coordinates(records),
                    processor.redactor.redact(traceback.format_exc()),
                )
                ctx.metrics.inc("sentryml_fatal_errors_total")
                ctx.fail(exc)
                await asyncio.Event().wait()  # take nothing more; the stop cancels this
