"""The retrain gate: should the trainer be asked for a new adapter, and if not, why not.

:func:`decide` is pure (inputs in, decision out) and holds the four rules:

(a) a drift or judge alert held without a break for a wall-clock duration (hours in
    production), on recent evaluations of the current baseline,
(b) enough new labelled examples exist for the model's declared task goal,
(c) the cooldown since the last job passed,
(d) no job is in flight.

:func:`gather_inputs` reads what those rules need from the store (``drift_stats``, the
judge's rolling means, ``feedback``, ``retrain_jobs``), and :func:`record_job_event`
writes every decision, fired or held, to ``retrain_jobs`` so that
``sentryml sql "SELECT ts, decision, reason FROM retrain_jobs ORDER BY ts DESC"`` answers
"why didn't we retrain?". The trainer writes its own rows (``started`` and an outcome) to
the same table, which is how the gate sees a job in flight.

>>> from dataclasses import replace
>>> from datetime import UTC, datetime, timedelta
>>> now = datetime(2026, 3, 1, tzinfo=UTC)
>>> policy = GatePolicy(persist=timedelta(hours=6), min_examples={"style": 200},
...                     cooldown=timedelta(days=7))
>>> alerting = [(now - timedelta(minutes=m), True) for m in range(0, 7 * 60, 10)]
>>> inputs = GateInputs(base_model="m", adapter_version="v1", task_goal="style",
...                     signals={"drift:embedding@24h": alerting},
...                     new_examples=250, last_job_at=None, in_flight=None)
>>> decide(inputs, policy, now).fire
True
>>> decide(replace(inputs, new_examples=20), policy, now).reason
'held: examples: 20 new labelled examples, need 200 for goal style'
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas.events import RetrainRequest
from workers.adapters import live_adapter_version

if TYPE_CHECKING:
    from workers.judge import JudgeSettings
    from workers.retrain_gate._settings import RetrainGateSettings
from workers.store import Store

#: Gate decisions.
FIRED, HELD, FORCED = "fired", "held", "forced"
#: Trainer decisions: a job starts, then ends in exactly one outcome.
STARTED = "started"
PROMOTED, REJECTED, REFUSED, FAILED = "promoted", "rejected", "refused", "failed"
#: A job with one of these rows and no terminal row is in flight.
JOB_OPEN: tuple[str, ...] = (FIRED, FORCED, STARTED)
JOB_TERMINAL: tuple[str, ...] = (PROMOTED, REJECTED, REFUSED, FAILED)
#: Outcomes after which the labelled data counts as used (refused/failed jobs used none).
TRAINED: tuple[str, ...] = (PROMOTED, REJECTED)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GatePolicy:
    """The gate's thresholds: how long an alert must hold, minimums, cooldown.

    ``persist``: the wall-clock time a signal must alert without a break. ``max_gap``:
    evaluations further apart than this break the run, and a signal whose newest evaluation
    is older than this counts as stale (not alerting): stopped evaluations never count.
    """

    persist: timedelta
    min_examples: Mapping[str, int]
    cooldown: timedelta
    max_gap: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.persist <= timedelta(0):
            raise ValueError(f"persist must be > 0, got {self.persist}")
        if self.max_gap <= timedelta(0):
            raise ValueError(f"max_gap must be > 0, got {self.max_gap}")
        if self.cooldown < timedelta(0):
            raise ValueError(f"cooldown must be >= 0, got {self.cooldown}")
        bad = {k: v for k, v in self.min_examples.items() if v < 1}
        if bad:
            raise ValueError(f"min_examples must all be >= 1, got {bad}")

    @classmethod
    def from_settings(cls, settings: RetrainGateSettings) -> GatePolicy:
        return cls(
            persist=timedelta(seconds=settings.persist_s),
            min_examples={str(k): v for k, v in settings.min_examples.items()},
            cooldown=timedelta(days=settings.cooldown_days),
            max_gap=timedelta(seconds=settings.max_gap_s),
        )


@dataclass(frozen=True)
class GateInputs:
    """What the gate knows about one model at one moment.

    ``signals`` maps a monitor signal (``"drift:embedding@24h"``, ``"judge:format"``) to
    its recent evaluations as ``(time, alerting?)``, newest first; ``max_gaps`` overrides
    the policy's ``max_gap`` for signals evaluated further apart (the judge's instants).
    """

    base_model: str
    adapter_version: str
    task_goal: str
    signals: Mapping[str, Sequence[tuple[datetime, bool]]]
    new_examples: int
    last_job_at: datetime | None
    in_flight: str | None
    examples_since: datetime | None = None
    max_gaps: Mapping[str, timedelta] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Fire or hold, with every rule's verdict (all four are always evaluated)."""

    fire: bool
    checks: tuple[Check, ...]
    persisting: tuple[str, ...] = field(default=())
    #: How long each signal has alerted without a break (seconds), persisting or not.
    held_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.fire:
            return "fired: " + "; ".join(f"{c.name}: {c.detail}" for c in self.checks)
        return "held: " + "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)

    def details(self) -> dict[str, Any]:
        return {
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
            "persisting": list(self.persisting),
            "held_s": dict(self.held_s),
        }


