"""Off-distribution share and tests that hold alpha: seeded data, no broker, no model.

The null checks simulate what production does: a fresh calibration sample per trial (the
reference's own noise is part of the null), windows of 100 to 2,000 events, and a whole
evaluation of 6 features x 3 nested windows judged together.
"""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats

import workers.drift._decide
import workers.stats._divergence
import workers.stats._novelty
from workers.baseline import Baseline, FeatureBaseline, save_baseline
from workers.drift import DriftThresholds, decide_evaluation, evaluate, evaluate_drift
from workers.stats import (
    bin_scores,
    calibrate,
    chi2_homogeneity,
    holm,
    homogeneity_p_value,
    knn_typicality,
    novel_bin_count,
    off_distribution_share,
)


@pytest.mark.parametrize(
    "module", [workers.stats._novelty, workers.stats._divergence, workers.drift._decide]
)
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_calibration_bins_are_the_conformal_p_value() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=299)
    cal = calibrate(reference)
    # K_t = floor(t * 300): 3, 15, 30, 60, 150 -> gaps 3, 12, 15, 30, 90, 150 (sum m + 1)
    assert cal.counts == (3, 12, 15, 30, 90, 150)
    fb = FeatureBaseline.from_counts("novelty", cal.edges, cal.counts)
    probe = rng.normal(size=2000)
    ranks = np.searchsorted(np.sort(reference), probe, side="right")
    p = (1 + ranks) / 300  # the textbook conformal p-value, P(reference <= score)
    expected_bin = np.searchsorted(np.array(cal.p_edges), p, side="left")
    np.testing.assert_array_equal(fb.assign(probe), expected_bin)
    assert novel_bin_count(cal.counts) == 5 and novel_bin_count(cal.counts, 0.05) == 2
    # tied reference scores merge bins instead of making an empty one
    tied = calibrate(np.array([0.5] * 50 + list(np.linspace(0.6, 1, 49))))
    assert len(tied.edges) == len(tied.counts) - 1 and sum(tied.counts) == 100
    with pytest.raises(ValueError, match="reference scores"):
        calibrate(np.array([1.0]))


def test_bin_scores_are_fishers_minus_log_p() -> None:
    scores = bin_scores((1, 1))  # bins (0, 1/2] and (1/2, 1]
    assert scores[0] == pytest.approx(1 - np.log(0.5))
    assert scores[1] == pytest.approx(1 - (0 - 0.5 * np.log(0.5)) / 0.5)
    assert np.dot([0.5, 0.5], scores) == pytest.approx(1.0)  # E[-log U] = 1


def test_knn_typicality_matches_a_loop() -> None:
    rng = np.random.default_rng(2)
    memory = rng.normal(size=(50, 8)).astype(np.float16)
    probe = rng.normal(size=(7, 8))
    got = knn_typicality(probe, memory, k=3)
    mem = memory.astype(np.float32)
    mem /= np.linalg.norm(mem, axis=1, keepdims=True)
    for row, value in zip(probe, got, strict=True):
        sims = sorted(mem @ (row / np.linalg.norm(row)), reverse=True)
        assert value == pytest.approx(np.mean(sims[:3]), abs=1e-5)
    with pytest.raises(ValueError, match="k must be"):
        knn_typicality(probe, memory, k=51)


@pytest.mark.parametrize("n", [100, 500, 2000])
def test_novelty_test_holds_alpha_with_the_reference_noise(n: int) -> None:
    """Unchanged traffic: the exact test rejects at most alpha of the time, whatever n."""
    rng = np.random.default_rng(n)
    trials, rejections, covered = 600, {0.01: 0, 0.05: 0}, 0
    for _ in range(trials):
        cal = calibrate(rng.normal(size=599))  # a fresh calibration sample every trial
        fb = FeatureBaseline.from_counts("novelty", cal.edges, cal.counts)
        counts = np.bincount(fb.assign(rng.normal(size=n)), minlength=fb.bins)
        est = off_distribution_share(counts, cal.counts)
        for alpha in rejections:
            rejections[alpha] += est.p_value < alpha
        covered += est.low <= 0.0 <= est.high
    # binomial slack: 600 trials, 3 sd above alpha
    assert rejections[0.01] / trials <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / trials)
    assert rejections[0.05] / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
    assert covered / trials >= 0.93  # the 95 % interval holds the true share, 0


