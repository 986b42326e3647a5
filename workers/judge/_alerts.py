"""Judge trend alerts: the 7-day rolling mean of each dimension vs the 7 days before it.

:func:`rolling_judge_means` reads both windows for every (model, adapter, dimension) in
one SQL query; :func:`judge_drop_alerts` is pure (rows in, alerts out), so the rule is
tested without a store. Scales: ``format`` and ``factual`` are 1–5 means (a *drop* is
bad); ``refusal`` is the refusal rate in [0, 1] (a *rise* is bad).

>>> from datetime import UTC
>>> now = datetime(2026, 1, 15, tzinfo=UTC)
>>> row = RollingMean("m", "v1", "factual", 3.1, 40, 4.0, 50)
>>> (alert,) = judge_drop_alerts([row], drop_delta=0.5, refusal_rate_delta=0.1,
...                              min_samples=20, now=now)
>>> print(alert.kind, alert.feature, alert.window, alert.threshold)
judge_drop factual 7d_vs_previous 3.5
>>> print(alert.message)  # doctest: +ELLIPSIS
judge factual mean of m/v1 fell to 3.10 over the last 7d (n=40), from 4.00 in the 7d before (n=50)...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.events import Alert
from workers.alerts import alert_id
from workers.store import Store

WINDOW = timedelta(days=7)

# Completions flagged as addressing the judge are left out of the means: a judge they
# fooled must not lift the trend and hide a real drop (they stay queryable by the flag).
ROLLING_SQL = """
SELECT base_model, adapter_version, dimension,
       avgIf(score, ts >= {split:DateTime64(3, 'UTC')}) AS current_mean,
       countIf(ts >= {split:DateTime64(3, 'UTC')}) AS current_n,
       avgIf(score, ts < {split:DateTime64(3, 'UTC')}) AS previous_mean,
       countIf(ts < {split:DateTime64(3, 'UTC')}) AS previous_n
FROM judge_scores FINAL
WHERE ok = 1 AND score IS NOT NULL AND injection_flag = 0
  AND ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}
GROUP BY base_model, adapter_version, dimension
ORDER BY base_model, adapter_version, dimension
"""


@dataclass(frozen=True)
class RollingMean:
    """Judge mean of one dimension in the last window and in the window before it."""

    base_model: str
    adapter_version: str
    dimension: str
    current_mean: float | None
    current_n: int
    previous_mean: float | None
    previous_n: int


def _mean(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def rolling_judge_means(
    store: Store, now: datetime, window: timedelta = WINDOW
) -> list[RollingMean]:
    """Both windows' means and counts for every (model, adapter, dimension): one query."""
    params = {"start": now - 2 * window, "split": now - window, "end": now}
    rows = store.query(ROLLING_SQL, params).rows
    return [
        RollingMean(str(m), str(a), str(d), _mean(cm), int(cn), _mean(pm), int(pn))
        for m, a, d, cm, cn, pm, pn in rows
    ]


def _worse_by(dimension: str, current: float, reference: float) -> float:
    """How much worse ``current`` is than ``reference`` (positive = worse)."""
    return current - reference if dimension == "refusal" else reference - current


def judge_drop_alerts(
    means: Sequence[RollingMean],
    *,
    drop_delta: float,
    refusal_rate_delta: float,
    min_samples: int,
    now: datetime,
    baseline_means: Mapping[str, float] | None = None,
    window: timedelta = WINDOW,
) -> list[Alert]:
    """Alerts for every dimension whose current mean is worse than the previous window's
    (or the configured baseline's) by more than its delta, on at least ``min_samples``
    scores in each window compared."""
    if drop_delta <= 0 or refusal_rate_delta <= 0:
        raise ValueError("drop_delta and refusal_rate_delta must be > 0")
    if min_samples < 1:
        raise ValueError("min_samples must be >= 1")
    days = f"{window.days}d" if window.days else f"{window.total_seconds():g}s"
    alerts = []
    for row in means:
        if row.current_mean is None or row.current_n < min_samples:
            continue
        delta = refusal_rate_delta if row.dimension == "refusal" else drop_delta
        what = "refusal rate" if row.dimension == "refusal" else f"{row.dimension} mean"
        verb = "rose" if row.dimension == "refusal" else "fell"
        references: list[tuple[str, float, int | None]] = []
        if row.previous_mean is not None and row.previous_n >= min_samples:
            references.append(("previous", row.previous_mean, row.previous_n))
        if baseline_means and row.dimension in baseline_means:
            references.append(("baseline", float(baseline_means[row.dimension]), None))
        for name, reference, ref_n in references:
            worse = _worse_by(row.dimension, row.current_mean, reference)
            if worse <= delta:
                continue
            limit = reference + delta if row.dimension == "refusal" else reference - delta
            against = (
                f"{reference:.2f} in the {days} before (n={ref_n})"
                if name == "previous"
                else f"the baseline {reference:.2f}"
            )
            alerts.append(
                Alert(
                    ts=now,
                    alert_id=alert_id(
                        "judge_drop", row.base_model, row.adapter_version, row.dimension, name, now
                    ),
                    base_model=row.base_model,
                    adapter_version=row.adapter_version,
                    kind="judge_drop",
                    feature=row.dimension,
                    window=f"{days}_vs_{name}",
                    severity="alert",
                    value=row.current_mean,
                    threshold=limit,
                    sample_size=row.current_n,
                    message=(
                        f"judge {what} of {row.base_model}/{row.adapter_version} {verb} to "
                        f"{row.current_mean:.2f} over the last {days} (n={row.current_n}), "
                        f"from {against}; allowed change {delta:g}. Look at recent low-scored "
                        f"requests: SELECT * FROM judge_scores WHERE base_model = "
                        f"'{row.base_model}' AND dimension = '{row.dimension}' ORDER BY ts DESC"
                    ),
                )
            )
    return alerts