def held_for(
    history: Sequence[tuple[datetime, bool]], now: datetime, max_gap: timedelta
) -> timedelta:
    """How long a signal has alerted without a break: from the oldest to the newest
    evaluation of its current alerting run. Zero when the newest evaluation does not alert
    or is older than ``max_gap`` (stale); two evaluations more than ``max_gap`` apart end
    the run.

    >>> t = datetime(2026, 3, 1, 12, tzinfo=UTC)
    >>> run = [(t - timedelta(minutes=m), m < 30) for m in (0, 10, 20, 30)]
    >>> held_for(run, t, timedelta(minutes=15))
    datetime.timedelta(seconds=1200)
    >>> held_for(run, t + timedelta(hours=1), timedelta(minutes=15))
    datetime.timedelta(0)
    """
    if not history or not history[0][1] or now - history[0][0] > max_gap:
        return timedelta(0)
    newest = start = history[0][0]
    for ts, alerting in history[1:]:
        if not alerting or start - ts > max_gap:
            break
        start = ts
    return newest - start


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 1:
        return f"{delta.total_seconds() / 60:.0f} min"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def decide(inputs: GateInputs, policy: GatePolicy, now: datetime) -> GateDecision:
    """Apply rules (a)–(d); fire only when all four pass."""
    checks = []
    gap = {n: inputs.max_gaps.get(n, policy.max_gap) for n in inputs.signals}
    held = {n: held_for(h, now, gap[n]) for n, h in inputs.signals.items()}
    persisting = sorted(n for n, d in held.items() if d >= policy.persist)
    if persisting:
        longest = max(held[n] for n in persisting)
        detail = (
            f"{', '.join(persisting)} alerted without a break for {_ago(longest)} "
            f"(needs {_ago(policy.persist)})"
        )
        checks.append(Check("alerts", True, detail))
    else:
        alerting = sorted(
            n for n, h in inputs.signals.items() if h and h[0][1] and now - h[0][0] <= gap[n]
        )
        detail = f"no alert held for {_ago(policy.persist)}"
        if alerting:
            detail += (
                " (alerting now: " + ", ".join(f"{n} for {_ago(held[n])}" for n in alerting) + ")"
            )
        checks.append(Check("alerts", False, detail))

    need = policy.min_examples.get(inputs.task_goal)
    if need is None:
        raise ValueError(
            f"no minimum for task goal {inputs.task_goal!r}; known: {sorted(policy.min_examples)}"
        )
    checks.append(
        Check(
            "examples",
            inputs.new_examples >= need,
            f"{inputs.new_examples} new labelled examples, need {need} for goal {inputs.task_goal}",
        )
    )

    if inputs.last_job_at is None:
        checks.append(Check("cooldown", True, "no previous job"))
    else:
        since = now - inputs.last_job_at
        ok = since >= policy.cooldown
        checks.append(
            Check(
                "cooldown",
                ok,
                f"last job {_ago(since)} ago, cooldown {_ago(policy.cooldown)}",
            )
        )

    if inputs.in_flight:
        checks.append(Check("in_flight", False, f"job {inputs.in_flight} is still in flight"))
    else:
        checks.append(Check("in_flight", True, "no job in flight"))

    return GateDecision(
        fire=all(c.ok for c in checks),
        checks=tuple(checks),
        persisting=tuple(persisting),
        held_s={n: d.total_seconds() for n, d in sorted(held.items())},
    )


# --------------------------------------------------------------------------------------
# Reading the inputs from the store
# --------------------------------------------------------------------------------------

# Evaluations of the current baseline only (the newest evaluation's): rows of a baseline
# that was refitted since never mix into a run.
_DRIFT_SQL = """
SELECT feature, window, ts, status = 'alert'
FROM drift_stats
WHERE base_model = {m:String} AND adapter_version = {a:String}
  AND window IN {windows:Array(String)}
  AND ts > {since:DateTime64(3, 'UTC')} AND ts <= {now:DateTime64(3, 'UTC')}
  AND baseline_id = (
      SELECT argMax(baseline_id, ts) FROM drift_stats
      WHERE base_model = {m:String} AND adapter_version = {a:String}
        AND ts <= {now:DateTime64(3, 'UTC')})
ORDER BY ts DESC
"""

_SERVING_SQL = """
SELECT adapter_version FROM drift_stats
WHERE base_model = {m:String} AND ts <= {now:DateTime64(3, 'UTC')}
ORDER BY ts DESC LIMIT 1
"""

