"""The judge agent: sampled inference logs in, ``judge_scores`` rows and DLQ entries out.

The :class:`workers.judge.JudgeSampler` is ``ctx.judge.sampler`` (built by
``streams.app.create_app``) — the ingest agent calls its ``select`` per batch and sends
the chosen (redacted) logs to the judge-requests topic. ``register`` adds the agent and two
timers: delivery of budget alerts raised by the sampler, and (leader only) the 7-day rolling
judge-drop check.

The agent is thin: it takes a batch without acking (``noack_take``), has
:func:`workers.judge.judge_batch` score it with bounded concurrency, sends failures to the
DLQ (waiting for delivery), stores the scores in one insert with a deterministic dedup
token (retrying while the store is down), and only then acks the batch. A crash before
the ack replays the batch; the dedup token and the table's ``ReplacingMergeTree`` key
(model, adapter, dimension, request_id) keep the replay from double-counting.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import faust

from schemas.events import Alert
from streams.agents._plumbing import raw_record, retry_forever
from streams.app import WorkerContext, raw_topic
from workers.alerts import AlertSink
from workers.dlq import RawRecord, dlq_headers
from workers.judge import (
    JudgedBatch,
    JudgeSampler,
    JudgeSettings,
    judge_batch,
    judge_drop_alerts,
    rolling_judge_means,
)
from workers.store import Store
from workers.store.exceptions import StoreError

log = logging.getLogger(__name__)


async def store_scores(store: Store, batch: JudgedBatch, *, max_backoff: float = 30.0) -> None:
    """Insert the batch's score rows, retrying with backoff while the store is unavailable.

    The stream back-pressures instead of losing scores; the dedup token makes a retry
    that did reach the store a no-op.
    """
    if not batch.rows:
        return
    await retry_forever(
        lambda: store.insert("judge_scores", batch.rows, dedup_token=batch.dedup_token),
        what=f"storing {len(batch.rows)} judge scores",
        max_backoff=max_backoff,
        transient=(StoreError,),
    )


async def check_judge_drops(
    settings: JudgeSettings, store: Store, sink: AlertSink, now: datetime
) -> list[Alert]:
    """One rolling-mean evaluation: read both windows, decide, emit (with renotify)."""
    loop = asyncio.get_running_loop()
    window = timedelta(seconds=settings.rolling_window_s)
    means = await loop.run_in_executor(None, rolling_judge_means, store, now, window)
    alerts = judge_drop_alerts(
        means,
        drop_delta=settings.drop_delta,
        refusal_rate_delta=settings.refusal_rate_delta,
        min_samples=settings.drop_min_samples,
        baseline_means=settings.baseline_means,
        now=now,
        window=window,
    )
    return await sink.emit(alerts)


def budget_decisions(sampler: JudgeSampler, records: Sequence[RawRecord]) -> dict[str, bool]:
    """Whether each model's judge budget is open, for the models a batch names (it may
    read the store: run it in a thread). Undecodable records are left to ``judge_batch``."""
    models: set[str] = set()
    for record in records:
        try:
            model = json.loads(record.value).get("base_model")
        except (ValueError, AttributeError, RecursionError):
            continue
        if isinstance(model, str):
            models.add(model)
    return {model: sampler.budget_open(model) for model in sorted(models)}


def _decided(decisions: dict[str, bool], model: str) -> bool:
    return decisions.get(model, True)


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings.judge
    parts = ctx.judge
    if parts is None:
        log.info("judge disabled (SENTRYML_JUDGE_ENABLED=false): no sampling, no judge agent")
        return
    sampler, client = parts.sampler, parts.client
    requests = raw_topic(app, ctx.topics.judge_requests)
    dlq = raw_topic(app, ctx.topics.dlq)
    metrics = ctx.metrics

    @app.agent(requests, name="judge")
    async def judge(stream: faust.StreamT) -> None:
        # noack_take exists on faust.Stream, not on the StreamT interface mypy sees.
        batches = stream.noack_take(settings.batch_size, within=settings.batch_seconds)  # type: ignore[attr-defined]
        async for events in batches:
            records = [raw_record(e) for e in events]
            # The budget check may read today's usage from the store: never on the loop.
            budget = await asyncio.to_thread(budget_decisions, sampler, records)
            batch = await judge_batch(
                client,
                records,
                budget_open=functools.partial(_decided, budget),
                max_event_bytes=ctx.settings.max_event_bytes,
            )
            pending = []
            for failed in batch.failed:
                pending.append(
                    await dlq.send(
                        key=failed.record.key,
                        value=failed.value,
                        headers=dlq_headers(failed),
                    )
                )
            await store_scores(ctx.store, batch)
            if parts.evaluations is not None:  # after the store: telemetry, never the record
                metrics.inc(
                    "sentryml_judge_otel_events_total", parts.evaluations.emit(batch.rows, records)
                )
            for fut in pending:
                await fut  # delivered to the DLQ before the source offsets are acked
            for event in events:
                await stream.ack(event)
            metrics.inc("sentryml_judge_requests_total", len(records))
            metrics.inc("sentryml_judge_scored_total", batch.scored)
            metrics.inc("sentryml_judge_dlq_total", len(batch.failed))
            metrics.inc("sentryml_judge_skipped_budget_total", batch.skipped_budget)
            metrics.inc("sentryml_judge_failed_scores_total", sum(not r["ok"] for r in batch.rows))
            metrics.inc(
                "sentryml_judge_tokens_total",
                sum(r["prompt_tokens"] + r["completion_tokens"] for r in batch.rows),
            )
            metrics.inc("sentryml_judge_cost_usd_total", sum(r["cost_usd"] for r in batch.rows))
            metrics.set("sentryml_judge_max_in_flight", client.max_in_flight)

    @app.timer(1.0, name="judge-budget-alerts")
    async def deliver_budget_alerts() -> None:
        alerts = sampler.pop_alerts()
        if not alerts:
            return
        try:
            delivered = await parts.budget_alerts.emit(alerts)
        except Exception as exc:  # the store or the alerts topic: keep them for the next tick
            sampler.defer_alerts(alerts)
            log.error("cannot deliver judge budget alerts yet, will retry: %r", exc)
        else:
            log.debug("judge budget alerts delivered: %d", len(delivered))

    @app.timer(settings.alert_interval_s, on_leader=True, name="judge-drop-check")
    async def judge_drop_check() -> None:
        try:
            await check_judge_drops(settings, ctx.store, parts.drop_alerts, ctx.now())
        except Exception as exc:  # re-evaluated next round, an undelivered alert with it
            log.error("judge drop check failed this round, retried next round: %r", exc)
