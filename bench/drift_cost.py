"""Drift statistic cost: PSI/JSD over a 7-day window from ``window_counts`` vs from raw events.

Ours is what the drift evaluator does for one feature and one window:
:func:`workers.drift.window_counts` (one ``GROUP BY feature, bin`` over per-minute partial
counts in ClickHouse) plus :func:`workers.drift.evaluate` (PSI, JSD, chi-square test and the
decision). The reference computes the same statistics from the raw per-event bin
assignments, as a user without pre-aggregated counts would: Evidently's ``psi`` and
``jensenshannon`` stat tests on two pandas Series (the baseline's reference sample and the
window's 1,000,000 events).

Data: ``n`` bin assignments (16 clusters + the novelty bin) drawn from a known, shifted
distribution — one bin left empty so the epsilon rule is exercised — spread evenly over
7 days × 1,440 minutes. Their per-minute counts are inserted into ``window_counts`` (one row
per minute and non-empty bin, as worker flushes write them) before timing; the raw path
gets the same assignments as an array. Both paths must give the same values:

- PSI: Evidently's ``(ref − cur) · ln(ref / cur)`` is symmetric, like ours; it replaces an
  empty bin's share by 1e-4 when every non-empty share is above 1e-4 — exactly our
  ``max(share, 1e-4)`` then. (When some non-empty share is ≤ 1e-4, Evidently fills empty
  bins with ``min_share / 1e6`` instead and the two differ; the benchmark refuses such data
  rather than compare different conventions.)
- JSD: Evidently returns SciPy's Jensen–Shannon *distance* in nats; ours is the
  *divergence* in bits, so ``ours = distance² / ln 2``.

The agreement is checked to 1e-9 here (a mismatch raises), not in a test.

Run alone: ``python -m bench.drift_cost [--events 1000000]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench.common import Row, log, open_bench_store

K_BINS = 17  # 16 k-means clusters + the novelty bin
DAYS = 7
TOLERANCE = 1e-9
EPS = 1e-4  # workers.drift.DEFAULT_EPS, and Evidently's fill value for empty bins


class Mismatch(RuntimeError):
    """Our statistic and the reference's disagree on the same bins: a bug in one of them."""