_LAST_JOB_SQL = """
SELECT max(ts) AS last, count() AS n FROM retrain_jobs
WHERE base_model = {m:String} AND decision IN {decisions:Array(String)}
  AND ts <= {now:DateTime64(3, 'UTC')}
"""

_IN_FLIGHT_SQL = """
SELECT job_id, min(ts) AS first_ts
FROM retrain_jobs
WHERE base_model = {m:String} AND job_id != ''
  AND ts >= {since:DateTime64(3, 'UTC')} AND ts <= {now:DateTime64(3, 'UTC')}
GROUP BY job_id
HAVING countIf(decision IN {open:Array(String)}) > 0
   AND countIf(decision IN {terminal:Array(String)}) = 0
ORDER BY first_ts DESC
LIMIT 1
"""

_NEW_EXAMPLES_SQL = """
SELECT uniqExact(request_id) FROM feedback FINAL
WHERE base_model = {m:String} AND ts > {since:DateTime64(3, 'UTC')}
  AND ts <= {now:DateTime64(3, 'UTC')}
  AND (correction IS NOT NULL OR chosen IS NOT NULL OR label = 'good')
"""

_MODELS_SQL = """
SELECT DISTINCT base_model FROM (
    SELECT base_model FROM drift_stats WHERE ts >= {since:DateTime64(3, 'UTC')}
    UNION ALL
    SELECT base_model FROM judge_scores WHERE ts >= {since:DateTime64(3, 'UTC')}
    UNION ALL
    SELECT base_model FROM alerts WHERE ts >= {since:DateTime64(3, 'UTC')}
) ORDER BY base_model
"""


def models_to_check(store: Store, settings: RetrainGateSettings, now: datetime) -> list[str]:
    """Models with monitoring data in the lookback period, plus those with a declared goal."""
    since = now - timedelta(days=settings.lookback_days)
    seen = {str(r[0]) for r in store.query(_MODELS_SQL, {"since": since}).rows}
    return sorted(seen | set(settings.task_goals))


def serving_adapter(store: Store, base_model: str, now: datetime) -> str:
    """The adapter the monitors currently see for ``base_model`` (newest drift row), else
    the registry's promoted one, else ``"none"``."""
    seen = store.query(_SERVING_SQL, {"m": base_model, "now": now}).scalar()
    if seen:
        return str(seen)
    return live_adapter_version(store, base_model) or "none"


def drift_signals(
    store: Store,
    base_model: str,
    adapter_version: str,
    windows: Sequence[str],
    since: datetime,
    now: datetime,
) -> dict[str, list[tuple[datetime, bool]]]:
    """``{"drift:<feature>@<window>": [(ts, alerting?), ...]}`` since ``since``, newest first."""
    params = {"m": base_model, "a": adapter_version, "windows": list(windows)}
    rows = store.query(_DRIFT_SQL, {**params, "since": since, "now": now}).rows
    out: dict[str, list[tuple[datetime, bool]]] = {}
    for feature, window, ts, alerting in rows:  # newest first
        out.setdefault(f"drift:{feature}@{window}", []).append((ts, bool(alerting)))
    return out


def judge_signals(
    store: Store,
    base_model: str,
    adapter_version: str,
    judge: JudgeSettings,
    instants: Sequence[datetime],
) -> dict[str, list[tuple[datetime, bool]]]:
    """``{"judge:<dimension>": [(at, alerting?), ...]}`` at each of ``instants`` (newest first).

    The alerts table keeps one row per *notified* condition (repeats are suppressed for the
    renotify period), so it cannot say whether a judge drop held all along. The gate
    re-applies the judge's own rule (:func:`workers.judge.judge_drop_alerts`) at the
    given instants instead, on the scores stored then.
    """
    from workers.judge import judge_drop_alerts, rolling_judge_means

    alerting_at: list[set[str]] = []
    dimensions: set[str] = set()
    for at in instants:
        means = [
            m
            for m in rolling_judge_means(store, at)
            if m.base_model == base_model and m.adapter_version == adapter_version
        ]
        dimensions.update(m.dimension for m in means)
        alerts = judge_drop_alerts(
            means,
            drop_delta=judge.drop_delta,
            refusal_rate_delta=judge.refusal_rate_delta,
            min_samples=judge.drop_min_samples,
            baseline_means=judge.baseline_means,
            now=at,
        )
        alerting_at.append({a.feature for a in alerts})
    return {
        f"judge:{d}": [(at, d in found) for at, found in zip(instants, alerting_at, strict=True)]
        for d in sorted(dimensions)
    }


#: The judge's rule is re-applied at about this many instants across the persistence period.
JUDGE_INSTANTS = 12


