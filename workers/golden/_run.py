"""A golden run: generate every case, score it, store the results, compare with the
previous run, and page when the pass rate is under the threshold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from schemas.events import Alert, GoldenRun, GoldenTrigger, utcnow
from schemas.exceptions import SentryMLError
from workers.golden._checks import CaseResult, CheckOutcome, JudgeFn, run_checks
from workers.golden._errors import GoldenError, InvalidGoldenSet, ModelUnavailable
from workers.golden._format import GoldenCase, GoldenSet
from workers.golden._generate import Generate, generate_one
from workers.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldenRunResult:
    """A finished run: the summary event, every case, and what changed since last time."""

    run: GoldenRun
    results: list[CaseResult]
    previous_run_id: str | None = None
    newly_failing: list[str] = field(default_factory=list)
    alert: Alert | None = None
    alert_error: str | None = None
    #: The alert was delivered (False: no sink, a repeat suppressed by the sink, or an error).
    paged: bool = False

    @property
    def ok(self) -> bool:
        """Pass rate at or above the threshold."""
        return self.run.pass_rate >= self.run.threshold

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


class AlertEmitter(Protocol):
    """Where a failing run's page goes: ``workers.alerts.AlertSink`` satisfies this."""

    async def emit(self, alerts: Sequence[Alert]) -> list[Alert]: ...


def record_golden_run(store: Store, run: GoldenRun, results: Sequence[CaseResult]) -> None:
    """Store a run's case rows and its summary (one insert each, deduplicated by run id)."""
    store.insert(
        "golden_results", result_rows(run, results), dedup_token=f"golden-results-{run.run_id}"
    )
    store.insert("golden_runs", [run.to_row()], dedup_token=f"golden-run-{run.run_id}")


def golden_run_of(
    results: Sequence[CaseResult],
    *,
    run_id: str,
    base_model: str,
    adapter_version: str,
    golden_set: str,
    trigger: GoldenTrigger,
    threshold: float,
    ts: datetime,
) -> GoldenRun:
    """The summary event of a finished list of case results."""
    passed, pass_rate, tag_rates, failed = summarize(results)
    return GoldenRun(
        ts=ts,
        run_id=run_id,
        base_model=base_model,
        adapter_version=adapter_version,
        golden_set=golden_set,
        trigger=trigger,
        total=len(results),
        passed=passed,
        pass_rate=pass_rate,
        threshold=threshold,
        tag_pass_rates=tag_rates,
        failed_case_ids=failed,
    )


def summarize(results: Sequence[CaseResult]) -> tuple[int, float, dict[str, float], list[str]]:
    """``(passed, pass_rate, {tag: pass_rate}, failed case ids)`` of a list of results."""
    passed = sum(r.passed for r in results)
    by_tag: dict[str, list[bool]] = {}
    for r in results:
        for tag in r.tags:
            by_tag.setdefault(tag, []).append(r.passed)
    tag_rates = {t: sum(v) / len(v) for t, v in sorted(by_tag.items())}
    failed = [r.case_id for r in results if not r.passed]
    return passed, (passed / len(results) if results else 0.0), tag_rates, failed


def previous_run(
    store: Store, *, base_model: str, adapter_version: str, golden_set: str, before: datetime
) -> tuple[str | None, dict[str, bool]]:
    """The last stored run of this set on this model/adapter and ``{case_id: passed}``."""
    run_id = store.query(
        "SELECT run_id FROM golden_runs FINAL WHERE base_model = {m:String} "
        "AND adapter_version = {a:String} AND golden_set = {g:String} "
        "AND ts < {before:DateTime64(3, 'UTC')} ORDER BY ts DESC LIMIT 1",
        {"m": base_model, "a": adapter_version, "g": golden_set, "before": before},
    ).scalar()
    if run_id is None:
        return None, {}
    rows = store.query(
        "SELECT case_id, passed FROM golden_results FINAL WHERE run_id = {r:String} "
        "AND base_model = {m:String} AND adapter_version = {a:String}",
        {"r": run_id, "m": base_model, "a": adapter_version},
    ).rows
    return str(run_id), {str(cid): bool(ok) for cid, ok in rows}


