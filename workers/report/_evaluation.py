"""The drift monitor's evaluation of the counts the report shows.

The share sections' PSI, JSD, p-value and status are not statistics of the report's own:
they come from the functions the drift monitor decides its alerts with —
:func:`workers.drift.evaluate` per feature and window (the exact test where counts are
small, the ``novelty`` share), then :func:`workers.drift.decide_evaluation` over all of them
(Holm) — with the thresholds of :meth:`workers.drift.DriftSettings.thresholds_for`.

One evaluation is what the monitor runs for one stream: every feature of the baseline on
every window of ``DriftSettings.windows`` (and the 24 h the share plots show, should it not
be one of them), each window ending at the newest counts and starting no earlier than the
report's range; every test's p-value is Holm-adjusted over the whole family before the
decision. On the counts the monitor evaluated (one adapter, or ``--adapter``, and newest
counts in the minute it ran) the report shows the monitor's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from workers.drift import WINDOWS, DriftResult, DriftSettings, decide_evaluation, evaluate
from workers.report._queries import EVALUATION_COUNTS_SQL, Scope

if TYPE_CHECKING:
    from workers.baseline import Baseline
    from workers.store import Store


@dataclass(frozen=True)
class WindowEvaluation:
    """One feature on one window: the window's counts and the monitor's verdict on them.

    ``observed`` holds the counts of the baseline's bins; ``outside`` counts the events in
    bins the baseline does not have (left out, as the monitor leaves them out).
    """

    window: str
    feature: str
    start: datetime  # exclusive: buckets after it, up to and including the newest
    observed: np.ndarray
    outside: int
    result: DriftResult
    status: str
    p_adjusted: float


@dataclass(frozen=True)
class Evaluation:
    """Every feature on every window of one evaluation, ending at the newest bucket."""

    baseline: Baseline
    last: datetime
    windows: tuple[str, ...]
    results: dict[tuple[str, str], WindowEvaluation]  # (window, feature)

    @property
    def tests(self) -> int:
        """How many tests the Holm adjustment ran over (those with enough events)."""
        return sum(1 for r in self.results.values() if r.result.status != "insufficient")

    def feature(self, feature: str) -> list[WindowEvaluation]:
        """``feature`` on every window, in the order of :attr:`windows`."""
        return [self.results[(w, feature)] for w in self.windows]


class Evaluator:
    """The evaluations of one report, each run once per (baseline, newest bucket)."""

    def __init__(self, store: Store, scope: Scope, settings: DriftSettings, shown: str) -> None:
        self._store = store
        self._scope = scope
        self._thresholds = settings.thresholds_for(scope.base_model)
        windows = tuple(settings.windows)
        self.windows = windows if shown in windows else (*windows, shown)
        self.sql = scope.sql(EVALUATION_COUNTS_SQL)
        self._done: dict[tuple[str, datetime], Evaluation] = {}

    def at(self, baseline: Baseline, last: datetime) -> Evaluation:
        """The evaluation of ``baseline``'s counts in windows ending at bucket ``last``."""
        key = (baseline.baseline_id, last)
        if key not in self._done:
            self._done[key] = self._evaluate(baseline, last)
        return self._done[key]

    def _evaluate(self, baseline: Baseline, last: datetime) -> Evaluation:
        scope = self._scope
        tests: list[tuple[str, str, datetime, np.ndarray, int, DriftResult]] = []
        for window in self.windows:
            # ``bucket > start``: exactly the window's minute buckets up to the newest one
            start = max(last - WINDOWS[window], scope.start - timedelta(seconds=1))
            params = scope.params(b=baseline.baseline_id, **{"from": start, "last": last})
            counts: dict[str, dict[int, int]] = {}
            for feature, b, n in self._store.query(self.sql, params).rows:
                counts.setdefault(str(feature), {})[int(b)] = int(n)
            for feature, fb in baseline.features.items():
                observed = np.zeros(len(fb.counts), dtype=np.int64)
                outside = 0
                for b, n in counts.get(feature, {}).items():
                    if 0 <= b < len(observed):
                        observed[b] = n
                    else:
                        outside += n
                result = evaluate(observed, fb, self._thresholds)
                tests.append((window, feature, start, observed, outside, result))
        decided = decide_evaluation([t[-1] for t in tests], self._thresholds)
        results = {}
        for (window, feature, start, observed, outside, result), (status, p) in zip(
            tests, decided, strict=True
        ):
            results[(window, feature)] = WindowEvaluation(
                window, feature, start, observed, outside, result, status, p
            )
        return Evaluation(baseline=baseline, last=last, windows=self.windows, results=results)
