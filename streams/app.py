"""The Faust application, built by a factory (never a module global).

``create_app`` wires settings, the store, the topics and an injected clock into a
:class:`WorkerContext`, builds once what the agents share (the ingest processor, the judge
sampler and client, the alert sinks, the drift lock, the retrain-request sender) as typed
attributes of it, then lets each agent module in :data:`AGENT_MODULES` register its agents
and timers on the app. Agents only read the context, so the order they register in does not
matter. They stay thin: they iterate, call the pure functions in ``workers/``, and send
results.

>>> app, ctx = create_app(WorkerSettings())          # doctest: +SKIP
>>> run_worker(app, ctx)                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import faust

from schemas.events import InferenceLog, utcnow
from schemas.topics import Topics
from streams.config import WorkerSettings
from streams.topics import TopicEpochs
from workers.alerts import AlertSink, post_webhook
from workers.dlq import RawRecord, Rejected
from workers.embedding import Embedder, load_embedder
from workers.ingest import IngestProcessor, RecordDecoder
from workers.judge import EvaluationEmitter, JudgeClient, JudgeSampler, JudgeSettings
from workers.otlp import OtlpSettings
from workers.redact import Redactor
from workers.store import Store, open_store

log = logging.getLogger(__name__)

#: Agent modules, each with ``register(app: faust.App, ctx: WorkerContext) -> None``.
AGENT_MODULES: tuple[str, ...] = (
    "streams.agents.ingest",
    "streams.agents.drift",
    "streams.agents.feedback",
    "streams.agents.judge",
    "streams.agents.golden",
    "streams.agents.retrain_gate",
)


def prometheus_float(value: float) -> str:
    """A sample value at full precision (``:g`` would print 1.79592e+09 for a timestamp).

    >>> prometheus_float(1795920914.5278864), prometheus_float(3), prometheus_float(float("inf"))
    ('1795920914.5278864', '3', '+Inf')
    """
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


@dataclass
class WorkerMetrics:
    """Counters the worker exposes (log lines, and Prometheus text where enabled)."""

    counters: dict[str, float] = field(default_factory=dict)

    def inc(self, name: str, value: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + value

    def set(self, name: str, value: float) -> None:
        self.counters[name] = value

    def render(self) -> str:
        """Prometheus text exposition format (counters and gauges, one sample each)."""
        lines = []
        for name, value in sorted(self.counters.items()):
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# TYPE {name} {kind}", f"{name} {prometheus_float(value)}"]
        return "\n".join(lines) + "\n"


@dataclass
class IngestHealth:
    """Whether the ingest agent is making progress, for ``/health`` and the lag gauge.

    The agent reports each batch's start and end and each failed or successful store
    attempt; :meth:`problems` says what is wrong for longer than allowed.
    """

    clock: Callable[[], float] = time.monotonic
    batch_since: float | None = None
    failing_since: float | None = None
    last_error: str = ""
    #: The first offset fetched per partition: the lag's floor while nothing is committed.
    first_fetched: dict[Any, int] = field(default_factory=dict)

    def batch_started(self) -> None:
        self.batch_since = self.clock()

    def batch_finished(self) -> None:
        self.batch_since = None

    def failed(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.last_error = error

    def succeeded(self) -> None:
        self.failing_since = None
        self.last_error = ""

    def problems(self, *, max_failing_s: float, max_batch_s: float) -> list[str]:
        """Why the worker is unhealthy (empty: it is healthy).

        >>> h = IngestHealth(clock=lambda: 100.0); h.failed("refused"); h.clock = lambda: 200.0
        >>> h.problems(max_failing_s=60, max_batch_s=120)
        ['store writes failing for 100 s: refused']
        """
        now = self.clock()
        out = []
        if self.failing_since is not None and now - self.failing_since > max_failing_s:
            out.append(
                f"store writes failing for {now - self.failing_since:.0f} s: {self.last_error}"
            )
        if self.batch_since is not None and now - self.batch_since > max_batch_s:
            out.append(
                f"a batch in flight for {now - self.batch_since:.0f} s, not flushed or committed"
            )
        return out


#: Exit status of a worker ended by an unexpected error (EX_SOFTWARE) and of one that did
#: not stop within ``shutdown_timeout_s`` (EX_TEMPFAIL). Either way nothing past what was
#: flushed is committed, and Kafka redelivers the rest to the next owner.
EXIT_FATAL = 70
EXIT_STOP_TIMEOUT = 75


class Keyed(Protocol):
    """An event sent keyed by its model (:class:`Alert`, :class:`RetrainRequest`)."""

    @property
    def base_model(self) -> str: ...

    def to_bytes(self) -> bytes: ...


Publish = Callable[[Keyed], Awaitable[None]]


def raw_topic(app: faust.App, name: str, *more: str) -> faust.TopicT:
    """A topic (or several) of raw bytes: agents validate with ``decode_event`` themselves,
    so a bad message reaches our DLQ logic instead of failing inside Faust's deserializer."""
    return app.topic(
        name, *more, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw",
    )  # fmt: skip


