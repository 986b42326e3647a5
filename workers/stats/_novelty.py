"""How much of a window is unlike the training data: conformal novelty bins and their share.

The question an operator asks of input drift is "what share of my traffic is new?". PSI
over clusters does not answer it (it shrinks as windows grow and mixes "new" with "a
different mix of the old"), and a bin for prompts far from every *centroid* misses most
off-topic text on real data. This module answers it in three pure steps.

1. **Typicality** (:func:`knn_typicality`): the mean cosine similarity of a prompt to its
   ``k`` nearest neighbours in a memory of fitting-split embeddings. A centroid summarizes
   a cluster by its mean; neighbours keep the shape of the training data, so text that sits
   between clusters or at their edge scores low.
2. **Calibration** (:func:`calibrate`): the typicality of each held-out reference prompt
   (scored against the same memory, exactly as production will be) defines conformal
   p-values, ``p(x) = (1 + #{reference scores <= s(x)}) / (m + 1)``. Under no drift a
   production prompt is exchangeable with the reference prompts, so ``P(p <= t) <= t``
   whatever the embedder or the data. The p-value is binned at :data:`P_EDGES`; since
   ``p <= t`` is the same as "score below the ``K_t``-th smallest reference score", the bins
   are plain score edges and count like every other feature (``workers.baseline``'s
   ``FeatureBaseline``): workers add counts, the store sums them.
3. **Share** (:func:`off_distribution_share`): in-distribution prompts fall below the
   reference median typicality (``p <= 1/2``) half of the time; off-distribution prompts
   almost always do. With a share ``pi`` of them, a window's rate of ``p <= 1/2`` is
   ``(1 - pi) tau + pi`` (``tau`` ~ 1/2, the null rate), so
   ``pi = (rate - tau) / (1 - tau)`` — Storey's estimator of the non-null share at
   ``lambda = 1/2``. A stricter cut (``p <= 0.05``) would assume every off-topic prompt is
   less typical than 95 % of the training prompts; on real text (Debian descriptions, see
   docs/drift.md) only 15–80 % of other-topic prompts are, so that estimate would be biased
   low by half, while 85–100 % are below the median. The interval combines an exact
   Clopper–Pearson interval of the window's rate with the Beta law of ``tau``.
4. **Test** (:func:`novelty_test`): is the window less typical than the training data?
   Fisher's combination of the conformal p-values (the mean of ``-log p``, binned: each bin
   scores ``E[-log U | U in bin]``), one-sided, with its exact null law under the reference
   (Dirichlet-multinomial, below) by seeded Monte Carlo. Fisher's combination weighs the
   strongly novel prompts most, so a quarter of off-topic prompts shows in 100 events.

Why the reference counts are "spacings", and the exact null law
----------------------------------------------------------------
Cutting at reference order statistics makes the true (population) share of each bin a
random variable: for ``m`` reference scores the shares of the gaps between order
statistics are Dirichlet(1, ..., 1) (``m + 1`` gaps). A bin holding ``a`` gaps therefore has
share ``~ Beta(a, m + 1 - a)`` and a window's count in it is **Beta-binomial**
``(n, a, m + 1 - a)``. So the baseline stores, per bin, the number of gaps it holds (they
sum to ``m + 1``), and :func:`novelty_test` draws its null from exactly that law: it holds its
level for any window size, including the reference sample's own noise, which dominates on
large windows.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> reference = rng.normal(size=599)            # scores of 599 held-out prompts
>>> cal = calibrate(reference)
>>> cal.counts                                  # gaps per bin; they sum to m + 1 = 600
(6, 24, 30, 60, 180, 300)
>>> est = off_distribution_share(np.array([40, 30, 3, 6, 9, 12]), cal.counts)
>>> round(est.share, 2), est.p_value < 1e-3
(0.76, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _stats

from workers.stats._divergence import monte_carlo_p_value

#: Upper edges of the p-value bins. The first bins are narrow so that the rare, strongly
#: novel prompts are counted on their own; the last is everything at least as typical as
#: the median reference prompt.
P_EDGES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
#: The share estimate counts ``p <= SHARE_P``: prompts less typical than the median
#: held-out training prompt (see the module docstring for why not a stricter cut).
SHARE_P = 0.5
#: Monte-Carlo draws of the test's null law (smallest p-value 1e-4).
SIMULATIONS = 9_999
#: Neighbours averaged for the typicality score.
DEFAULT_NEIGHBOURS = 5
#: Fitting-split embeddings kept in the baseline as the neighbour memory (float16).
DEFAULT_MEMORY = 1000
#: Confidence of the share interval.
DEFAULT_CONFIDENCE = 0.95


def knn_typicality(
    embeddings: np.ndarray, memory: np.ndarray, k: int = DEFAULT_NEIGHBOURS
) -> np.ndarray:
    """Mean cosine similarity of each row to its ``k`` most similar memory rows (float64).

    Rows of both arrays are L2-normalized here, so any embeddings work.

    >>> mem = np.eye(3, dtype=np.float32)
    >>> knn_typicality(np.array([[1.0, 0.0, 0.0]]), mem, k=1).tolist()
    [1.0]
    >>> knn_typicality(np.array([[1.0, 1.0, 0.0]]), mem, k=2).round(4).tolist()
    [0.7071]
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    mem = np.asarray(memory, dtype=np.float32)
    if emb.ndim != 2 or mem.ndim != 2 or (emb.size and emb.shape[1] != mem.shape[1]):
        raise ValueError(f"embeddings {emb.shape} and memory {mem.shape} must be 2-D, same width")
    if not 1 <= k <= mem.shape[0]:
        raise ValueError(f"k must be in [1, {mem.shape[0]}] (memory rows), got {k}")
    if emb.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    mem = mem / np.maximum(np.linalg.norm(mem, axis=1, keepdims=True), 1e-12)
    sims = emb @ mem.T
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k :]
    return top.mean(axis=1, dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """Score edges of the p-value bins and the reference gaps each bin holds.

    ``edges[i]`` is the reference score under which ``p <= p_edges[i]``; ``counts`` sum to
    ``m + 1``. Bins whose edges coincide (tied reference scores) are merged, so
    ``p_edges`` lists the edges actually kept.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    p_edges: tuple[float, ...]


def calibrate(reference_scores: np.ndarray, p_edges: tuple[float, ...] = P_EDGES) -> Calibration:
    """Bins of the conformal p-value from the reference split's typicality scores.

    ``p <= t`` holds exactly when the score is below the ``K``-th smallest reference score,
    ``K = floor(t (m + 1))``; a ``t`` with ``K = 0`` (too few reference prompts) is dropped.
    """
    scores = np.sort(np.asarray(reference_scores, dtype=np.float64))
    m = scores.size
    if m < 2 or not np.all(np.isfinite(scores)):
        raise ValueError(f"need at least 2 finite reference scores, got {m}")
    if any(not 0 < t < 1 for t in p_edges) or list(p_edges) != sorted(set(p_edges)):
        raise ValueError(f"p_edges must increase strictly inside (0, 1), got {p_edges}")
    edges: list[float] = []
    gaps: list[int] = []
    kept: list[float] = []
    below = 0
    for t in p_edges:
        k = math.floor(t * (m + 1) + 1e-9)
        if k < 1:
            continue
        edge = float(scores[k - 1])
        if edges and edge <= edges[-1]:  # tied scores: this bin would be empty, merge it
            continue
        edges.append(edge)
        gaps.append(k - below)
        kept.append(t)
        below = k
    gaps.append(m + 1 - below)
    return Calibration(tuple(edges), tuple(gaps), tuple(kept))


def novel_bin_count(
    reference_counts: tuple[int, ...] | np.ndarray, novel_p: float = SHARE_P
) -> int:
    """How many leading bins hold ``p <= novel_p``, from the gaps per bin.

    The first ``j`` bins hold ``p <= t_j`` and ``K_j = floor(t_j (m + 1))`` gaps, so their
    share ``K_j / (m + 1)`` is at most ``t_j``; the novel bins are the leading ones whose
    cumulative share does not pass ``novel_p``.

    >>> novel_bin_count((6, 24, 30, 60, 180, 300))
    5
    >>> novel_bin_count((6, 24, 30, 60, 180, 300), novel_p=0.05)
    2
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cum = np.cumsum(ref) / ref.sum()
    n = int(np.sum(cum[:-1] <= novel_p + 1e-12))
    if n == 0:
        raise ValueError(f"no novelty bin at or below p = {novel_p}: {tuple(ref.astype(int))}")
    return n


@dataclass(frozen=True)
class ShareEstimate:
    """The estimated off-distribution share of one window, its interval and exact test.

    ``observed`` is the window's rate of ``p <= SHARE_P``, ``expected`` the null rate (the
    reference's), ``p_value`` the one-sided test (:func:`novelty_test`) that the window is
    less typical than the training data.
    """

    share: float
    low: float
    high: float
    observed: float
    expected: float
    p_value: float
    novel: int
    sample_size: int

    @property
    def margin(self) -> float:
        """Half the interval's width, for "27 % ± 6 %"."""
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bin_scores(reference_counts: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """``E[-log U | U in bin]`` of each p-value bin, from the bins' shares (their edges).

    ``-log U`` of a uniform U has mean 1; the bin ``(a, b]`` scores
    ``1 - (b log b - a log a) / (b - a)``.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    hi = np.cumsum(ref) / ref.sum()
    lo = np.concatenate([[0.0], hi[:-1]])

    def xlogx(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x * np.log(np.maximum(x, 1e-300)), 0.0)

    return 1.0 - (xlogx(hi) - xlogx(lo)) / np.maximum(hi - lo, 1e-300)


def novelty_test(
    window_counts: np.ndarray,
    reference_counts: tuple[int, ...] | np.ndarray,
    simulations: int = SIMULATIONS,
) -> float:
    """One-sided p-value that the window is less typical than the reference allows.

    The statistic is the window's total bin score (:func:`bin_scores`, Fisher's
    ``-log p``); its null law is drawn exactly: bin shares ``~ Dirichlet(reference gaps)``,
    then the window's counts ``~ Multinomial(n, shares)``. Seeded by the counts, so a stored
    row reproduces; ``(1 + hits) / (1 + simulations)``.

    >>> novelty_test(np.array([3, 9, 8, 12, 30, 38]), (6, 24, 30, 60, 180, 300)) < 1e-3
    True
    >>> novelty_test(np.array([1, 4, 5, 10, 30, 50]), (6, 24, 30, 60, 180, 300)) > 0.3
    True
    """
    w = np.asarray(window_counts, dtype=np.int64)
    ref = np.asarray(reference_counts, dtype=np.float64)
    n = int(w.sum())
    if n == 0:
        return 1.0
    scores = bin_scores(ref)
    observed = float(w @ scores)
    digest = hashlib.sha256(w.tobytes() + ref.tobytes()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def draw(size: int) -> np.ndarray:
        return rng.multinomial(n, rng.dirichlet(ref, size=size)) @ scores

    return monte_carlo_p_value(draw, observed, simulations)


def _clopper_pearson(x: int, n: int, gamma: float) -> tuple[float, float]:
    lo = 0.0 if x == 0 else float(_stats.beta.ppf(gamma / 2, x, n - x + 1))
    hi = 1.0 if x == n else float(_stats.beta.ppf(1 - gamma / 2, x + 1, n - x))
    return lo, hi


def off_distribution_share(
    window_counts: np.ndarray,
    reference_counts: tuple[int, ...] | np.ndarray,
    n_novel_bins: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ShareEstimate:
    """Share of the window unlike the training data, from the novelty feature's counts.

    ``reference_counts`` are the baseline's gaps per bin (:class:`Calibration`), the first
    ``n_novel_bins`` bins (default: those with ``p <= NOVEL_P``) are the novel ones. The interval spends ``1 - confidence`` half on
    the window's rate (Clopper–Pearson) and half on the null rate's Beta law, so it stays
    honest on large windows, where the reference's own noise dominates.
    """
    w = np.asarray(window_counts, dtype=np.int64)
    ref = np.asarray(reference_counts, dtype=np.int64)
    if n_novel_bins is None:
        n_novel_bins = novel_bin_count(ref)
    if w.shape != ref.shape or w.ndim != 1 or not 0 < n_novel_bins < ref.size:
        raise ValueError(
            f"window {w.shape} and reference {ref.shape} need the same bins, and "
            f"0 < n_novel_bins={n_novel_bins} < bins"
        )
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    n, x = int(w.sum()), int(w[:n_novel_bins].sum())
    a, total = int(ref[:n_novel_bins].sum()), int(ref.sum())
    tau = a / total
    if n == 0:
        return ShareEstimate(0.0, 0.0, 1.0, 0.0, tau, 1.0, 0, 0)
    gamma = (1 - confidence) / 2
    q_lo, q_hi = _clopper_pearson(x, n, gamma)
    tau_lo = float(_stats.beta.ppf(gamma / 2, a, total - a))
    tau_hi = float(_stats.beta.ppf(1 - gamma / 2, a, total - a))
    rate = x / n

    def share(q: float, t: float) -> float:
        return min(1.0, max(0.0, (q - t) / (1 - t)))

    return ShareEstimate(
        share=share(rate, tau),
        low=share(q_lo, tau_hi),
        high=share(q_hi, tau_lo),
        observed=rate,
        expected=tau,
        p_value=novelty_test(w, ref),
        novel=x,
        sample_size=n,
    )
