"""Golden-set triggers: a daily schedule, and every promoted or deployed adapter.

Off unless a golden file is configured (``SENTRYML_GOLDEN_FILE``); then the worker

- checks the cron schedule (``SENTRYML_GOLDEN_CRON``, UTC) every ``tick_s`` on the leader
  only, through :func:`workers.golden.due_run` and the injected clock, so one worker runs
  each slot once; the last daily run is read back from ``golden_runs`` on start, so a
  restart neither repeats nor (for a missed slot) skips the day's run;
- consumes the adapter-events topic and runs the set whenever an :class:`AdapterEvent`
  with status ``promoted`` or ``deployed`` arrives for the configured base model.

Runs are serialized (one at a time per worker). A pass rate under threshold pages through
``ctx.alerts.golden`` (store row, alerts topic, optional webhook).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import faust

from schemas.events import AdapterEvent, GoldenTrigger, decode_event
from schemas.exceptions import InvalidEvent, SentryMLError
from streams.app import WorkerContext, raw_topic
from workers.adapters import live_adapter_version
from workers.golden import (
    AlertEmitter,
    Generate,
    GoldenRunResult,
    GoldenSettings,
    JudgeFn,
    OpenAIChat,
    due_run,
    judge_from_client,
    load_golden_set,
    needs_judge,
    run_golden,
    validate_cron,
)
from workers.judge import JudgeSettings
from workers.store import Store

log = logging.getLogger(__name__)


class GoldenService:
    """What the golden agent and timer call: load the set once, run it on a trigger.

    ``generate`` defaults to an :class:`~workers.golden.OpenAIChat` on the configured
    endpoint; ``now`` is the worker's injected clock.
    """

    def __init__(
        self,
        settings: GoldenSettings,
        *,
        store: Store,
        now: Callable[[], datetime],
        alerts: AlertEmitter | None = None,
        generate: Generate | None = None,
        judge: JudgeFn | None = None,
        judge_settings: JudgeSettings | None = None,
    ) -> None:
        if settings.file is None:
            raise ValueError("GoldenService needs settings.file (SENTRYML_GOLDEN_FILE)")
        validate_cron(settings.cron)
        self.settings = settings
        self.store = store
        self.now = now
        self.alerts = alerts
        self.judge = judge
        self.judge_settings = judge_settings
        self.golden = load_golden_set(settings.file)
        self.base_model = settings.base_model or settings.model
        self.generate = generate or OpenAIChat(
            settings.base_url,
            settings.model,
            api_key=settings.api_key.get_secret_value(),
            timeout_s=settings.timeout_s,
            max_tokens=settings.max_tokens,
        )
        self.started_at: datetime = self.now()
        self._last_daily: datetime | None = None
        self._lock = asyncio.Lock()
        self.last_result: GoldenRunResult | None = None

    def _judge(self) -> JudgeFn | None:
        # Built on first use, inside the worker's event loop (the client belongs to one loop).
        if self.judge is None and self.judge_settings is not None and needs_judge(self.golden):
            from workers.judge import JudgeClient

            self.judge = judge_from_client(JudgeClient(self.judge_settings, now=self.now))
        return self.judge

    async def run(self, *, adapter_version: str, trigger: GoldenTrigger) -> GoldenRunResult:
        async with self._lock:
            result = await run_golden(
                self.golden,
                self.generate,
                base_model=self.base_model,
                adapter_version=adapter_version,
                threshold=self.settings.threshold,
                trigger=trigger,
                concurrency=self.settings.concurrency,
                judge=self._judge(),
                store=self.store,
                alerts=self.alerts,
                now=self.now,
            )
        self.last_result = result
        return result

    async def on_adapter_event(self, event: AdapterEvent) -> GoldenRunResult | None:
        """Run the set for a promoted/deployed adapter of our base model; ignore the rest."""
        if event.status not in self.settings.run_on or event.base_model != self.base_model:
            return None
        log.info(
            "adapter %s/%s %s: running golden set %r",
            event.base_model,
            event.adapter_version,
            event.status,
            self.golden.name,
        )
        return await self.run(adapter_version=event.adapter_version, trigger="deploy")

    def _last_daily_run(self) -> datetime | None:
        value = self.store.query(
            "SELECT max(ts) FROM golden_runs WHERE base_model = {m:String} "
            "AND golden_set = {g:String} AND trigger = 'daily' HAVING count() > 0",
            {"m": self.base_model, "g": self.golden.name},
        ).scalar()
        return value if isinstance(value, datetime) else None

    def current_adapter(self) -> str:
        """The live adapter: the newest promoted/deployed one in the registry, else config."""
        return live_adapter_version(self.store, self.base_model) or self.settings.adapter_version

    async def tick(self) -> GoldenRunResult | None:
        """Run the daily set if a scheduled slot passed since the last daily run."""
        now = self.now()
        if self._last_daily is None:
            stored = await asyncio.to_thread(self._last_daily_run)
            # Never run on a first start: the schedule begins when the worker does.
            self._last_daily = stored or self.started_at
        slot = due_run(self._last_daily, now, self.settings.cron)
        if slot is None:
            return None
        # Marked before running: a failing run is not retried every tick until tomorrow.
        self._last_daily = slot
        adapter = await asyncio.to_thread(self.current_adapter)
        log.info("daily golden run for slot %s on %s/%s", slot, self.base_model, adapter)
        return await self.run(adapter_version=adapter, trigger="daily")


def register(app: faust.App, ctx: WorkerContext) -> None:
    settings = ctx.settings.golden
    if not settings.enabled or settings.file is None:
        log.info(
            "golden runs off: %s",
            "SENTRYML_GOLDEN_ENABLED=false"
            if not settings.enabled
            else "no golden file configured (set SENTRYML_GOLDEN_FILE)",
        )
        return
    service = GoldenService(
        settings,
        store=ctx.store,
        now=ctx.now,
        alerts=ctx.alerts.golden,
        judge_settings=ctx.settings.judge,
    )
    adapter_events = raw_topic(app, ctx.topics.adapter_events)

    async def guarded(what: str, coro: Awaitable[GoldenRunResult | None]) -> None:
        try:
            result = await coro
        except SentryMLError as exc:  # model down, store down: log, count, keep consuming
            ctx.metrics.inc("sentryml_golden_errors_total")
            log.error("golden run (%s) failed: %s", what, exc)
            return
        if result is not None:
            ctx.metrics.inc("sentryml_golden_runs_total")
            ctx.metrics.set("sentryml_golden_pass_rate", result.run.pass_rate)

    @app.agent(adapter_events, name="golden-deploy")
    async def golden_on_deploy(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            where = f"{message.topic}[{message.partition}]@{message.offset}"
            try:
                adapter = decode_event(event.value or b"", AdapterEvent)
            except InvalidEvent as exc:
                ctx.metrics.inc("sentryml_golden_invalid_events_total")
                log.warning("golden: skipping invalid adapter event at %s: %s", where, exc)
                continue
            await guarded(f"{adapter.status} {adapter.adapter_version} at {where}",
                          service.on_adapter_event(adapter))  # fmt: skip

    @app.timer(settings.tick_s, on_leader=True, name="golden-daily")
    async def golden_daily() -> None:
        ctx.metrics.inc("sentryml_golden_schedule_checks_total")
        await guarded("daily", service.tick())