def publisher(app: faust.App, topic: str) -> Publish:
    """Send an event to ``topic`` (keyed by model) and wait until it is delivered."""
    target = raw_topic(app, topic)

    async def publish(event: Keyed) -> None:
        fut = await target.send(key=event.base_model.encode(), value=event.to_bytes())
        await fut

    return publish


@dataclass(frozen=True)
class AlertSinks:
    """The worker's alert sinks (store row, alerts topic, optional webhook), built once."""

    #: The drift evaluator's: the incident state decides what to send, so it suppresses
    #: nothing (renotify 0).
    drift: AlertSink
    #: Golden runs': renotifies after ``SENTRYML_DRIFT_RENOTIFY_S``; with
    #: ``SENTRYML_GOLDEN_WEBHOOK_URL`` it also posts there and renotifies after 1 h.
    golden: AlertSink


@dataclass(frozen=True)
class JudgeParts:
    """The judge's pieces: the ingest agent samples with ``sampler`` (sending the chosen
    logs to the judge-requests topic), the judge agent scores with ``client``, and its
    timers page through ``budget_alerts`` (once per model per UTC day) and ``drop_alerts``."""

    sampler: JudgeSampler
    client: JudgeClient
    budget_alerts: AlertSink
    drop_alerts: AlertSink
    #: scores as OpenTelemetry events, when SENTRYML_JUDGE_OTLP_ENDPOINT is set
    evaluations: EvaluationEmitter | None = None


@dataclass
class WorkerContext:
    """Everything an agent needs, injected: config, store, topic names, clock, metrics, and
    what the agents share, built once by :func:`create_app` (agents only read it)."""

    settings: WorkerSettings
    store: Store
    topics: Topics
    #: What the ingest agent hands each batch to.
    ingest: IngestProcessor
    alerts: AlertSinks
    #: Sends a retrain request to its topic and waits for delivery.
    retrain_send: Publish
    #: None when the judge is off (``SENTRYML_JUDGE_ENABLED=false``): nothing is sampled.
    judge: JudgeParts | None = None
    now: Callable[[], datetime] = utcnow
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    health: IngestHealth = field(default_factory=IngestHealth)
    #: Drift evaluation rounds never overlap (:func:`streams.agents.drift.evaluate_once`).
    drift_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The error that ended the worker (``fail``), if one did.
    fatal: BaseException | None = None
    #: Stops the worker; ``create_app`` stops the app, ``run_worker`` the whole process.
    stop: Callable[[], None] = lambda: None

    def fail(self, exc: BaseException) -> None:
        """End the worker because of ``exc``, without acking what it was processing.

        For an error that is neither bad input (DLQ) nor transient (retried): the process
        exits with :data:`EXIT_FATAL`, so that Kafka redelivers the uncommitted batch to
        the next owner instead of the offsets moving past it.
        """
        if self.fatal is None:
            self.fatal = exc
        self.stop()


def _alert_sinks(
    settings: WorkerSettings, store: Store, publish: Publish, now: Callable[[], datetime]
) -> AlertSinks:
    drift = AlertSink(store, publish, renotify=timedelta(0), now=now)
    hook = settings.golden.webhook_url
    if not hook:
        renotify = timedelta(seconds=settings.drift.renotify_s)
        return AlertSinks(drift=drift, golden=AlertSink(store, publish, renotify=renotify, now=now))
    # Posted to the webhook too, before the run is reported done.
    webhook = functools.partial(post_webhook, hook.get_secret_value())
    golden = AlertSink(store, publish, renotify=timedelta(hours=1), now=now, webhook=webhook)
    return AlertSinks(drift=drift, golden=golden)