def result_rows(run: GoldenRun, results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    return [
        {
            "ts": run.ts,
            "run_id": run.run_id,
            "base_model": run.base_model,
            "adapter_version": run.adapter_version,
            "case_id": r.case_id,
            "tags": list(r.tags),
            "passed": int(r.passed),
            "failed_checks": r.failed_checks,
            "expected": r.expected,
            "output": r.output,
            "latency_ms": r.latency_ms,
            "details": json.dumps(r.details(), sort_keys=True, ensure_ascii=False),
        }
        for r in results
    ]


def golden_alert(run: GoldenRun, newly_failing: Sequence[str]) -> Alert:
    """The page for a run under threshold (one alert id per run)."""
    failed = run.failed_case_ids
    shown = ", ".join(failed[:10]) + (f" (+{len(failed) - 10} more)" if len(failed) > 10 else "")
    message = (
        f"golden set {run.golden_set!r} on {run.base_model}/{run.adapter_version}: pass rate "
        f"{run.pass_rate:.1%} < {run.threshold:.1%} ({run.total - run.passed}/{run.total} "
        f"failed: {shown}; trigger {run.trigger})"
    )
    if newly_failing:
        message += f"; newly failing: {', '.join(newly_failing[:10])}"
    return Alert(
        ts=run.ts,
        alert_id=f"golden-{run.run_id}",
        base_model=run.base_model,
        adapter_version=run.adapter_version,
        kind="golden",
        feature=run.golden_set,
        window="run",
        severity="page",
        value=run.pass_rate,
        threshold=run.threshold,
        sample_size=run.total,
        message=message,
    )


async def run_golden(
    cases: GoldenSet | Sequence[GoldenCase],
    generate: Generate,
    *,
    base_model: str,
    adapter_version: str = "none",
    threshold: float = 0.95,
    golden_set: str | None = None,
    trigger: GoldenTrigger = "manual",
    concurrency: int = 4,
    judge: JudgeFn | None = None,
    store: Store | None = None,
    alerts: AlertEmitter | None = None,
    progress: bool = False,
    run_id: str | None = None,
    now: Callable[[], datetime] = utcnow,
) -> GoldenRunResult:
    """Run a golden set against a model; store, compare and page. The library entry point.

    ``generate`` is an :class:`OpenAIChat` for a live endpoint, or any ``generate(case)``
    returning the output text (sync callables run in a thread, e.g. a local transformers
    model). With ``store`` the results go to ``golden_results`` and the summary to
    ``golden_runs`` (one batched insert each, deduplicated by run id) and newly failing
    cases are found against the previous stored run of this set on this model/adapter.
    With ``alerts`` (``workers.alerts.AlertSink``) a pass rate under ``threshold`` emits a
    page. Raises :class:`ModelUnavailable` when no case could be generated at all.

    >>> result = asyncio.run(run_golden(gs, lambda case: '{"intent": "x"}',
    ...                                 base_model="m", threshold=0.9))      # doctest: +SKIP
    >>> result.ok, result.run.pass_rate                                     # doctest: +SKIP
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not 1 <= concurrency <= 256:
        raise ValueError(f"concurrency must be in [1, 256], got {concurrency}")
    if isinstance(cases, GoldenSet):
        golden_set = golden_set or cases.name
        case_list = list(cases.cases)
    else:
        case_list = list(cases)
    if not case_list:
        raise ValueError("run_golden needs at least one case")
    if len({c.id for c in case_list}) != len(case_list):
        raise InvalidGoldenSet("case ids must be unique within a run")
    judged = [c.id for c in case_list if c.checks.judge is not None]
    if judged and judge is None:
        raise GoldenError(
            f"cases {judged[:5]} have a judge check but no judge is configured "
            "(set SENTRYML_JUDGE_BASE_URL / pass judge=...)"
        )
    run_id = run_id or uuid.uuid4().hex
    started = now()
    semaphore = asyncio.Semaphore(concurrency)
    bar = _progress(len(case_list), progress, golden_set or "golden")

    async def one(case: GoldenCase) -> CaseResult:
        async with semaphore:
            t0 = time.perf_counter()
            try:
                gen = await generate_one(generate, case)
            except Exception as exc:  # recorded per case; all-failed raises below
                log.warning("golden case %s: generation failed: %s", case.id, exc)
                error = f"{type(exc).__name__}: {exc}"
                result = CaseResult(
                    case.id,
                    tuple(case.tags),
                    False,
                    (CheckOutcome("generation", False, error),),
                    "",
                    case.expected or "",
                    (time.perf_counter() - t0) * 1000,
                    error,
                )
            else:
                latency = (time.perf_counter() - t0) * 1000
                result = await run_checks(
                    case, gen.text, judge=judge, tokens=gen.completion_tokens, latency_ms=latency
                )
            if bar is not None:
                bar.update(1)
            return result

    try:
        results = list(await asyncio.gather(*(one(c) for c in case_list)))
    finally:
        if bar is not None:
            bar.close()
    if all(r.error for r in results):
        raise ModelUnavailable(
            f"no golden case could be generated ({len(results)} tried); first error: "
            f"{results[0].error}"
        )

    run = golden_run_of(
        results,
        run_id=run_id,
        base_model=base_model,
        adapter_version=adapter_version,
        golden_set=golden_set or "golden",
        trigger=trigger,
        threshold=threshold,
        ts=started,
    )
    passed, pass_rate, failed = run.passed, run.pass_rate, run.failed_case_ids
    previous_id: str | None = None
    newly_failing: list[str] = []
    if store is not None:
        previous_id, before = await asyncio.to_thread(
            previous_run,
            store,
            base_model=base_model,
            adapter_version=adapter_version,
            golden_set=run.golden_set,
            before=started,
        )
        newly_failing = [cid for cid in failed if before.get(cid) is True]
        await asyncio.to_thread(record_golden_run, store, run, results)
    alert: Alert | None = None
    alert_error: str | None = None
    paged = False
    if pass_rate < threshold:
        alert = golden_alert(run, newly_failing)
        log.warning("%s", alert.message)
        if alerts is not None:
            try:
                paged = bool(await alerts.emit([alert]))
            except SentryMLError as exc:  # the run is stored; the caller reports the failure
                alert_error = str(exc)
                log.error("golden page %s not delivered: %s", alert.alert_id, exc)
    log.info(
        "golden run %s (%s) on %s/%s: %d/%d passed (%.1f%%), threshold %.1f%%",
        run_id,
        run.golden_set,
        base_model,
        adapter_version,
        passed,
        len(results),
        100 * pass_rate,
        100 * threshold,
    )
    return GoldenRunResult(run, results, previous_id, newly_failing, alert, alert_error, paged)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", leave=False)
