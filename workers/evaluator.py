"""Rolling-window drift evaluation from ``window_counts``: one aggregate query per window.

For every (model, adapter, baseline) with counts in the last 7 days and every window
(1 h, 24 h, 7 d), :func:`evaluate_drift` sums the partial counts per feature and bin in
ClickHouse, compares them with the baseline's reference counts (:func:`workers.drift.evaluate`),
and returns ``drift_stats`` rows plus the alerts their statuses call for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import numpy as np

from schemas.events import Alert, DriftStat
from workers.alerts import alert_id
from workers.baseline import Baseline, load_baseline_by_id
from workers.drift import DriftThresholds, evaluate
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
        for window in windows:
            counts = window_counts(store, stream, end - WINDOWS[window], end)
            for feature, fb in baseline.features.items():
                observed = np.zeros(len(fb.counts), dtype=np.int64)
                for b, n in counts.get(feature, {}).items():
                    if 0 <= b < len(observed):
                        observed[b] = n
                result = evaluate(observed, fb, thresholds)
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
                    status=result.status,  # type: ignore[arg-type]
                )
                stats.append(stat)
                if stat.status in ("warn", "alert") and window in alert_on:
                    alerts.append(drift_alert(stat))
    return stats, alerts


def drift_alert(stat: DriftStat) -> Alert:
    kind = "embedding_drift" if stat.feature == "embedding" else "output_drift"
    threshold = stat.psi_alert if stat.status == "alert" else stat.psi_warn
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
        severity="alert" if stat.status == "alert" else "warn",
        value=stat.psi,
        threshold=threshold,
        p_value=stat.p_value,
        sample_size=stat.sample_size,
        message=(
            f"{stat.feature} drift on {stat.window} window: PSI {stat.psi:.3f} "
            f"(threshold {threshold}), JSD {stat.jsd:.3f}, p={stat.p_value:.2g}, "
            f"n={stat.sample_size} vs baseline n={stat.baseline_size}"
        ),
    )
