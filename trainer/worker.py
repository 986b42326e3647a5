"""The trainer worker (`sentryml trainer`): one retrain job at a time, from Kafka.

:class:`TrainerWorker` consumes the retrain-requests topic with a confluent-kafka consumer
(manual commits). For each request it runs :class:`JobRunner` and commits the offset only
after the job *finished* — promoted, rejected, refused (too little data) or failed (the
failure recorded). A worker killed mid-job leaves the offset uncommitted, so the request
is consumed again on restart; the adapter version is derived from the job id and the
registry upserts by version, so the retry rewrites the same folder and the same registry
row instead of adding a second one. A job that already has an outcome in
``retrain_jobs`` (the worker died between recording it and committing) is skipped.

While a job runs, the consumer's partitions are paused and the consumer keeps polling
from the main thread, so a training run of hours does not exceed ``max.poll.interval.ms``
and the group does not rebalance the job away.

Job steps, each recorded in ``retrain_jobs`` (``started``, then the outcome):

1. build the dataset (:mod:`trainer.dataset`) — refuse below the goal's minimum;
2. train the adapter (:mod:`trainer.train`), save it, checksum it, register ``trained``;
3. evaluate candidate vs incumbent on the golden set and the held-out split in the same
   process (:mod:`trainer.evaluate`);
4. promote or reject in the registry and publish the :class:`AdapterEvent`; on promotion,
   refit the drift baseline for the new adapter from its training data.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from schemas.events import AdapterEvent, RetrainRequest, decode_event, utcnow
from schemas.exceptions import InvalidEvent, SentryMLError
from schemas.topics import Topics
from trainer.config import TrainConfig
from trainer.exceptions import DatasetTooSmall, TrainerError
from trainer.registry import AdapterRecord, Registry, adapter_version_for, weights_sha256
from trainer.settings import TrainerSettings
from workers.retrain_gate import (
    FAILED,
    JOB_TERMINAL,
    PROMOTED,
    REFUSED,
    REJECTED,
    STARTED,
    record_job_event,
)
from workers.store import Store

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def publish(self, event: AdapterEvent) -> None: ...


@dataclass
class JobOutcome:
    """How a job ended: ``promoted``, ``rejected``, ``refused``, ``failed`` or ``skipped``."""

    job_id: str
    decision: str
    reason: str
    adapter_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


class JobRunner:
    """Runs one retrain request end to end against a store (no Kafka consumer inside).

    ``events`` receives every :class:`AdapterEvent` (the Kafka publisher in production);
    ``refit_baseline`` switches the post-promotion baseline refit off (tests that do not
    want to load an embedder).
    """

    def __init__(
        self,
        store: Store,
        cfg: TrainConfig,
        *,
        adapters_dir: Path,
        events: EventSink | None = None,
        now: Callable[[], datetime] = utcnow,
        refit_baseline: bool = True,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.adapters_dir = Path(adapters_dir)
        self.events = events
        self.now = now
        self.refit_baseline = refit_baseline
        self.on_step = on_step
        self.registry = Registry(store, now=now)

    # -- helpers -------------------------------------------------------------------------
    def _record(
        self, request: RetrainRequest, decision: str, reason: str, adapter: str, **details: Any
    ) -> None:
        record_job_event(
            self.store,
            base_model=request.base_model,
            adapter_version=adapter,
            decision=decision,
            reason=reason,
            job_id=request.job_id,
            details=details,
            now=self.now(),
        )

    def _publish(self, event: AdapterEvent) -> None:
        if self.events is not None:
            self.events.publish(event)

    def finished(self, job_id: str) -> tuple[str, str] | None:
        """``(decision, reason)`` if the job already has an outcome row."""
        rows = self.store.query(
            "SELECT decision, reason FROM retrain_jobs WHERE job_id = {j:String} "
            "AND decision IN {t:Array(String)} ORDER BY ts DESC LIMIT 1",
            {"j": job_id, "t": list(JOB_TERMINAL)},
        ).rows
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _attempt(self, job_id: str) -> int:
        n = self.store.query(
            "SELECT count() FROM retrain_jobs WHERE job_id = {j:String} AND decision = {s:String}",
            {"j": job_id, "s": STARTED},
        ).scalar()
        return int(n or 0) + 1

    # -- the job -------------------------------------------------------------------------
    def run(self, request: RetrainRequest) -> JobOutcome:
        done = self.finished(request.job_id)
        version = adapter_version_for(request.job_id)
        if done is not None:
            log.info("job %s already finished (%s); nothing to do", request.job_id, done[0])
            return JobOutcome(request.job_id, "skipped", f"already {done[0]}: {done[1]}", version)
        cfg = self.cfg.replace(method=request.method)
        attempt = self._attempt(request.job_id)
        self._record(
            request,
            STARTED,
            f"attempt {attempt}: {request.method} for goal {request.task_goal}, "
            f"candidate {version} vs incumbent {request.adapter_version}",
            version,
            attempt=attempt,
            config=cfg.to_dict(),
            config_fingerprint=cfg.fingerprint(),
            forced=request.forced,
            requested_by=request.requested_by,
        )
        log.info("job %s (attempt %d): %s", request.job_id, attempt, request.reason or "-")
        try:
            return self._run(request, cfg, version)
        except DatasetTooSmall as exc:
            self._record(request, REFUSED, str(exc), version, have=exc.have, need=exc.need)
            log.warning("job %s refused: %s", request.job_id, exc)
            return JobOutcome(request.job_id, REFUSED, str(exc), version)
        except Exception as exc:  # recorded as the job's outcome, then the offset is committed
            reason = f"{type(exc).__name__}: {exc}"
            log.error("job %s failed: %s\n%s", request.job_id, reason, traceback.format_exc())
            existing = self.registry.get(request.base_model, version)
            if existing is not None:
                failed = self.registry.upsert(replace(existing, status="failed"))
                self._publish_quietly(failed.event(message=reason[:500]))
            self._record(request, FAILED, reason[:2000], version, traceback=traceback.format_exc())
            return JobOutcome(request.job_id, FAILED, reason, version)

    def _publish_quietly(self, event: AdapterEvent) -> None:
        try:
            self._publish(event)
        except SentryMLError as exc:
            log.error("could not publish %s event: %s", event.status, exc)

    def _run(self, request: RetrainRequest, cfg: TrainConfig, version: str) -> JobOutcome:
        from trainer.dataset import build_dataset
        from trainer.evaluate import LocalGenerator, compare, load_cases
        from trainer.train import base_model_path, load_tokenizer, train_adapter

        # Golden cases first: a broken golden file fails the job before hours of training.
        set_name, cases, skipped = load_cases(cfg)
        tokenizer = load_tokenizer(base_model_path(cfg))
        dataset = build_dataset(
            self.store,
            request.base_model,
            cfg,
            tokenizer,
            goal=request.task_goal,
            method=request.method,
            now=self.now(),
        )
        out_dir = self.adapters_dir / _slug(request.base_model) / version
        result = train_adapter(cfg, dataset, out_dir, method=request.method, on_step=self.on_step)
        metrics: dict[str, float] = {
            **result.metrics(),
            **{f"data_{k}": float(v) for k, v in dataset.counts.items()},
        }
        record = self.registry.upsert(
            AdapterRecord(
                version=version,
                base_model=request.base_model,
                parent_version=request.adapter_version,
                method=request.method,
                dataset_hash=dataset.dataset_hash,
                metrics=metrics,
                sha256=weights_sha256(out_dir),
                path=str(out_dir),
                status="trained",
                job_id=request.job_id,
            )
        )
        self._publish(record.event(message=f"trained on {len(dataset.train)} examples"))

        model = result.model
        incumbent, note = self._load_incumbent(model, request)
        generator = LocalGenerator(
            model,
            result.tokenizer,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.eval_batch_size,
        )
        comparison = compare(
            cfg,
            generator,
            candidate="default",
            incumbent=incumbent,
            cases=cases,
            heldout=dataset.heldout,
            train=dataset.train,
        )
        decision = comparison.decision
        metrics.update(comparison.metrics())
        self._record_golden(request, set_name, version, comparison)
        details: dict[str, Any] = {
            "golden_set": set_name,
            "skipped_judge_cases": skipped,
            "incumbent_note": note,
            "metrics": metrics,
            "dataset_hash": dataset.dataset_hash,
            "safety_regressions": list(decision.safety_regressions),
            "candidate_failed_golden": [
                r.case_id for r in comparison.candidate.golden if not r.passed
            ],
            "incumbent_failed_golden": [
                r.case_id for r in comparison.incumbent.golden if not r.passed
            ],
        }
        reason = decision.reason + (f" ({note})" if note else "")
        status = PROMOTED if decision.promote else REJECTED
        record = self.registry.upsert(replace(record, status=status, metrics=metrics))
        if decision.promote:
            details["baseline"] = self._refit_baseline(request, version, dataset)
        self._publish(record.event(message=reason[:1000]))
        self._record(request, status, reason, version, **details)
        log.warning("job %s: %s", request.job_id, reason)
        return JobOutcome(request.job_id, status, reason, version, metrics)

    def _record_golden(
        self, request: RetrainRequest, set_name: str, version: str, comparison: Any
    ) -> None:
        """Both sides' golden results as runs (trigger ``trainer``), so pass rates per adapter
        version are in ``golden_runs`` next to the live runs."""
        from workers.golden import golden_run_of, record_golden_run

        for side, adapter in (
            (comparison.candidate, version),
            (comparison.incumbent, request.adapter_version),
        ):
            if not side.golden:
                continue
            run = golden_run_of(
                side.golden,
                run_id=f"{request.job_id}-{side.label}",
                base_model=request.base_model,
                adapter_version=adapter,
                golden_set=set_name,
                trigger="trainer",
                threshold=0.0,
                ts=self.now(),
            )
            record_golden_run(self.store, run, side.golden)

    def _load_incumbent(self, model: Any, request: RetrainRequest) -> tuple[str | None, str]:
        """Load the incumbent adapter next to the candidate; ``None`` = base model alone."""
        if request.adapter_version in ("", "none"):
            return None, ""
        known = self.registry.get(request.base_model, request.adapter_version)
        if known is None or not known.path or not Path(known.path).exists():
            note = (
                f"incumbent {request.adapter_version} has no weights in the registry; "
                "compared with the base model"
            )
            log.warning("job %s: %s", request.job_id, note)
            return None, note
        model.load_adapter(known.path, adapter_name="incumbent")
        return "incumbent", ""

    def _refit_baseline(self, request: RetrainRequest, version: str, dataset: Any) -> str:
        """Fit and save the drift baseline of the promoted adapter from its training data,
        with the embedder (and k) of the incumbent's baseline so windows stay comparable."""
        if not self.refit_baseline:
            return "skipped (refit off)"
        from workers.baseline import fit_baseline, load_baseline, save_baseline
        from workers.embedding import load_embedder
        from workers.exceptions import BaselineError

        previous = load_baseline(self.store, request.base_model, request.adapter_version)
        embedder_name = previous.embedder if previous else "minilm"
        records = dataset.training_records()
        k = min(previous.k if previous else 16, int(len(records) * 0.3))
        if k < 2:
            msg = f"skipped: {len(records)} training examples are too few for a baseline"
            log.warning("job %s: baseline %s", request.job_id, msg)
            return msg
        try:
            baseline = fit_baseline(
                records,
                load_embedder(embedder_name),
                base_model=request.base_model,
                adapter_version=version,
                k=k,
                progress=False,
                source=f"trainer job {request.job_id}",
                now=self.now(),
            )
        except (BaselineError, ValueError) as exc:
            log.warning("job %s: baseline refit failed: %s", request.job_id, exc)
            return f"failed: {exc}"
        save_baseline(self.store, baseline)
        log.info("job %s: baseline %s fitted for %s", request.job_id, baseline.baseline_id, version)
        return baseline.baseline_id