@pytest.mark.parametrize(("n", "share"), [(100, 0.5), (500, 0.25), (2000, 0.1)])
def test_share_interval_covers_a_mixed_in_share(n: int, share: float) -> None:
    """Off-distribution prompts below every reference prompt: the estimate is unbiased and
    its interval covers the true share; the test finds the shift."""
    rng = np.random.default_rng(int(share * 100) + n)
    trials, covered, detected, estimates = 300, 0, 0, []
    for _ in range(trials):
        cal = calibrate(rng.normal(size=599))
        fb = FeatureBaseline.from_counts("novelty", cal.edges, cal.counts)
        k = round(n * share)
        scores = np.concatenate([rng.normal(size=n - k), rng.normal(-4, 0.5, size=k)])
        est = off_distribution_share(np.bincount(fb.assign(scores), minlength=fb.bins), cal.counts)
        covered += est.low <= share <= est.high
        detected += est.p_value < 0.01
        estimates.append(est.share)
    assert covered / trials >= 0.92
    assert abs(np.mean(estimates) - share) < 0.02
    assert detected / trials >= 0.9


def test_novelty_decision_speaks_in_shares() -> None:
    cal = calibrate(np.random.default_rng(3).normal(size=599))
    fb = FeatureBaseline.from_counts("novelty", cal.edges, cal.counts)
    t = DriftThresholds(share_warn=0.05, share_alert=0.15)
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.normal(size=300), np.full(200, -5.0)])  # 40 % new
    result = evaluate(np.bincount(fb.assign(scores), minlength=fb.bins), fb, t)
    assert result.status == "alert" and result.share is not None
    assert result.share_low is not None and result.share_high is not None
    assert result.share_low <= 0.4 <= result.share_high and result.baseline_size == 599
    quiet = evaluate(np.bincount(fb.assign(rng.normal(size=300)), minlength=fb.bins), fb, t)
    assert quiet.status == "ok"
    with pytest.raises(ValueError, match="share_warn"):
        DriftThresholds(share_warn=0.3, share_alert=0.2)


def test_pearson_rejects_too_often_on_small_expected_counts_and_the_exact_test_does_not() -> None:
    """A 1 % novelty bin and 16 clusters at n = 100: some expected counts are near 1."""
    rng = np.random.default_rng(5)
    shares = np.r_[np.full(16, 0.99 / 16), 0.01]
    trials = 1500
    pearson = exact = 0
    for _ in range(trials):
        ref = rng.multinomial(600, shares)
        w = rng.multinomial(100, shares)
        pearson += chi2_homogeneity(w, ref)[1] < 0.01
        exact += homogeneity_p_value(w, ref)[1] < 0.01
    slack = 3 * np.sqrt(0.01 * 0.99 / trials)
    assert exact / trials <= 0.01 + slack
    assert pearson > exact  # the asymptotic law overstates the evidence here


def test_refusal_share_uses_fishers_exact_test() -> None:
    _, p = homogeneity_p_value([97, 3], [597, 3])
    assert p == pytest.approx(stats.fisher_exact([[97, 3], [597, 3]])[1])
    assert chi2_homogeneity([97, 3], [597, 3])[1] < 0.05 < 1  # Pearson would call it
    # large expected counts: the chi-square law itself
    assert homogeneity_p_value([300, 200], [320, 280]) == chi2_homogeneity([300, 200], [320, 280])


def test_holm_hand_computed() -> None:
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, 3*0.03, max(0.09, 2*0.04), max(0.09, 0.5)
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.9, 0.9]) == [1.0, 1.0] and holm([]) == []


def _null_evaluation(
    rng: np.random.Generator,
    baselines: dict[str, FeatureBaseline],
    truth: dict[str, np.ndarray],
) -> bool:
    """One evaluation of unchanged traffic: 6 features x nested 1 h / 24 h / 7 d windows."""
    results = []
    for name, fb in baselines.items():
        per_hour = 60  # a quiet model: 60 events an hour, 1 h ⊂ 24 h ⊂ 7 d
        if name == "novelty":
            scores = rng.normal(size=per_hour * 24 * 7)
            bins = fb.assign(scores)
        else:
            bins = rng.choice(fb.bins, size=per_hour * 24 * 7, p=truth[name])
        for hours in (1, 24, 24 * 7):
            counts = np.bincount(bins[: per_hour * hours], minlength=fb.bins)
            results.append(evaluate(counts, fb, DriftThresholds()))
    return any(s in ("warn", "alert") for s, _ in decide_evaluation(results, DriftThresholds()))