def judge_instants(
    persist: timedelta, interval: timedelta, now: datetime
) -> tuple[list[datetime], timedelta]:
    """``now`` and earlier instants, back to just past ``now - persist``, and their spacing
    ``max(interval, persist / JUDGE_INSTANTS)``.

    >>> now = datetime(2026, 3, 1, tzinfo=UTC)
    >>> instants, step = judge_instants(timedelta(hours=6), timedelta(minutes=5), now)
    >>> len(instants), step
    (14, datetime.timedelta(seconds=1800))
    """
    step = max(interval, persist / JUDGE_INSTANTS)
    return [now - k * step for k in range(int(persist / step) + 2)], step


def gather_inputs(
    store: Store,
    base_model: str,
    settings: RetrainGateSettings,
    judge: JudgeSettings,
    now: datetime,
) -> GateInputs:
    """Everything :func:`decide` needs about ``base_model``, read from the store."""
    adapter = serving_adapter(store, base_model, now)
    policy = GatePolicy.from_settings(settings)
    since = now - policy.persist - policy.max_gap
    signals = drift_signals(store, base_model, adapter, settings.drift_windows, since, now)
    interval = timedelta(seconds=settings.judge_interval_s or judge.alert_interval_s)
    instants, step = judge_instants(policy.persist, interval, now)
    judged = judge_signals(store, base_model, adapter, judge, instants)
    signals.update(judged)

    last = store.query(
        _LAST_JOB_SQL, {"m": base_model, "decisions": [FIRED, FORCED], "now": now}
    ).rows[0]
    last_job_at = last[0] if last[1] else None
    trained = store.query(
        _LAST_JOB_SQL, {"m": base_model, "decisions": list(TRAINED), "now": now}
    ).rows[0]
    examples_since = trained[0] if trained[1] else None
    new_examples = int(
        store.query(
            _NEW_EXAMPLES_SQL, {"m": base_model, "since": examples_since or _EPOCH, "now": now}
        ).scalar()
        or 0
    )
    flight = store.query(
        _IN_FLIGHT_SQL,
        {
            "m": base_model,
            "since": now - timedelta(hours=settings.max_job_hours),
            "now": now,
            "open": list(JOB_OPEN),
            "terminal": list(JOB_TERMINAL),
        },
    ).rows
    return GateInputs(
        base_model=base_model,
        adapter_version=adapter,
        task_goal=settings.task_goals.get(base_model, settings.default_goal),
        signals=signals,
        new_examples=new_examples,
        last_job_at=last_job_at,
        in_flight=str(flight[0][0]) if flight else None,
        examples_since=examples_since,
        max_gaps=dict.fromkeys(judged, max(step, policy.max_gap)),
    )


# --------------------------------------------------------------------------------------
# Writing decisions
# --------------------------------------------------------------------------------------


def make_job_id(base_model: str, now: datetime) -> str:
    """A readable, unique job id: ``<model>-<UTC time>-<random>``.

    >>> make_job_id("HuggingFaceTB/SmolLM2-135M", datetime(2026, 3, 1, tzinfo=UTC))[:34]
    'huggingfacetb-smollm2-135m-2026030'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", base_model.lower()).strip("-")[:48] or "model"
    return f"{slug}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def record_job_event(
    store: Store,
    *,
    base_model: str,
    adapter_version: str,
    decision: str,
    reason: str,
    job_id: str = "",
    details: Mapping[str, Any] | None = None,
    now: datetime,
) -> None:
    """One row in ``retrain_jobs``: a gate decision or a trainer step of a job.

    The dedup token makes a retried insert of the same row count once.
    """
    payload = json.dumps(dict(details or {}), sort_keys=True, default=str)
    token = hashlib.sha256(
        "|".join([base_model, job_id, decision, now.isoformat(), reason]).encode()
    ).hexdigest()[:32]
    store.insert(
        "retrain_jobs",
        [
            {
                "ts": now,
                "job_id": job_id,
                "base_model": base_model,
                "adapter_version": adapter_version,
                "decision": decision,
                "reason": reason,
                "details": payload,
            }
        ],
        dedup_token=f"retrain-{token}",
    )


def request_for(
    inputs: GateInputs,
    decision: GateDecision,
    *,
    job_id: str,
    method: str,
    now: datetime,
    forced: bool = False,
    requested_by: str = "retrain-gate",
) -> RetrainRequest:
    """The retrain request for a fired (or forced) decision."""
    return RetrainRequest(
        ts=now,
        job_id=job_id,
        base_model=inputs.base_model,
        adapter_version=inputs.adapter_version,
        method=method,  # type: ignore[arg-type]
        task_goal=inputs.task_goal,  # type: ignore[arg-type]
        reason=decision.reason,
        forced=forced,
        requested_by=requested_by,
    )
