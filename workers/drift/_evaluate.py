"""Rolling-window drift evaluation from ``window_counts``: one aggregate query per window.

For every (model, adapter, baseline) with counts in the last 7 days and every window
(1 h, 24 h, 7 d), :func:`evaluate_drift` sums the partial counts per feature and bin in
ClickHouse, compares them with the baseline's reference counts (:func:`workers.drift.evaluate`),
and returns ``drift_stats`` rows plus the alerts their statuses call for.

One evaluation of one model runs every feature on every window — 18 tests. Each test's
p-value is Holm-adjusted over all of them (:func:`workers.drift.holm`) before the decision,
so ``alpha`` bounds the chance that an evaluation of unchanged traffic raises anything,
not the chance of one test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import numpy as np

from schemas.events import Alert, DriftStat
from workers.alerts import alert_id
from workers.baseline import Baseline, load_baseline_by_id
from workers.drift._decide import (
    DriftResult,
    DriftStatus,
    DriftThresholds,
    decide,
    decide_share,
    evaluate,
)
from workers.drift._explain import Explanation, explain_window
from workers.stats import holm
from workers.store import Store

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}


def active_streams(store: Store, now: datetime) -> list[tuple[str, str, Baseline]]:
    """``(base_model, adapter_version, baseline)`` with window counts in the last 7 days.

    An adapter without a baseline of its own is counted against its base model's newest
    baseline, so the pair comes from the counts, not from the baseline.
    """
    rows = store.query(
        "SELECT DISTINCT base_model, adapter_version, baseline_id FROM window_counts "
        "WHERE bucket >= {since:DateTime('UTC')}",
        {"since": now - WINDOWS["7d"]},
    ).rows
    found: dict[str, Baseline | None] = {}
    out = []
    for base_model, adapter_version, baseline_id in rows:
        if baseline_id not in found:
            found[baseline_id] = load_baseline_by_id(store, baseline_id)
        baseline = found[baseline_id]
        if baseline is not None:
            out.append((str(base_model), str(adapter_version), baseline))
    return out


def window_counts(
    store: Store, stream: tuple[str, str, Baseline], start: datetime, end: datetime
) -> dict[str, dict[int, int]]:
    """``{feature: {bin: count}}`` for one (model, adapter, baseline) over ``[start, end)``."""
    base_model, adapter_version, baseline = stream
    result = store.query(
        "SELECT feature, bin, sum(count) FROM window_counts "
        "WHERE base_model = {m:String} AND adapter_version = {a:String} "
        "AND baseline_id = {b:String} "
        "AND bucket >= {start:DateTime('UTC')} AND bucket < {end:DateTime('UTC')} "
        "GROUP BY feature, bin",
        {
            "m": base_model,
            "a": adapter_version,
            "b": baseline.baseline_id,
            "start": start,
            "end": end,
        },
    )
    out: dict[str, dict[int, int]] = {}
    for feature, b, n in result.rows:
        out.setdefault(str(feature), {})[int(b)] = int(n)
    return out


def evaluate_drift(
    store: Store,
    now: datetime,
    thresholds_for: Callable[[str], DriftThresholds],
    *,
    windows: Iterable[str] = tuple(WINDOWS),
    alert_windows: Iterable[str] = tuple(WINDOWS),
) -> tuple[list[DriftStat], list[Alert]]:
    """Evaluate every active baseline over every window; return stats and alerts."""
    stats: list[DriftStat] = []
    alerts: list[Alert] = []
    alert_on = set(alert_windows)
    # Minute buckets: the window ends after the current minute so the newest counts count.
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for stream in active_streams(store, now):
        base_model, adapter_version, baseline = stream
        thresholds = thresholds_for(base_model)
        results: list[tuple[str, str, DriftResult]] = []
        by_window: dict[str, dict[str, dict[int, int]]] = {}
        for window in windows:
            counts = by_window[window] = window_counts(store, stream, end - WINDOWS[window], end)
            for feature, fb in baseline.features.items():
                observed = np.zeros(len(fb.counts), dtype=np.int64)
                for b, n in counts.get(feature, {}).items():
                    if 0 <= b < len(observed):
                        observed[b] = n
                results.append((window, feature, evaluate(observed, fb, thresholds)))
        decided = decide_evaluation([r for _, _, r in results], thresholds)
        for (window, feature, result), (status, p_adjusted) in zip(results, decided, strict=True):
            stat = DriftStat(
                ts=now,
                base_model=base_model,
                adapter_version=adapter_version,
                baseline_id=baseline.baseline_id,
                feature=feature,
                window=window,  # type: ignore[arg-type]
                psi=result.psi,
                jsd=result.jsd,
                chi2=result.chi2,
                p_value=result.p_value,
                sample_size=result.sample_size,
                baseline_size=result.baseline_size,
                psi_warn=thresholds.psi_warn,
                psi_alert=thresholds.psi_alert,
                status=status,
                p_adjusted=p_adjusted,
                share=result.share,
                share_low=result.share_low,
                share_high=result.share_high,
            )
            stats.append(stat)
            if stat.status in ("warn", "alert") and window in alert_on:
                alerts.append(drift_alert(stat, thresholds))
        explained: dict[str, Explanation] = {}
        for i, alert in enumerate(alerts):
            if alert.base_model != base_model or alert.adapter_version != adapter_version:
                continue
            if alert.details:
                continue
            if alert.window not in explained:
                explained[alert.window] = explain_window(
                    store, stream, alert.window, end, by_window[alert.window]
                )
            alerts[i] = with_explanation(alert, explained[alert.window])
    return stats, alerts


def with_explanation(alert: Alert, explanation: Explanation) -> Alert:
    """The alert carrying what changed: details as JSON, one summary line in the message."""
    summary = explanation.summary()
    message = f"{alert.message} — {summary}" if summary else alert.message
    return alert.model_copy(update={"details": explanation.to_dict(), "message": message})


def decide_evaluation(
    results: list[DriftResult], thresholds: DriftThresholds
) -> list[tuple[DriftStatus, float]]:
    """``(status, Holm-adjusted p-value)`` of every test of one evaluation.

    The tests with enough events form the family; each is decided again on its adjusted
    p-value (``novelty`` by its share, the rest by PSI), so ``thresholds.alpha`` bounds the
    chance that the whole evaluation raises a false warn or alert.
    """
    tested = [i for i, r in enumerate(results) if r.status != "insufficient"]
    adjusted = dict(zip(tested, holm([results[i].p_value for i in tested]), strict=True))
    out: list[tuple[DriftStatus, float]] = []
    for i, r in enumerate(results):
        p = adjusted.get(i, r.p_value)
        if r.share is not None:
            status = decide_share(r.share, p, r.sample_size, r.baseline_size, thresholds)
        else:
            status = decide(r.psi, p, r.sample_size, r.baseline_size, thresholds)
        out.append((status, p))
    return out


def drift_alert(stat: DriftStat, thresholds: DriftThresholds | None = None) -> Alert:
    """The alert for a ``warn`` / ``alert`` stat; the ``novelty`` feature speaks in shares."""
    kind = "embedding_drift" if stat.feature in ("embedding", "novelty") else "output_drift"
    severity = "alert" if stat.status == "alert" else "warn"
    p_value = stat.p_adjusted if stat.p_adjusted is not None else stat.p_value
    if stat.feature == "novelty" and stat.share is not None:
        t = thresholds or DriftThresholds()
        threshold = t.share_alert if severity == "alert" else t.share_warn
        value, message = stat.share, share_message(stat, threshold)
    else:
        threshold = stat.psi_alert if severity == "alert" else stat.psi_warn
        value = stat.psi
        message = (
            f"{stat.feature} drift on {stat.window} window: PSI {stat.psi:.3f} "
            f"(threshold {threshold}), JSD {stat.jsd:.3f}, p={p_value:.2g} (adjusted), "
            f"n={stat.sample_size} vs baseline n={stat.baseline_size}"
        )
    return Alert(
        alert_id=alert_id(
            kind, stat.base_model, stat.adapter_version, stat.feature, stat.window, stat.ts
        ),
        ts=stat.ts,
        base_model=stat.base_model,
        adapter_version=stat.adapter_version,
        kind=kind,
        feature=stat.feature,
        window=stat.window,
        severity=severity,
        value=value,
        threshold=threshold,
        p_value=p_value,
        sample_size=stat.sample_size,
        message=message,
    )


WINDOW_WORDS = {"1h": "hour", "24h": "24 h", "7d": "7 days"}


def share_message(stat: DriftStat, threshold: float) -> str:
    """ "27% ± 6% of the last 24 h's prompts look unlike the training data; ..." """
    if stat.share is None or stat.share_low is None or stat.share_high is None:
        raise ValueError(f"{stat.feature} stat has no share estimate")
    margin = (stat.share_high - stat.share_low) / 2
    p_value = stat.p_adjusted if stat.p_adjusted is not None else stat.p_value
    return (
        f"{stat.share:.0%} ± {margin:.0%} of the last {WINDOW_WORDS.get(stat.window, stat.window)}"
        f"'s prompts look unlike the training data (95% interval {stat.share_low:.0%}–"
        f"{stat.share_high:.0%}; ≈ 0% when unchanged, {stat.status} at ≥ {threshold:.0%}); "
        f"n={stat.sample_size}, p={p_value:.2g} (adjusted); "
        f"PSI {stat.psi:.3f}, JSD {stat.jsd:.3f}"
    )