def test_false_alarms_per_evaluation_stay_under_alpha() -> None:
    """The monitor's rate, not one test's: every feature, every window, judged together.

    Reference counts are drawn afresh each trial (a 600-event reference split), including
    a 1 % bin and a 0.5 % refusal rate — the cases where Pearson's law fails."""
    rng = np.random.default_rng(6)
    emb_shares = np.r_[np.full(16, 0.975 / 16), 0.025]
    out_shares = np.full(10, 0.1)
    trials, alarms = 150, 0
    for _ in range(trials):
        cal = calibrate(rng.normal(size=599))
        baselines = {
            "embedding": FeatureBaseline.from_counts(
                "embedding", None, rng.multinomial(600, emb_shares).tolist()
            ),
            "novelty": FeatureBaseline.from_counts("novelty", cal.edges, cal.counts),
            "output_length": FeatureBaseline.from_counts(
                "output_length", None, rng.multinomial(600, out_shares).tolist()
            ),
            "ttr": FeatureBaseline.from_counts(
                "ttr", None, rng.multinomial(600, out_shares).tolist()
            ),
            "distinct2": FeatureBaseline.from_counts(
                "distinct2", None, rng.multinomial(600, out_shares).tolist()
            ),
            "refusal": FeatureBaseline.from_counts(
                "refusal", None, rng.multinomial(600, [0.995, 0.005]).tolist()
            ),
        }
        truth = {"embedding": emb_shares, "refusal": np.array([0.995, 0.005])}
        truth |= {f: out_shares for f in ("output_length", "ttr", "distinct2")}
        alarms += _null_evaluation(rng, baselines, truth)
    # alpha = 0.01 per evaluation; 150 trials: allow 3 sd of binomial noise (<= ~3 %)
    assert alarms / trials <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / trials)


def _hand_baseline(rng: np.random.Generator) -> Baseline:
    cal = calibrate(rng.normal(size=599))
    features = {
        "embedding": FeatureBaseline.from_counts("embedding", None, [150, 150, 150, 150]),
        "novelty": FeatureBaseline.from_counts("novelty", cal.edges, cal.counts),
    }
    return Baseline(
        baseline_id="bl-novelty-test",
        base_model="m",
        adapter_version="v1",
        embedder="minilm-l6-v2",
        k=4,
        centroids=np.eye(4, 8, dtype=np.float32),
        features=features,
        n_fit=1400,
        n_reference=600,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        memory=np.eye(8, dtype=np.float16),
    )


def test_evaluator_reports_the_share_and_alerts_in_its_unit(store: Any) -> None:
    """Counts in the store -> a novelty drift_stats row with share and interval, adjusted
    p-values on every row, and an alert that says what share of prompts is new."""
    rng = np.random.default_rng(8)
    baseline = _hand_baseline(rng)
    save_baseline(store, baseline)
    now = datetime.now(UTC).replace(second=30)  # recent: window_counts has a 90-day TTL
    fb = baseline.features["novelty"]
    scores = np.concatenate([rng.normal(size=300), np.full(100, -5.0)])  # 25 % new
    rows = []
    for feature, bins in (
        ("novelty", fb.assign(scores)),
        ("embedding", rng.integers(0, 4, size=400)),
    ):
        for b, n in enumerate(np.bincount(bins)):
            rows.append(
                {
                    "base_model": "m",
                    "adapter_version": "v1",
                    "baseline_id": baseline.baseline_id,
                    "feature": feature,
                    "bucket": now.replace(second=0) - timedelta(hours=2),
                    "bin": b,
                    "count": int(n),
                }
            )
    store.insert("window_counts", rows)
    stats, alerts = evaluate_drift(store, now, lambda _m: DriftThresholds(), windows=("24h", "7d"))
    store.insert("drift_stats", [s.to_row() for s in stats])  # the migration's columns exist
    novelty = [s for s in stats if s.feature == "novelty"]
    assert [s.window for s in novelty] == ["24h", "7d"] and all(
        s.status == "alert" for s in novelty
    )
    s = novelty[0]
    assert s.share is not None and s.share_low is not None and s.share_high is not None
    assert s.share_low <= 0.25 <= s.share_high and s.sample_size == 400
    assert all(x.p_adjusted is not None and x.p_adjusted >= x.p_value for x in stats)
    emb = [x for x in stats if x.feature == "embedding"]
    assert all(x.status == "ok" for x in emb)
    alert = next(a for a in alerts if a.feature == "novelty" and a.window == "24h")
    assert alert.kind == "embedding_drift" and alert.value == s.share and alert.threshold == 0.15
    assert "of the last 24 h's prompts look unlike the training data" in alert.message
    assert alert.message.startswith(f"{s.share:.0%} ± ")
