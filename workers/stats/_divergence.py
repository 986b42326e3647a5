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
- :func:`homogeneity_p_value` — the same test's p-value, exact where the chi-square
  approximation is not: Fisher's exact test for two bins and a seeded Monte-Carlo
  permutation test (conditional on the bin totals) whenever an expected count is below 5,
  e.g. a 1 % bin or a 0.5 % refusal rate in a 100-event window.
- :func:`holm` — Holm's step-down adjustment, so that one evaluation (every feature of every
  window of one model) raises a false alarm with probability at most ``alpha``, not each test.
- :func:`evaluate` — the decision for one feature on one window; :func:`evaluate_novelty` for
  the ``novelty`` feature, whose effect size is the share of traffic unlike the training
  data (:mod:`workers.stats`) rather than PSI.

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
>>> from workers.drift import DriftThresholds, evaluate
>>> base = FeatureBaseline("embedding", None, (0.5, 0.5), (300, 300))
>>> evaluate(np.array([50, 50]), base, DriftThresholds()).status
'ok'
>>> evaluate(np.array([95, 5]), base, DriftThresholds()).status
'alert'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as _stats

if TYPE_CHECKING:
    pass


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


#: Permutation tables drawn when the chi-square approximation is not trusted. The smallest
#: p-value it can give is 1 / (MC_SIMULATIONS + 1), well below the smallest Holm threshold
#: of an evaluation (alpha / 18 for 6 features x 3 windows at alpha = 0.01).
MC_SIMULATIONS = 9_999
#: Cochran's rule: the chi-square law is trusted when every expected count is at least this.
MIN_EXPECTED = 5.0


def _seed(*arrays: np.ndarray) -> int:
    # Same counts, same p-value: a stored drift_stats row can be reproduced exactly.
    h = hashlib.sha256(b"".join(np.ascontiguousarray(a, dtype=np.int64).tobytes() for a in arrays))
    return int.from_bytes(h.digest()[:8], "little")


def monte_carlo_p_value(
    draw: Callable[[int], np.ndarray], observed: float, simulations: int, hits: int = 20
) -> float:
    """A Monte-Carlo p-value ``P(T >= observed)`` that stops early when it is clearly large.

    Besag and Clifford's sequential rule (1991): draw null statistics until ``hits`` of them
    reach the observed one — after ``l`` draws the p-value is ``hits / l`` — or until
    ``simulations`` draws, then ``(1 + h) / (1 + simulations)``. Both are valid p-values;
    the early stop saves draws only where the answer is far from any threshold.
    """
    tol = 1e-9 * max(1.0, abs(observed))
    drawn = found = 0
    batch = 500
    while drawn < simulations:
        size = min(batch, simulations - drawn)
        reach = draw(size) >= observed - tol
        cum = found + np.cumsum(reach)
        if cum[-1] >= hits:
            stop = int(np.argmax(cum >= hits)) + 1
            return hits / (drawn + stop)
        found, drawn = int(cum[-1]), drawn + size
        batch *= 2
    return (1 + found) / (1 + simulations)


def homogeneity_p_value(
    window_counts: Any, baseline_counts: Any, *, simulations: int = MC_SIMULATIONS
) -> tuple[float, float]:
    """``(chi-square statistic, p-value)`` of homogeneity, exact where counts are small.

    When every expected count is at least :data:`MIN_EXPECTED` this is
    :func:`chi2_homogeneity`. Otherwise the chi-square law overstates the evidence (a bin
    expected to hold 0.5 events that holds 3 is "significant" far more often than
    ``alpha``), so the p-value is exact instead: Fisher's test for two bins, else the share
    of ``simulations`` tables drawn with the same bin totals and sample sizes (multivariate
    hypergeometric, the permutation law under homogeneity) whose statistic is at least the
    observed one, ``(1 + hits) / (1 + simulations)``. The draws are seeded by the counts.

    >>> w, ref = [97, 3], [597, 3]  # 3 % vs 0.5 %: under one expected refusal
    >>> round(chi2_homogeneity(w, ref)[1], 3), round(homogeneity_p_value(w, ref)[1], 3)
    (0.012, 0.041)
    """
    stat, p_value = chi2_homogeneity(window_counts, baseline_counts)
    w = np.asarray(window_counts, dtype=np.int64)
    b = np.asarray(baseline_counts, dtype=np.int64)
    keep = (w + b) > 0
    w, b = w[keep], b[keep]
    n_w, n_b = int(w.sum()), int(b.sum())
    if w.size < 2 or n_w == 0 or n_b == 0 or stat == 0.0:
        return stat, p_value
    col = w + b
    total = n_w + n_b
    expected_w = col * n_w / total
    expected_b = col * n_b / total
    if min(expected_w.min(), expected_b.min()) >= MIN_EXPECTED:
        return stat, p_value
    if w.size == 2:
        return stat, float(_stats.fisher_exact(np.vstack([w, b]))[1])
    rng = np.random.default_rng(_seed(w, b))

    def draw(size: int) -> np.ndarray:
        # The permutation law: bin by bin, hypergeometric given what is left.
        left = np.full(size, n_w, dtype=np.int64)
        pool = int(total)
        sims = np.empty((size, col.size), dtype=np.float64)
        for i, c in enumerate(col[:-1]):
            pool -= int(c)
            x = rng.hypergeometric(int(c), pool, left) if pool else left.copy()
            sims[:, i] = x
            left = left - x
        sims[:, -1] = left
        return np.sum(
            (sims - expected_w) ** 2 / expected_w + (col - sims - expected_b) ** 2 / expected_b,
            axis=1,
        )

    return stat, monte_carlo_p_value(draw, stat, simulations)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject test ``i`` when ``adjusted[i] < alpha``.

    The family-wise error rate (any false rejection among the tests) is then at most
    ``alpha`` for any dependence between the tests — windows that overlap (1 h inside 24 h)
    and features of the same events are dependent.

    >>> holm([0.01, 0.04, 0.03, 0.5])
    [0.04, 0.09, 0.09, 0.5]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [round(float(x), 15) for x in adjusted]