class TrainerWorker:
    """Consume retrain requests forever (or ``max_jobs``), one job at a time."""

    def __init__(
        self,
        settings: TrainerSettings,
        runner: JobRunner,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.settings = settings
        self.runner = runner
        self.stop = stop or threading.Event()
        self.topic = Topics(settings.kafka.topic_prefix).retrain_requests
        conf: dict[str, Any] = {
            **settings.kafka.client_config(),
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # The consumer is polled every second even during a job (see _run_paused).
            "max.poll.interval.ms": 300_000,
        }
        if settings.instance_id:
            conf["group.instance.id"] = settings.instance_id
        self.consumer = Consumer(conf)

    def run(self, max_jobs: int | None = None) -> list[JobOutcome]:
        from confluent_kafka import KafkaError

        self.consumer.subscribe([self.topic])
        log.info("trainer consuming %s as %s", self.topic, self.settings.consumer_group)
        outcomes: list[JobOutcome] = []
        try:
            while not self.stop.is_set() and (max_jobs is None or len(outcomes) < max_jobs):
                msg = self.consumer.poll(self.settings.poll_timeout_s)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.error("consumer error: %s", error)
                    continue
                outcomes.append(self._handle(msg))
        finally:
            self.consumer.close()
        return outcomes

    def _handle(self, msg: Any) -> JobOutcome:
        from confluent_kafka import KafkaException

        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            request = decode_event(msg.value() or b"", RetrainRequest)
        except InvalidEvent as exc:
            # Not a job: nothing to record under a job id. Logged with its coordinates and
            # committed, so one bad message does not block the queue.
            log.error("skipping invalid retrain request at %s: %s", where, exc)
            self.consumer.commit(message=msg, asynchronous=False)
            return JobOutcome("", "invalid", str(exc))
        log.info("retrain request %s at %s: %s", request.job_id, where, request.base_model)
        outcome = self._run_paused(request)
        # Only now is the job done (outcome recorded): commit, so a crash before this line
        # means the request is consumed again and the job resumes idempotently.
        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:
            # The partition moved to another trainer during the job (rebalance): it will
            # see the outcome row and skip the job.
            log.error("job %s %s but the commit at %s failed: %s",
                      request.job_id, outcome.decision, where, exc)  # fmt: skip
            return outcome
        log.info("job %s %s; committed %s", request.job_id, outcome.decision, where)
        return outcome

    def _run_paused(self, request: RetrainRequest) -> JobOutcome:
        """Run the job in a thread while this thread keeps the consumer alive (paused)."""
        from confluent_kafka import TopicPartition

        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["outcome"] = self.runner.run(request)
            except BaseException as exc:  # surfaced in the consumer thread below
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"job-{request.job_id}", daemon=True)
        worker.start()
        early: Any = None
        while worker.is_alive():
            worker.join(timeout=1.0)
            # Heartbeats and rebalance callbacks. Paused partitions return no records; one
            # fetched before the pause is not lost: we seek back to it after the job.
            msg = self.consumer.poll(0)
            if msg is not None and not msg.error() and early is None:
                early = msg
        self.consumer.resume(assignment)
        if early is not None:
            self.consumer.seek(TopicPartition(early.topic(), early.partition(), early.offset()))
        if "error" in box:
            raise TrainerError(f"job {request.job_id} crashed: {box['error']}") from box["error"]
        outcome: JobOutcome = box["outcome"]
        return outcome