def _judge_parts(
    settings: JudgeSettings, store: Store, publish: Publish, now: Callable[[], datetime]
) -> JudgeParts | None:
    if not settings.enabled:
        return None
    return JudgeParts(
        sampler=JudgeSampler(settings, store=store, now=now),
        client=JudgeClient(settings, now=now),
        # A budget alert's window is its UTC day, so one per model per day across workers.
        budget_alerts=AlertSink(store, publish, renotify=timedelta(days=1), now=now),
        drop_alerts=AlertSink(
            store, publish, renotify=timedelta(seconds=settings.renotify_s), now=now
        ),
        evaluations=EvaluationEmitter(
            settings.otlp_endpoint,
            headers={k: v.get_secret_value() for k, v in settings.otlp_headers.items()},
        )
        if settings.otlp_endpoint
        else None,
    )


def _ingest_processor(
    settings: WorkerSettings,
    store: Store,
    now: Callable[[], datetime],
    embedder_factory: Callable[[str], Embedder],
) -> IngestProcessor:
    # Its AdminClient connects on the first batch: an app without the ingest agent never does.
    epochs = functools.cache(lambda: TopicEpochs(settings.kafka))
    return IngestProcessor(
        store,
        consumer_group=settings.consumer_group,
        worker_id=settings.worker_id,
        redactor=Redactor.from_settings(settings.redaction),
        max_event_bytes=settings.max_event_bytes,
        embed_sample_rate=settings.ingest.embed_sample_rate,
        embed_batch_size=settings.ingest.embed_batch_size,
        now=now,
        max_event_age=timedelta(days=settings.ingest.max_event_age_days),
        topic_epoch=lambda topic: epochs()(topic),
        # Called when a baseline first needs its embedder (name -> Embedder).
        embedder_factory=embedder_factory,
        decoders=otlp_decoders(settings.otlp),
    )


def otlp_decoders(settings: OtlpSettings) -> dict[str, RecordDecoder]:
    """The Collector's OTLP topics and their decoder, when OTLP ingest is on: one span
    index for both, so a span and its own event (two topics) are one inference."""
    if not settings.enabled:
        return {}
    from workers.otlp import SpanIndex, decode_otlp

    index = SpanIndex(settings.join_spans)

    def decode(record: RawRecord) -> tuple[list[InferenceLog], list[Rejected]]:
        batch = decode_otlp(record, settings, index=index)
        return batch.logs, batch.rejected

    return dict.fromkeys({settings.traces_topic, settings.logs_topic}, decode)


def _faust_broker_options(settings: WorkerSettings) -> dict[str, Any]:
    kafka = settings.kafka
    options: dict[str, Any] = {"broker": f"kafka://{kafka.bootstrap.replace(',', ';kafka://')}"}
    if kafka.security_protocol.startswith("SASL"):
        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else "",
            mechanism=kafka.sasl_mechanism,
        )
    return options


def create_app(
    settings: WorkerSettings | None = None,
    *,
    store: Store | None = None,
    now: Callable[[], datetime] = utcnow,
    agent_modules: Sequence[str] = AGENT_MODULES,
    embedder_factory: Callable[[str], Embedder] = load_embedder,
) -> tuple[faust.App, WorkerContext]:
    """Build a Faust app and its context; nothing connects until the app starts.

    ``embedder_factory`` (a baseline's embedder name -> :class:`Embedder`) replaces
    :func:`workers.embedding.load_embedder`, e.g. with a test's embedder."""
    settings = settings or WorkerSettings()
    store = store or open_store(settings.store)
    topics = Topics(settings.kafka.topic_prefix)
    app = faust.App(
        settings.consumer_group,
        **_faust_broker_options(settings),
        store="memory://",
        web_enabled=settings.metrics_port is not None,
        web_port=settings.metrics_port or 6066,
        web_bind=settings.metrics_host,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A DLQ record carries the original bytes: allow what the source topic accepted.
        producer_max_request_size=32 * 1024 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        stream_wait_empty=True,
        logging_config=None,
    )
    publish_alert = publisher(app, topics.alerts)
    ctx = WorkerContext(
        settings=settings,
        store=store,
        topics=topics,
        now=now,
        ingest=_ingest_processor(settings, store, now, embedder_factory),
        alerts=_alert_sinks(settings, store, publish_alert, now),
        judge=_judge_parts(settings.judge, store, publish_alert, now),
        retrain_send=publisher(app, topics.retrain_requests),
    )
    ctx.stop = lambda: _stop_app(app)
    for name in agent_modules:
        importlib.import_module(name).register(app, ctx)
    _register_pages(app, ctx)
    return app, ctx


