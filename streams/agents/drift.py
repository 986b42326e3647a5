"""The drift evaluator: a leader-only timer over rolling windows, alerting through
``ctx.alerts.drift``."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import faust

from schemas.events import Alert
from streams.app import WorkerContext
from workers.drift import evaluate_drift, plan_incidents
from workers.drift import save as save_incidents
from workers.store.exceptions import StoreError

log = logging.getLogger(__name__)


async def evaluate_once(ctx: WorkerContext) -> list[Alert]:
    """One evaluation round: drift_stats rows written, alerts emitted; returns the alerts sent.

    Rounds never overlap (a lock): each reads the incident state the previous one saved,
    so a slow round and the next timer tick cannot both open the same incident.
    """
    async with ctx.drift_lock:
        return await _evaluate_once(ctx)


async def _evaluate_once(ctx: WorkerContext) -> list[Alert]:
    settings = ctx.settings.drift
    now = ctx.now()
    loop = asyncio.get_running_loop()
    stats, alerts = await loop.run_in_executor(
        None,
        lambda: evaluate_drift(
            ctx.store,
            now,
            settings.thresholds_for,
            windows=settings.windows,
            alert_windows=settings.alert_windows,
        ),
    )
    if stats:
        rows = [s.to_row() for s in stats]
        await loop.run_in_executor(None, lambda: ctx.store.insert("drift_stats", rows))
    ctx.metrics.inc("sentryml_drift_evaluations_total")
    # One notification per incident (open / escalated / renotify / resolved): the incident
    # state decides, so the drift sink itself suppresses nothing.
    changed, notices = await loop.run_in_executor(
        None,
        lambda: plan_incidents(
            ctx.store,
            stats,
            alerts,
            now,
            renotify=timedelta(seconds=settings.renotify_s),
            resolve_after=settings.resolve_after,
            alert_windows=settings.alert_windows,
        ),
    )
    sent = await ctx.alerts.drift.emit(notices)
    await loop.run_in_executor(None, lambda: save_incidents(ctx.store, changed))
    return sent


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings.drift

    @app.timer(settings.interval_s, on_leader=True, name="drift-evaluator")
    async def drift_evaluator() -> None:
        try:
            await evaluate_once(ctx)
        except StoreError as exc:
            log.error("drift evaluation skipped this round, store unavailable: %s", exc)
        except Exception as exc:  # e.g. the alerts topic: re-evaluated (and re-sent) next round
            log.error("drift evaluation failed this round, retried next round: %r", exc)
