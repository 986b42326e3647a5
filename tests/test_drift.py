"""Drift statistics against independent references, and the small-window alert decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from streams.config import WorkerSettings
from workers.baseline import FeatureBaseline
from workers.drift import DriftSettings, DriftThresholds, decide, evaluate
from workers.stats import chi2_homogeneity, jsd, psi


def _seeded_pairs(n_pairs: int = 20, bins: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """Count vectors with some empty bins on one side, the other, or both."""
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(n_pairs):
        p = rng.multinomial(rng.integers(30, 400), rng.dirichlet(np.ones(bins)))
        q = rng.multinomial(rng.integers(30, 400), rng.dirichlet(np.ones(bins)))
        p[rng.integers(0, bins)] = 0
        q[rng.integers(0, bins)] = 0
        both = rng.integers(0, bins)
        p[both] = q[both] = 0
        pairs.append((p, q))
    return pairs


def test_psi_hand_computed() -> None:
    expected = (0.5 - 0.7) * math.log(0.5 / 0.7) + (0.5 - 0.3) * math.log(0.5 / 0.3)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.1694596, abs=1e-7)
    # counts are normalized; an empty bin is floored at eps (not renormalized)
    eps = 1e-4
    expected_empty = (1.0 - 0.5) * math.log(1.0 / 0.5) + (eps - 0.5) * math.log(eps / 0.5)
    assert psi([10, 0], [5, 5], eps=eps) == pytest.approx(expected_empty, rel=1e-12)
    assert psi([3, 4, 5], [3, 4, 5]) == 0.0


@pytest.mark.parametrize("eps", [1e-4, 1e-3])
def test_psi_matches_a_loop_on_seeded_data_with_empty_bins(eps: float) -> None:
    for p, q in _seeded_pairs():
        ps, qs = p / p.sum(), q / q.sum()
        total = 0.0
        for a, b in zip(ps, qs, strict=True):
            a, b = max(a, eps), max(b, eps)
            total += (a - b) * math.log(a / b)
        assert psi(p, q, eps=eps) == pytest.approx(total, rel=1e-10)
        assert psi(p, q, eps=eps) == pytest.approx(psi(q, p, eps=eps), rel=1e-12)  # symmetric


def test_jsd_is_scipys_distance_squared_with_empty_bins() -> None:
    for p, q in _seeded_pairs():
        reference = jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2
        assert jsd(p, q) == pytest.approx(reference, abs=1e-12)
        assert 0.0 <= jsd(p, q) <= 1.0
    assert jsd([1, 0], [0, 1]) == 1.0
    assert jsd([2, 2], [5, 5]) == 0.0


def test_chi2_homogeneity_matches_scipy_contingency() -> None:
    for p, q in _seeded_pairs():
        stat, p_value = chi2_homogeneity(p, q)
        keep = (p + q) > 0  # scipy cannot take all-zero columns; we drop them
        ref = chi2_contingency(np.vstack([p[keep], q[keep]]), correction=False)
        assert stat == pytest.approx(ref.statistic, rel=1e-10)
        assert p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    # nothing to test: one non-empty bin, or an empty sample
    assert chi2_homogeneity([5, 0, 0], [7, 0, 0]) == (0.0, 1.0)
    assert chi2_homogeneity([0, 0], [3, 4]) == (0.0, 1.0)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        jsd([1, -1], [1, 1])
    with pytest.raises(ValueError, match="sums to 0"):
        psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="eps"):
        psi([1, 1], [1, 1], eps=0)
    with pytest.raises(ValueError, match="equal length"):
        chi2_homogeneity([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="psi_warn"):
        DriftThresholds(psi_warn=0.3, psi_alert=0.2)
    with pytest.raises(ValueError, match="alpha"):
        DriftThresholds(alpha=1.5)
    with pytest.raises(ValueError, match="min_samples"):
        DriftThresholds(min_samples=0)


def _uniform_baseline(bins: int = 16, per_bin: int = 40) -> FeatureBaseline:
    return FeatureBaseline.from_counts("embedding", None, [per_bin] * bins)


def test_evaluate_statuses() -> None:
    t = DriftThresholds()
    base = _uniform_baseline(2, 5000)
    ok = evaluate(np.array([2500, 2500]), base, t)
    assert ok.status == "ok" and ok.psi == 0.0 and ok.p_value == pytest.approx(1.0)
    warn = evaluate(np.array([3300, 1700]), base, t)  # PSI ~0.106, p ~ 0
    assert 0.1 <= warn.psi < 0.2 and warn.p_value < 1e-10 and warn.status == "warn"
    alert = evaluate(np.array([4000, 1000]), base, t)
    assert alert.psi >= 0.2 and alert.status == "alert"
    assert (alert.sample_size, alert.baseline_size) == (5000, 10000)
    few = evaluate(np.array([29, 0]), base, t)
    assert few.status == "insufficient" and few.psi > 0.2  # the statistics are still reported
    empty = evaluate(np.zeros(2, dtype=int), base, t)
    assert empty.status == "insufficient" and empty.p_value == 1.0 and empty.psi == 0.0
    with pytest.raises(ValueError, match="3 bins"):
        evaluate(np.array([1, 2, 3]), base, t)


def test_decide_needs_effect_size_and_significance() -> None:
    t = DriftThresholds(psi_warn=0.1, psi_alert=0.2, alpha=0.01, min_samples=30)
    assert decide(0.9, 0.5, 100, 600, t) == "ok"  # big PSI, not significant: noise
    assert decide(0.05, 1e-9, 10**6, 600, t) == "ok"  # significant but tiny shift
    assert decide(0.15, 0.001, 100, 600, t) == "warn"
    assert decide(0.25, 0.001, 100, 600, t) == "alert"
    assert decide(0.25, 0.001, 100, 20, t) == "insufficient"  # baseline too small


def test_small_in_distribution_windows_do_not_alert_while_bare_psi_would() -> None:
    """The issue's failure mode: PSI > 0.2 on most 100-event windows of unchanged traffic."""
    rng = np.random.default_rng(11)
    shares = rng.dirichlet(np.full(16, 4.0))
    base = FeatureBaseline.from_counts("embedding", None, rng.multinomial(600, shares).tolist())
    t = DriftThresholds()
    bare = alerts = 0
    for _ in range(400):
        result = evaluate(rng.multinomial(100, shares), base, t)
        bare += result.psi >= t.psi_alert
        alerts += result.status == "alert"
    assert bare / 400 > 0.3  # the bare rule would page on a large share of quiet windows
    assert alerts / 400 <= 0.03

    shifted = rng.dirichlet(np.full(16, 0.3))  # a different mix of clusters
    detected = sum(
        evaluate(rng.multinomial(100, shifted), base, t).status == "alert" for _ in range(200)
    )
    assert detected / 200 >= 0.95


def test_drift_settings_thresholds_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRYML_DRIFT_PSI_ALERT", "0.25")
    monkeypatch.setenv("SENTRYML_DRIFT_MODELS", '{"chatty": {"psi_alert": 0.5, "alpha": 0.001}}')
    settings = WorkerSettings().drift
    assert settings.thresholds_for("other") == DriftThresholds(psi_alert=0.25)
    assert settings.thresholds_for("chatty") == DriftThresholds(psi_alert=0.5, alpha=0.001)
    assert settings.interval_s == 60 and settings.renotify_s == 3600
    with pytest.raises(ValueError, match=r"drift.models\['bad'\]"):
        DriftSettings(models={"bad": {"psi_warn": 0.9}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="alert_windows"):
        DriftSettings(windows=("1h",), alert_windows=("7d",))