def _register_pages(app: faust.App, ctx: WorkerContext) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        await _update_lag(app, ctx)
        return web.text(ctx.metrics.render(), content_type="text/plain")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        limits = ctx.settings.health
        problems = ctx.health.problems(
            max_failing_s=limits.max_failing_s, max_batch_s=limits.max_batch_s
        )
        body = {"status": "failing" if problems else "ok", "worker_id": ctx.settings.worker_id}
        if problems:
            return web.json({**body, "reasons": problems}, status=503)
        return web.json(body)


async def _update_lag(app: faust.App, ctx: WorkerContext) -> None:
    """Consumer lag over the assigned partitions, as a gauge: every record below the log
    end that is not committed, fetched ones included (so a stuck batch shows)."""
    consumer = app.consumer
    tps = sorted(consumer.assignment())
    if not tps:
        ctx.metrics.set("sentryml_consumer_lag", 0)
        return
    try:
        ends, starts = await asyncio.wait_for(
            asyncio.gather(consumer.highwaters(*tps), consumer.earliest_offsets(*tps)),
            timeout=1.0,
        )
    except Exception as exc:  # the broker away: the fetcher's last view, no floor
        log.debug("lag from the fetcher's highwaters only: %r", exc)
        ends = {tp: consumer.highwater(tp) for tp in tps}
        starts = {}
    total = 0
    for tp in tps:
        # Faust keeps the last committed offset (the next to read is one more); no public
        # accessor. Before the first commit: the first offset fetched, else the log start.
        committed = getattr(consumer, "_committed_offset", {}).get(tp)
        if committed is not None:
            next_to_read = committed + 1
        else:
            next_to_read = ctx.health.first_fetched.get(tp, starts.get(tp))
        end = ends.get(tp)
        if end is not None and next_to_read is not None:
            total += max(0, end - next_to_read)
    ctx.metrics.set("sentryml_consumer_lag", total)


_stopping: set[asyncio.Future[Any]] = set()  # referenced until done (asyncio keeps weak refs)


def _stop_app(app: faust.App) -> None:
    task = asyncio.ensure_future(app.stop())
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)


class BoundedStopWorker(faust.Worker):
    """A Faust worker whose stop (SIGTERM, SIGINT, :meth:`WorkerContext.fail`) ends the
    process within ``shutdown_timeout_s``.

    Faust waits for every fetched event to be acked before it stops, and a batch whose
    flush keeps failing is never acked. Past the deadline the process exits with
    :data:`EXIT_STOP_TIMEOUT` (:data:`EXIT_FATAL` after ``fail``): the consumer has
    committed only what was flushed (offsets are acked after the flush), so nothing is
    lost and the next owner gets the rest.
    """

    def __init__(
        self, app: faust.App, ctx: WorkerContext | None, *, shutdown_timeout_s: float, **kw: Any
    ) -> None:
        super().__init__(app, **kw)
        self.ctx = ctx
        self.shutdown_timeout_s = shutdown_timeout_s
        self._deadline: threading.Timer | None = None
        if ctx is not None:
            ctx.stop = lambda: self._schedule_shutdown(signal.SIGTERM)

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self.shutdown_timeout_s, self._exit_now)
            self._deadline.daemon = True
            self._deadline.start()
        super()._schedule_shutdown(sig)

    def _exit_now(self) -> None:
        code = EXIT_FATAL if self.ctx is not None and self.ctx.fatal else EXIT_STOP_TIMEOUT
        log.error(
            "the worker did not stop within %.0f s (SENTRYML_SHUTDOWN_TIMEOUT_S): exiting "
            "with %d; offsets are committed up to what was flushed, Kafka redelivers the rest",
            self.shutdown_timeout_s,
            code,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)


def run_worker(app: faust.App, ctx: WorkerContext | None = None, loglevel: str = "info") -> None:
    """Run the app in the foreground until SIGINT/SIGTERM (graceful: flush, then commit),
    for at most ``shutdown_timeout_s`` after the signal; exits non-zero after ``ctx.fail``."""
    timeout = ctx.settings.shutdown_timeout_s if ctx is not None else 15.0
    worker = BoundedStopWorker(app, ctx, shutdown_timeout_s=timeout, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if ctx is not None and ctx.fatal is not None:
            raise SystemExit(EXIT_FATAL) from ctx.fatal
        raise
