"""The retrain gate timer: every ``interval_s``, on the leader only, decide per model.

For each model with recent monitoring data it reads the gate's inputs from the store,
applies :func:`workers.retrain_gate.decide`, sends a :class:`RetrainRequest` to the
retrain-requests topic when all four rules pass, and records the decision (fired or held,
with every rule's verdict) in ``retrain_jobs``. A request is sent before its ``fired`` row
is written: if the row is lost the trainer's own ``started`` row still marks the job in
flight, whereas a row without a request would block the gate until ``max_job_hours``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faust

from schemas.events import RetrainRequest
from schemas.exceptions import SentryMLError
from streams.app import WorkerContext
from workers.retrain_gate import (
    FIRED,
    HELD,
    GateDecision,
    GateInputs,
    GatePolicy,
    decide,
    gather_inputs,
    make_job_id,
    models_to_check,
    record_job_event,
    request_for,
)

log = logging.getLogger(__name__)

Send = Callable[[RetrainRequest], Awaitable[None]]


@dataclass(frozen=True)
class GateOutcome:
    inputs: GateInputs
    decision: GateDecision
    request: RetrainRequest | None


async def run_gate(ctx: WorkerContext, send: Send) -> list[GateOutcome]:
    """One pass of the gate over every model; returns what was decided."""
    settings = ctx.settings.retrain
    policy = GatePolicy.from_settings(settings)
    now = ctx.now()
    models = await asyncio.to_thread(models_to_check, ctx.store, settings, now)
    outcomes = []
    for model in models:
        inputs = await asyncio.to_thread(
            gather_inputs, ctx.store, model, settings, ctx.settings.judge, now
        )
        decision = decide(inputs, policy, now)
        request = None
        job_id = ""
        if decision.fire:
            job_id = make_job_id(model, now)
            request = request_for(inputs, decision, job_id=job_id, method=settings.method, now=now)
            await send(request)
            ctx.metrics.inc("sentryml_retrain_requests_total")
            log.warning("retrain gate fired for %s/%s: job %s: %s",
                        model, inputs.adapter_version, job_id, decision.reason)  # fmt: skip
        else:
            ctx.metrics.inc("sentryml_retrain_held_total")
            log.info("retrain gate held %s/%s: %s", model, inputs.adapter_version, decision.reason)
        await asyncio.to_thread(
            record_job_event,
            ctx.store,
            base_model=model,
            adapter_version=inputs.adapter_version,
            decision=FIRED if decision.fire else HELD,
            reason=decision.reason,
            job_id=job_id,
            details={
                **decision.details(),
                "task_goal": inputs.task_goal,
                "new_examples": inputs.new_examples,
                "method": settings.method,
            },
            now=now,
        )
        outcomes.append(GateOutcome(inputs, decision, request))
    return outcomes


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings.retrain
    if not settings.enabled:
        log.info("retrain gate off (SENTRYML_RETRAIN_ENABLED=false)")
        return

    @app.timer(settings.interval_s, on_leader=True, name="retrain-gate")
    async def retrain_gate() -> None:
        try:
            await run_gate(ctx, ctx.retrain_send)
        except SentryMLError as exc:  # store down: log, count, try again next tick
            ctx.metrics.inc("sentryml_retrain_gate_errors_total")
            log.error("retrain gate check failed: %s", exc)