def _import_evidently() -> tuple[Callable[..., Any], Callable[..., Any], Any, str] | None:
    """Evidently's PSI and Jensen–Shannon stat tests, or ``None`` when not installed.

    evidently 0.7.x imports ``pandas.core.dtypes.common.infer_dtype_from_object`` at import
    time (in its legacy data-integrity tests), a private helper pandas 3 removed. Neither
    stat test used here calls it, so a stand-in that raises if ever called lets the package
    import; nothing else is changed.
    """
    try:
        import pandas.core.dtypes.common as pd_common
    except ImportError:
        return None
    if not hasattr(pd_common, "infer_dtype_from_object"):

        def _removed_in_pandas_3(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("removed in pandas 3; not used by the PSI/JS stat tests")

        pd_common.infer_dtype_from_object = _removed_in_pandas_3  # type: ignore[attr-defined]
    try:
        from evidently.legacy.calculations.stattests import (
            jensenshannon_stat_test,
            psi_stat_test,
        )
        from evidently.legacy.core import ColumnType
    except ImportError:
        return None
    from importlib import metadata

    return psi_stat_test, jensenshannon_stat_test, ColumnType, metadata.version("evidently")


def distributions(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(reference_shares, window_shares)``: a baseline and a shifted window, one bin empty."""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(K_BINS, 20.0))
    q = np.maximum(q, 0.01)
    q /= q.sum()
    p = q * rng.uniform(0.5, 1.5, K_BINS)
    p[3] = 0.0  # a cluster nobody visits any more: the epsilon rule applies
    p[-1] += 0.08  # novelty bin: other-domain traffic arriving
    return q, p / p.sum()


def make_data(
    n_events: int, n_reference: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(reference_counts, raw_bins, per_minute_counts[minute, bin])`` for one seed."""
    q, p = distributions(seed)
    rng = np.random.default_rng(seed + 1)
    ref_counts = rng.multinomial(n_reference, q)
    raw = rng.choice(K_BINS, size=n_events, p=p).astype(np.int16)
    minutes = DAYS * 1440
    minute_of = (np.arange(n_events, dtype=np.int64) * minutes) // n_events
    per_minute = np.bincount(minute_of * K_BINS + raw, minlength=minutes * K_BINS).reshape(
        minutes, K_BINS
    )
    return ref_counts, raw, per_minute


def insert_counts(
    store: Any,
    per_minute: np.ndarray,
    *,
    start: datetime,
    base_model: str,
    adapter: str,
    baseline_id: str,
    chunk: int = 50_000,
) -> int:
    """Insert the non-empty (minute, bin) cells into ``window_counts``; return rows written."""
    minute_idx, bin_idx = np.nonzero(per_minute)
    rows = [
        {
            "base_model": base_model,
            "adapter_version": adapter,
            "baseline_id": baseline_id,
            "feature": "embedding",
            "bucket": start + timedelta(minutes=int(m)),
            "bin": int(b),
            "count": int(per_minute[m, b]),
        }
        for m, b in zip(minute_idx, bin_idx, strict=True)
    ]
    for i in range(0, len(rows), chunk):
        store.insert("window_counts", rows[i : i + chunk])
    return len(rows)


def _baseline(ref_counts: np.ndarray, base_model: str, adapter: str) -> Any:
    from workers.baseline import Baseline, FeatureBaseline

    fb = FeatureBaseline.from_counts("embedding", None, [int(c) for c in ref_counts])
    return Baseline(
        baseline_id="bench-drift-cost",
        base_model=base_model,
        adapter_version=adapter,
        embedder="minilm-l6-v2",
        k=K_BINS - 1,
        centroids=np.zeros((K_BINS - 1, 4), dtype=np.float32),  # not used: bins are given
        features={"embedding": fb},
        n_fit=0,
        n_reference=int(ref_counts.sum()),
        created_at=datetime.now(UTC),
        novelty_threshold=0.5,
    )


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    fn()  # warm-up: caches, lazy imports
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run(
    sizes: Sequence[int] = (1_000_000,),
    *,
    n_reference: int = 3_000,
    repeats: int = 5,
    seed: int = 0,
    store: Any = None,
) -> list[Row]:
    """One row per window size in ``sizes`` (events in the 7-day window)."""
    store = store or open_bench_store()
    return [
        measure(n, n_reference=n_reference, repeats=repeats, seed=seed, store=store) for n in sizes
    ]


def measure(n_events: int, *, n_reference: int, repeats: int, seed: int, store: Any) -> Row:
    """Time both paths on the same data; check the values agree; return the result row."""
    from workers.drift import DriftThresholds, evaluate, window_counts

    if n_events < 1 or n_reference < 1:
        raise ValueError(f"n_events and n_reference must be >= 1, got {n_events}, {n_reference}")
    base_model, adapter = f"bench-model-{n_events}", "v1"
    ref_counts, raw, per_minute = make_data(n_events, n_reference, seed)
    baseline = _baseline(ref_counts, base_model, adapter)
    fb = baseline.features["embedding"]
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    t0 = time.perf_counter()
    n_rows = insert_counts(
        store,
        per_minute,
        start=start,
        base_model=base_model,
        adapter=adapter,
        baseline_id=baseline.baseline_id,
    )
    insert_s = time.perf_counter() - t0
    log(f"drift cost: {n_rows:,} window_counts rows for {n_events:,} events inserted in "
        f"{insert_s:.1f}s")  # fmt: skip
    thresholds = DriftThresholds()
    stream = (base_model, adapter, baseline)

    def ours() -> Any:
        counts = window_counts(store, stream, start, end).get("embedding", {})
        observed = np.zeros(fb.bins, dtype=np.int64)
        for b, c in counts.items():
            observed[b] = c
        return evaluate(observed, fb, thresholds)

    ours_s, result = _median_time(ours, repeats)
    if result.sample_size != n_events:
        raise Mismatch(f"window_counts summed to {result.sample_size} events, not {n_events}")

    evidently = _import_evidently()
    ref_raw = np.repeat(np.arange(K_BINS, dtype=np.int16), ref_counts)
    if evidently is not None:
        import pandas as pd

        psi_test, js_test, column_type, version = evidently
        reference_label = f"Evidently {version} psi + jensenshannon on raw bins"

        def reference() -> tuple[float, float]:
            ref_s, cur_s = pd.Series(ref_raw), pd.Series(raw)
            psi_v = psi_test(ref_s, cur_s, column_type.Categorical, 0.1).drift_score
            js_v = js_test(ref_s, cur_s, column_type.Categorical, 0.1).drift_score
            return float(psi_v), float(js_v) ** 2 / math.log(2)
    else:
        from scipy.spatial.distance import jensenshannon

        reference_label = "numpy bincount + SciPy jensenshannon on raw bins (Evidently absent)"

        def reference() -> tuple[float, float]:
            cur = np.bincount(raw, minlength=K_BINS) / raw.size
            ref = np.bincount(ref_raw, minlength=K_BINS) / ref_raw.size
            cur_f, ref_f = np.maximum(cur, EPS), np.maximum(ref, EPS)
            psi_v = float(np.sum((ref_f - cur_f) * np.log(ref_f / cur_f)))
            return psi_v, float(jensenshannon(ref, cur, base=2)) ** 2

    ref_s, (ref_psi, ref_jsd) = _median_time(reference, repeats)
    shares = [np.bincount(raw, minlength=K_BINS) / raw.size, ref_counts / ref_counts.sum()]
    if any(float(s[s > 0].min()) <= EPS for s in shares):
        raise Mismatch("a non-empty share is <= 1e-4: Evidently's fill rule differs from ours")
    d_psi, d_jsd = abs(result.psi - ref_psi), abs(result.jsd - ref_jsd)
    if d_psi > TOLERANCE or d_jsd > TOLERANCE:
        raise Mismatch(
            f"PSI ours {result.psi!r} vs reference {ref_psi!r} (|d|={d_psi:.2e}); "
            f"JSD ours {result.jsd!r} vs reference {ref_jsd!r} (|d|={d_jsd:.2e})"
        )
    log(
        f"drift cost: ours {ours_s * 1000:.1f} ms, reference {ref_s * 1000:.1f} ms; "
        f"PSI {result.psi:.6f} (|d| {d_psi:.1e}), JSD {result.jsd:.6f} (|d| {d_jsd:.1e})"
    )
    return Row(
        name=f"drift.psi_jsd_7d_window_{_short(n_events)}",
        title=f"PSI+JSD over a 7-day window of {n_events:,} events",
        ours=round(ours_s * 1000, 3),
        reference=round(ref_s * 1000, 3),
        unit="ms",
        n=n_events,
        better="lower",
        ours_label=f"window_counts query ({n_rows:,} minute×bin rows) + drift.evaluate",
        reference_label=reference_label,
        note=(
            "Same values: PSI |diff| "
            f"{d_psi:.1e}, JSD |diff| {d_jsd:.1e} (checked <= 1e-9). Ours also runs the "
            "chi-square test; the reference's raw events are already in memory (reading "
            "1M raw rows would add to it)."
        ),
        extra={
            "psi": result.psi,
            "jsd": result.jsd,
            "reference_psi": ref_psi,
            "reference_jsd": ref_jsd,
            "abs_diff_psi": d_psi,
            "abs_diff_jsd": d_jsd,
            "window_counts_rows": n_rows,
            "window_counts_insert_rows_per_s": round(n_rows / insert_s),
            "reference_sample": int(ref_counts.sum()),
            "bins": K_BINS,
            "repeats": repeats,
            "timing": "median of repeats after one warm-up",
        },
    )


def _short(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for row in run(args.events, repeats=args.repeats):
        print(row.to_dict())


if __name__ == "__main__":
    main()
