"""Drift alert quality on real text: false alarms on in-distribution windows, detection on shifts.

A baseline is fitted (k-means on real MiniLM embeddings, held-out reference split) on
synthetic customer-support prompts (:mod:`workers.synthetic`). Then windows are resampled
from pools of already-embedded text — each text is embedded once — and judged by

- the SentryML rule (:func:`workers.drift.evaluate`): PSI >= 0.2 AND the two-sample
  chi-square test against the reference counts rejects at alpha = 0.01, and
- for contrast, the bare rule PSI >= 0.2.

Conditions: held-out in-distribution windows of 100 and 500 events (any alert is a false
alarm), windows of 100 events from other domains (cooking, legal, medical, programming,
travel: any alert is a detection), 100-event windows where only part of the traffic
shifted, the same in-distribution windows judged against shares measured on the fitting
split (the biased choice the held-out reference split avoids), and output drift (length,
diversity, refusal) on degraded completions.

Run: ``.venv/bin/python -m bench.drift_quality`` (a few minutes on 2 cores; ``--quick``
for a smoke run). Writes ``bench/results/drift_quality.json`` and prints a Markdown table.
Targets: false alarms <= 5 % at 100 events and <= 1 % at 500; detection >= 95 % at 100.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import machine_info
from workers.baseline import Baseline, FeatureBaseline, fit_baseline, split_indices
from workers.drift import DriftThresholds, evaluate
from workers.embedding import load_embedder
from workers.stats import text_stats
from workers.synthetic import (
    DEGRADATIONS,
    DOMAINS,
    degraded_records,
    domain_prompts,
    support_records,
)

RESULTS = Path(__file__).resolve().parent / "results" / "drift_quality.json"
TARGETS = {"false_alarm_100": 0.05, "false_alarm_500": 0.01, "detection_100": 0.95}


@dataclass
class Condition:
    name: str
    kind: str  # "null" (alerts are false alarms) or "shift" (alerts are detections)
    window: int
    draw: Callable[[np.random.Generator], np.ndarray]  # -> bin index per event
    feature: str = "embedding"
    reference: str = ""


def _rates(
    cond: Condition, fb: FeatureBaseline, thresholds: DriftThresholds, windows: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    alert = warn = bare = 0
    psis, pvals = [], []
    for _ in range(windows):
        bins = cond.draw(rng)
        counts = np.bincount(bins, minlength=fb.bins)
        result = evaluate(counts, fb, thresholds)
        alert += result.status == "alert"
        warn += result.status in ("warn", "alert")
        bare += result.psi >= thresholds.psi_alert
        psis.append(result.psi)
        pvals.append(result.p_value)
    return {
        "condition": cond.name,
        "kind": cond.kind,
        "feature": cond.feature,
        "reference": cond.reference,
        "window": cond.window,
        "windows": windows,
        "sentryml_alert_rate": alert / windows,
        "sentryml_warn_or_alert_rate": warn / windows,
        "bare_psi_rate": bare / windows,
        "psi_median": float(np.median(psis)),
        "psi_p95": float(np.quantile(psis, 0.95)),
        "p_value_median": float(np.median(pvals)),
    }


def _sampler(pool_bins: np.ndarray, size: int) -> Callable[[np.random.Generator], np.ndarray]:
    def draw(rng: np.random.Generator) -> np.ndarray:
        return pool_bins[rng.choice(pool_bins.size, size=size, replace=False)]

    return draw


def _mixer(
    base: np.ndarray, shifted: np.ndarray, size: int, share: float
) -> Callable[[np.random.Generator], np.ndarray]:
    n_shift = round(size * share)

    def draw(rng: np.random.Generator) -> np.ndarray:
        a = base[rng.choice(base.size, size=size - n_shift, replace=False)]
        b = shifted[rng.choice(shifted.size, size=n_shift, replace=False)]
        return np.concatenate([a, b])

    return draw


def _output_bins(baseline: Baseline, completions: list[str]) -> dict[str, np.ndarray]:
    stats = [text_stats(c) for c in completions]
    values = {
        "output_length": np.array([s.length for s in stats], dtype=np.float64),
        "ttr": np.array([s.ttr for s in stats]),
        "distinct2": np.array([s.distinct2 for s in stats]),
        "refusal": np.array([int(s.refusal) for s in stats]),
    }
    return {f: baseline.features[f].assign(v) for f, v in values.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    thresholds = DriftThresholds()
    t0 = time.perf_counter()
    # The cache makes re-encoding the fitting split (for the biased contrast) free.
    embedder = load_embedder(args.embedder, cache_size=100_000)
    load_s = time.perf_counter() - t0

    train = support_records(args.train, seed=101)
    held_out = support_records(args.pool, seed=202)
    others = {d: domain_prompts(d, args.shift_pool, seed=303) for d in DOMAINS if d != "support"}

    t1 = time.perf_counter()
    baseline = fit_baseline(
        train,
        embedder,
        base_model="bench",
        adapter_version="v1",
        k=args.k,
        seed=0,
        progress=not args.quiet,
        source="workers.synthetic",
    )
    fit_s = time.perf_counter() - t1
    texts = [r.prompt for r in held_out] + [p for ps in others.values() for p in ps]
    t2 = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=64)
    embed_s = time.perf_counter() - t2
    embedded = len(texts) + len(train)

    # Three ways to build the embedding baseline from the same centroids, for contrast:
    # SentryML's (held-out reference split + novelty bin), without the novelty bin, and
    # with shares measured on the fitting split itself (the biased choice).
    fit_idx, ref_idx = split_indices(len(train), 0.3, 0)
    train_vectors = embedder.encode([r.prompt for r in train], batch_size=64)  # cached
    plain = replace(baseline, novelty_threshold=None)
    variants = {
        "held-out + novelty bin": (baseline, ref_idx),
        "held-out, no novelty bin": (plain, ref_idx),
        "fit split (biased) + novelty bin": (baseline, fit_idx),
    }
    rows = []
    for v, (variant, (bl, idx)) in enumerate(variants.items()):
        counts = np.bincount(bl.assign_embeddings(train_vectors[idx]), minlength=bl.embedding_bins)
        fb = FeatureBaseline.from_counts("embedding", None, counts.tolist())
        held_bins = bl.assign_embeddings(vectors[: len(held_out)])
        shifted_bins: dict[str, np.ndarray] = {}
        start = len(held_out)
        for domain, prompts in others.items():
            shifted_bins[domain] = bl.assign_embeddings(vectors[start : start + len(prompts)])
            start += len(prompts)
        all_shifted = np.concatenate(list(shifted_bins.values()))
        conditions = [
            Condition("in-distribution", "null", size, _sampler(held_bins, size))
            for size in (100, 200, 500)
        ]
        if v == 0:
            for domain, bins in shifted_bins.items():
                conditions.append(Condition(f"shift: {domain}", "shift", 100, _sampler(bins, 100)))
        conditions.append(
            Condition("shift: all other domains", "shift", 100, _sampler(all_shifted, 100))
        )
        for share in (0.1, 0.25, 0.5):
            conditions.append(
                Condition(
                    f"partial shift: {share:.0%} other domains",
                    "shift",
                    100,
                    _mixer(held_bins, all_shifted, 100, share),
                )
            )
        for i, cond in enumerate(conditions):
            cond.reference = variant
            rows.append(_rates(cond, fb, thresholds, args.windows, seed=1000 * (v + 1) + i))

    # Output drift: no embedding needed, so fresh generator draws are cheap.
    out_null = _output_bins(baseline, [r.completion for r in support_records(args.pool, 404)])
    for feature in ("output_length", "ttr", "distinct2", "refusal"):
        fbo = baseline.features[feature]
        for size in (100, 500):
            cond = Condition(
                "in-distribution", "null", size, _sampler(out_null[feature], size), feature
            )
            cond.reference = "held-out"
            rows.append(_rates(cond, fbo, thresholds, args.windows, seed=3000 + size))
    for kind in DEGRADATIONS:
        deg = _output_bins(
            baseline, [r.completion for r in degraded_records(kind, args.shift_pool, 505)]
        )
        for feature in ("output_length", "ttr", "distinct2", "refusal"):
            fbo = baseline.features[feature]
            rows.append(
                _rates(
                    Condition(
                        f"degraded: {kind}",
                        "shift",
                        100,
                        _sampler(deg[feature], 100),
                        feature,
                        "held-out",
                    ),
                    fbo,
                    thresholds,
                    args.windows,
                    seed=4000,
                )
            )

    main = "held-out + novelty bin"
    emb_rows = [r for r in rows if r["feature"] == "embedding" and r["reference"] == main]
    fa = {r["window"]: r["sentryml_alert_rate"] for r in emb_rows if r["kind"] == "null"}
    full_shift = [
        r for r in emb_rows if r["kind"] == "shift" and not r["condition"].startswith("partial")
    ]
    summary = {
        "false_alarm_100": fa[100],
        "false_alarm_500": fa[500],
        "detection_100": min(r["sentryml_alert_rate"] for r in full_shift),
        "bare_psi_false_alarm_100": next(
            r["bare_psi_rate"] for r in emb_rows if r["kind"] == "null" and r["window"] == 100
        ),
        "bare_psi_false_alarm_500": next(
            r["bare_psi_rate"] for r in emb_rows if r["kind"] == "null" and r["window"] == 500
        ),
    }
    summary["targets_met"] = (
        summary["false_alarm_100"] <= TARGETS["false_alarm_100"]
        and summary["false_alarm_500"] <= TARGETS["false_alarm_500"]
        and summary["detection_100"] >= TARGETS["detection_100"]
    )
    return {
        "benchmark": "drift_quality",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "setup": {
            "embedder": embedder.name,
            "k": args.k,
            "train_records": len(train),
            "n_fit": baseline.n_fit,
            "n_reference": baseline.n_reference,
            "held_out_pool": len(held_out),
            "shift_pool_per_domain": args.shift_pool,
            "windows_per_condition": args.windows,
            "thresholds": {
                "psi_alert": thresholds.psi_alert,
                "psi_warn": thresholds.psi_warn,
                "alpha": thresholds.alpha,
                "min_samples": thresholds.min_samples,
            },
            "novelty_threshold": baseline.novelty_threshold,
            "baseline_embedding_shares": [
                round(x, 4) for x in baseline.features["embedding"].shares
            ],
        },
        "timing": {
            "model_load_s": round(load_s, 2),
            "fit_baseline_s": round(fit_s, 2),
            "embed_s": round(embed_s, 2),
            "texts_embedded": embedded,
            "prompts_per_s": round(len(texts) / embed_s, 1) if embed_s else None,
        },
        "targets": TARGETS,
        "summary": summary,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Drift alert quality — {result['setup']['embedder']}, k={result['setup']['k']}, "
        f"reference n={result['setup']['n_reference']}, "
        f"{result['setup']['windows_per_condition']} windows per row",
        "",
        "| feature | condition | baseline | window | SentryML alert rate "
        "(PSI≥0.2 ∧ p<0.01) | bare PSI≥0.2 rate | median PSI | median p |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        label = "false alarms" if r["kind"] == "null" else "detections"
        lines.append(
            f"| {r['feature']} | {r['condition']} ({label}) | {r['reference']} | {r['window']} "
            f"| {r['sentryml_alert_rate']:.1%} | {r['bare_psi_rate']:.1%} "
            f"| {r['psi_median']:.3f} | {r['p_value_median']:.2g} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"Embedding drift: false alarms {s['false_alarm_100']:.1%} at 100 events (target ≤ 5%), "
        f"{s['false_alarm_500']:.1%} at 500 (target ≤ 1%); detection ≥ {s['detection_100']:.1%} "
        f"of shifted 100-event windows (target ≥ 95%). Bare PSI≥0.2: "
        f"{s['bare_psi_false_alarm_100']:.1%} / {s['bare_psi_false_alarm_500']:.1%} false alarms. "
        f"Targets met: {'yes' if s['targets_met'] else 'NO'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--embedder", default="minilm", help="minilm | model2vec")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--train", type=int, default=2000, help="training records")
    parser.add_argument("--pool", type=int, default=3000, help="held-out in-distribution pool")
    parser.add_argument("--shift-pool", type=int, default=400, help="texts per other domain")
    parser.add_argument("--windows", type=int, default=2000, help="windows per condition")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.pool, args.shift_pool, args.windows = 600, 600, 120, 200
        if args.out == RESULTS:
            args.out = RESULTS.parent.parent / "out" / "drift_quality.quick.json"
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
