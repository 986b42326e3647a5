"""The feedback agent: labels, corrections and preference pairs from apps into ``feedback``.

Same contract as ingest: invalid events go to the DLQ with the reason, valid ones are
redacted and stored in one batched insert with a deterministic dedup token, and offsets
are acked only after the insert.
"""

from __future__ import annotations

import hashlib
from typing import Any

import faust

from schemas.events import Feedback, decode_event
from schemas.exceptions import InvalidEvent
from streams.agents._plumbing import deliver, raw_record, retry_forever
from streams.app import WorkerContext, raw_topic
from workers.dlq import RawRecord, Rejected, dlq_headers, redact_rejected
from workers.redact import Redactor


def feedback_row(event: Feedback, redactor: Redactor) -> dict[str, Any]:
    """The ``feedback`` row for one event, PII redacted."""

    def clean(text: str | None) -> str | None:
        return None if text is None else redactor.redact(text)

    return {
        "ts": event.ts,
        "request_id": event.request_id,
        "base_model": event.base_model,
        "adapter_version": event.adapter_version,
        "label": event.label,
        "correction": clean(event.correction),
        "chosen": clean(event.preference.chosen) if event.preference else None,
        "rejected": clean(event.preference.rejected) if event.preference else None,
        "prompt": clean(event.prompt),
        "reviewer": event.reviewer,
    }


def split_feedback(
    records: list[RawRecord], redactor: Redactor, max_bytes: int
) -> tuple[list[dict[str, Any]], list[Rejected]]:
    rows, rejected = [], []
    for record in records:
        try:
            event = decode_event(record.value, Feedback, max_bytes=max_bytes)
            rows.append(feedback_row(event, redactor))
        except InvalidEvent as exc:
            # The DLQ gets the same redaction as the table (workers.dlq.redact_rejected).
            rejected.append(redact_rejected(Rejected(record, exc.reason, str(exc)), redactor))
    return rows, rejected


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings
    source = raw_topic(app, ctx.topics.feedback)
    dlq = raw_topic(app, ctx.topics.dlq)
    redactor = Redactor.from_settings(settings.redaction)

    def store_rows(rows: list[dict[str, Any]], token: str) -> None:
        ctx.store.insert("feedback", rows, dedup_token=token)

    @app.agent(source, name="feedback")
    async def feedback(stream: Any) -> None:  # faust.StreamT lacks noack_take in its stubs
        async for events in stream.noack_take(settings.ingest.batch_max, within=1.0):
            records = [raw_record(e) for e in events]
            rows, rejected = split_feedback(records, redactor, settings.max_event_bytes)
            for item in rejected:
                await deliver(dlq, item.record.key, item.value, dlq_headers(item))
                ctx.metrics.inc("sentryml_dlq_events_total")
            if rows:
                span = ",".join(f"{r.partition}:{r.offset}" for r in records)
                token = "feedback-" + hashlib.sha256(span.encode()).hexdigest()[:32]
                await retry_forever(store_rows, rows, token, what="feedback insert")
            for event in events:
                await stream.ack(event)
            ctx.metrics.inc("sentryml_feedback_events_total", len(rows))
