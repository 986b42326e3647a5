"""Drift statistics between a window's bin counts and a baseline's reference bin counts.

One contract, decided once: every feature (embedding clusters, output-length quantile bins,
diversity bins, refusal yes/no) is a vector of **counts per bin**; the functions here take
count (or share) arrays and return plain numbers. No I/O, no state.

- :func:`psi` — population stability index, Σ (p_i − q_i) · ln(p_i / q_i), shares floored at
  ``eps`` so empty bins stay finite. An effect size: how far the window moved.
- :func:`jsd` — Jensen–Shannon divergence, base 2, in [0, 1]; exact (0·log 0 = 0), so it
  needs no epsilon.
- :func:`chi2_homogeneity` — Pearson's chi-square test that the window and the baseline's
  reference sample come from one distribution (a 2×K contingency table, no continuity
  correction). Both sample sizes count: a 600-event baseline is itself noisy.
- :func:`evaluate` — the alert decision for one feature on one window.

Why PSI alone does not decide
-----------------------------
PSI is biased upward on small samples: with 16 clusters, 100 in-distribution events give a
PSI above 0.2 most of the time (pure sampling noise), while 50,000 events give a PSI near
0 even for a real but small shift. So a window alerts only when both hold:

1. PSI >= threshold — the shift is large enough to matter (effect size), and
2. the two-sample chi-square test rejects at ``alpha`` — the shift is not sampling noise
   given *both* the window's and the baseline's sample sizes.

Under no drift the false-alarm rate is then at most about ``alpha`` whatever the window
size; on large windows the test always rejects and the PSI threshold decides. The quality
benchmark (``python -m bench.drift_quality``) measures both rates on real text.

>>> from workers.baseline import FeatureBaseline
>>> base = FeatureBaseline("embedding", None, (0.5, 0.5), (300, 300))
>>> evaluate(np.array([50, 50]), base, DriftThresholds()).status
'ok'
>>> evaluate(np.array([95, 5]), base, DriftThresholds()).status
'alert'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats as _stats

if TYPE_CHECKING:
    from workers.baseline import FeatureBaseline

DriftStatus = Literal["ok", "warn", "alert", "insufficient"]

#: Floor of a share in PSI, so an empty bin costs a large but finite amount.
DEFAULT_EPS = 1e-4


def _as_distribution(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array of counts or shares")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what} must be finite and >= 0")
    total = arr.sum()
    if total <= 0:
        raise ValueError(f"{what} sums to 0: an empty window has no distribution")
    return arr / total


def _pair(p: Any, q: Any) -> tuple[np.ndarray, np.ndarray]:
    pp, qq = _as_distribution(p, "p"), _as_distribution(q, "q")
    if pp.shape != qq.shape:
        raise ValueError(f"p and q need the same bins, got {pp.size} and {qq.size}")
    return pp, qq


def psi(p: Any, q: Any, eps: float = DEFAULT_EPS) -> float:
    """Population stability index of two distributions (counts or shares; normalized here).

    Shares below ``eps`` are raised to ``eps`` (not renormalized) before the sum.

    >>> round(psi([0.5, 0.5], [0.7, 0.3]), 4)
    0.1695
    >>> round(psi([10, 0], [5, 5]), 3)  # the empty bin is floored at 1e-4
    4.604
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    pp, qq = _pair(p, q)
    pp, qq = np.maximum(pp, eps), np.maximum(qq, eps)
    return float(max(0.0, np.sum((pp - qq) * np.log(pp / qq))))


def jsd(p: Any, q: Any) -> float:
    """Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint supports).

    This is the *divergence*; ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` returns
    its square root (the distance).

    >>> jsd([1, 0], [0, 1])
    1.0
    """
    pp, qq = _pair(p, q)
    m = 0.5 * (pp + qq)

    def _kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(min(1.0, max(0.0, 0.5 * _kl(pp) + 0.5 * _kl(qq))))


def chi2_homogeneity(window_counts: Any, baseline_counts: Any) -> tuple[float, float]:
    """Pearson chi-square test of homogeneity of two count vectors: ``(statistic, p_value)``.

    Bins empty in both samples are dropped (they carry no information and would divide by
    zero); the degrees of freedom are the remaining bins minus one. Without a continuity
    correction, so it equals ``scipy.stats.chi2_contingency([w, b], correction=False)``.
    With fewer than two non-empty bins, or an empty sample, there is nothing to test and
    the result is ``(0.0, 1.0)``.

    >>> stat, p = chi2_homogeneity([30, 70], [50, 50])
    >>> round(stat, 3), round(p, 5)
    (8.333, 0.00389)
    """
    w = np.asarray(window_counts, dtype=np.float64)
    b = np.asarray(baseline_counts, dtype=np.float64)
    if w.ndim != 1 or w.shape != b.shape:
        raise ValueError(f"need two 1-D count vectors of equal length, got {w.shape}, {b.shape}")
    if np.any(w < 0) or np.any(b < 0) or not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise ValueError("counts must be finite and >= 0")
    keep = (w + b) > 0
    w, b = w[keep], b[keep]
    n_w, n_b = w.sum(), b.sum()
    if w.size < 2 or n_w == 0 or n_b == 0:
        return 0.0, 1.0
    total = n_w + n_b
    col = w + b
    expected_w = col * n_w / total
    expected_b = col * n_b / total
    stat = float(np.sum((w - expected_w) ** 2 / expected_w + (b - expected_b) ** 2 / expected_b))
    p_value = float(_stats.chi2.sf(stat, w.size - 1))
    return stat, min(1.0, max(0.0, p_value))


@dataclass(frozen=True)
class DriftThresholds:
    """When a window is ``warn`` / ``alert`` (see the module docstring for why both tests).

    >>> DriftThresholds(psi_warn=0.3, psi_alert=0.2)
    Traceback (most recent call last):
    ValueError: psi_warn=0.3 must be <= psi_alert=0.2 (both > 0)
    """

    psi_warn: float = 0.1
    psi_alert: float = 0.2
    alpha: float = 0.01
    min_samples: int = 30
    eps: float = DEFAULT_EPS

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


@dataclass(frozen=True)
class DriftResult:
    """One feature on one window: the statistics and the decision."""

    psi: float
    jsd: float
    chi2: float
    p_value: float
    sample_size: int
    baseline_size: int
    status: DriftStatus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    psi_value: float,
    p_value: float,
    sample_size: int,
    baseline_size: int,
    thresholds: DriftThresholds,
) -> DriftStatus:
    """The status for given statistics: PSI past a threshold AND the test rejecting."""
    if min(sample_size, baseline_size) < thresholds.min_samples:
        return "insufficient"
    if p_value >= thresholds.alpha:
        return "ok"
    if psi_value >= thresholds.psi_alert:
        return "alert"
    if psi_value >= thresholds.psi_warn:
        return "warn"
    return "ok"


def evaluate(
    window_counts: Any, baseline: FeatureBaseline, thresholds: DriftThresholds
) -> DriftResult:
    """Compare one window's counts per bin with a feature baseline's reference counts.

    An empty window gives zeros, ``p_value`` 1 and status ``insufficient``.
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
    psi_value = psi(w, ref, thresholds.eps)
    stat, p_value = chi2_homogeneity(w, ref)
    return DriftResult(
        psi=psi_value,
        jsd=jsd(w, ref),
        chi2=stat,
        p_value=p_value,
        sample_size=n,
        baseline_size=m,
        status=decide(psi_value, p_value, n, m, thresholds),
    )
