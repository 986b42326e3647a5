"""Drift decisions: thresholds, a window's status for one feature, and why.

The statistics live in :mod:`workers.stats`; this module turns them into
``ok`` / ``warn`` / ``alert`` / ``insufficient`` (see docs/drift.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.events import DriftStatus

if TYPE_CHECKING:
    from workers.baseline import FeatureBaseline
from workers.stats import DEFAULT_EPS, chi2_homogeneity, homogeneity_p_value, jsd, psi


@dataclass(frozen=True)
class DriftThresholds:
    """When a window is ``warn`` / ``alert`` (see the module docstring for why both tests).

    >>> DriftThresholds(psi_warn=0.3, psi_alert=0.2)
    Traceback (most recent call last):
    ValueError: psi_warn=0.3 must be <= psi_alert=0.2 (both > 0)
    """

    psi_warn: float = 0.1
    psi_alert: float = 0.2
    #: family-wise: the false-alarm bound of one evaluation (all features and windows of a
    #: model, Holm-adjusted by the evaluator), not of one test
    alpha: float = 0.01
    min_samples: int = 30
    eps: float = DEFAULT_EPS
    #: the ``novelty`` feature's thresholds, in its own unit: the estimated share of
    #: traffic unlike the training data
    share_warn: float = 0.05
    share_alert: float = 0.15

    def __post_init__(self) -> None:
        if not (0 < self.psi_warn <= self.psi_alert) or not math.isfinite(self.psi_alert):
            raise ValueError(
                f"psi_warn={self.psi_warn} must be <= psi_alert={self.psi_alert} (both > 0)"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not 0 < self.eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {self.eps}")
        if not 0 < self.share_warn <= self.share_alert <= 1:
            raise ValueError(
                f"share_warn={self.share_warn} must be <= share_alert={self.share_alert}, "
                "both in (0, 1]"
            )


@dataclass(frozen=True)
class DriftResult:
    """One feature on one window: the statistics and the decision.

    ``share`` (with its interval ``share_low``..``share_high`` and the null
    ``share_expected`` of the counted rate) is set for the ``novelty`` feature only.
    """

    psi: float
    jsd: float
    chi2: float
    p_value: float
    sample_size: int
    baseline_size: int
    status: DriftStatus
    share: float | None = None
    share_low: float | None = None
    share_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status(
    effect: float,
    p_value: float,
    sample_size: int,
    baseline_size: int,
    thresholds: DriftThresholds,
    warn: float,
    alert: float,
) -> DriftStatus:
    """Enough data, the test rejecting AND the effect size past ``warn`` / ``alert``."""
    if min(sample_size, baseline_size) < thresholds.min_samples:
        return "insufficient"
    if p_value >= thresholds.alpha:
        return "ok"
    if effect >= alert:
        return "alert"
    if effect >= warn:
        return "warn"
    return "ok"


def decide_share(
    share: float,
    p_value: float,
    sample_size: int,
    baseline_size: int,
    thresholds: DriftThresholds,
) -> DriftStatus:
    """The ``novelty`` feature's status: the test rejecting AND the estimated share past a
    threshold (on large windows every small shift is significant; the share says whether
    it matters)."""
    t = thresholds
    return _status(share, p_value, sample_size, baseline_size, t, t.share_warn, t.share_alert)


def decide(
    psi_value: float,
    p_value: float,
    sample_size: int,
    baseline_size: int,
    thresholds: DriftThresholds,
) -> DriftStatus:
    """The status for given statistics: PSI past a threshold AND the test rejecting."""
    t = thresholds
    return _status(psi_value, p_value, sample_size, baseline_size, t, t.psi_warn, t.psi_alert)


def evaluate(
    window_counts: Any, baseline: FeatureBaseline, thresholds: DriftThresholds
) -> DriftResult:
    """Compare one window's counts per bin with a feature baseline's reference counts.

    An empty window gives zeros, ``p_value`` 1 and status ``insufficient``. The
    ``novelty`` feature is judged by :func:`evaluate_novelty`. The p-value is one test's;
    the evaluator adjusts it for the whole evaluation (:func:`holm`) and decides again.
    """
    w = np.asarray(window_counts, dtype=np.int64)
    ref = np.asarray(baseline.counts, dtype=np.int64)
    if w.shape != ref.shape:
        raise ValueError(
            f"feature {baseline.name!r}: window has {w.size} bins, baseline has {ref.size}"
        )
    if np.any(w < 0):
        raise ValueError(f"feature {baseline.name!r}: counts must be >= 0")
    n, m = int(w.sum()), int(ref.sum())
    if n == 0 or m == 0:
        return DriftResult(0.0, 0.0, 0.0, 1.0, n, m, "insufficient")
    if baseline.name == "novelty":
        return evaluate_novelty(w, baseline, thresholds)
    psi_value = psi(w, ref, thresholds.eps)
    stat, p_value = homogeneity_p_value(w, ref)
    return DriftResult(
        psi=psi_value,
        jsd=jsd(w, ref),
        chi2=stat,
        p_value=p_value,
        sample_size=n,
        baseline_size=m,
        status=decide(psi_value, p_value, n, m, thresholds),
    )


def evaluate_novelty(
    window_counts: Any, baseline: FeatureBaseline, thresholds: DriftThresholds
) -> DriftResult:
    """The ``novelty`` feature: the estimated share of traffic unlike the training data, its
    interval and exact test (:func:`workers.stats.off_distribution_share`); PSI and JSD
    of its bins are reported as secondary numbers. ``baseline_size`` is the calibration
    sample (the gaps sum to it plus one)."""
    from workers.stats import off_distribution_share

    w = np.asarray(window_counts, dtype=np.int64)
    ref = np.asarray(baseline.counts, dtype=np.int64)
    n, m = int(w.sum()), int(ref.sum()) - 1
    if n == 0:
        return DriftResult(0.0, 0.0, 0.0, 1.0, 0, m, "insufficient")
    est = off_distribution_share(w, ref)
    psi_value = psi(w, ref, thresholds.eps)
    return DriftResult(
        psi=psi_value,
        jsd=jsd(w, ref),
        chi2=chi2_homogeneity(w, ref)[0],
        p_value=est.p_value,
        sample_size=n,
        baseline_size=m,
        status=decide_share(est.share, est.p_value, n, m, thresholds),
        share=est.share,
        share_low=est.low,
        share_high=est.high,
    )
