"""Baselines in the store: save, load (by model or id), list, and the per-bin rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.store import Store

from workers.baseline._model import FEATURES, Baseline


# --------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------
def save_baseline(store: Store, baseline: Baseline, *, json_path: str | Path | None = None) -> None:
    """Insert the baseline into ``baselines`` (idempotent per id); also write ``json_path``."""
    payload = baseline.to_payload()
    text = json.dumps(payload, sort_keys=True)
    store.insert(
        "baselines",
        [
            {
                "baseline_id": baseline.baseline_id,
                "created_at": baseline.created_at,
                "base_model": baseline.base_model,
                "adapter_version": baseline.adapter_version,
                "embedder": baseline.embedder,
                "k": baseline.k,
                "n_fit": baseline.n_fit,
                "n_reference": baseline.n_reference,
                "source": baseline.source,
                "payload": text,
            }
        ],
        dedup_token=f"baseline-{baseline.baseline_id}",
    )
    if json_path is not None:
        out = Path(json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_baseline(store: Store, base_model: str, adapter_version: str) -> Baseline | None:
    """The newest baseline of (base_model, adapter), else the newest of the base model, else None."""
    exact = store.query(
        "SELECT payload FROM baselines FINAL "
        "WHERE base_model = {m:String} AND adapter_version = {a:String} "
        "ORDER BY created_at DESC, baseline_id DESC LIMIT 1",
        {"m": base_model, "a": adapter_version},
    )
    if not exact.rows:
        exact = store.query(
            "SELECT payload FROM baselines FINAL WHERE base_model = {m:String} "
            "ORDER BY created_at DESC, baseline_id DESC LIMIT 1",
            {"m": base_model},
        )
    return Baseline.from_payload(exact.rows[0][0]) if exact.rows else None


def load_baseline_by_id(store: Store, baseline_id: str) -> Baseline | None:
    result = store.query(
        "SELECT payload FROM baselines FINAL WHERE baseline_id = {b:String} "
        "ORDER BY created_at DESC LIMIT 1",
        {"b": baseline_id},
    )
    return Baseline.from_payload(result.rows[0][0]) if result.rows else None


LIST_COLUMNS = (
    "baseline_id",
    "created_at",
    "base_model",
    "adapter_version",
    "embedder",
    "k",
    "n_fit",
    "n_reference",
    "source",
)


def list_baselines(store: Store, base_model: str | None = None) -> list[dict[str, Any]]:
    """Every stored baseline (newest first), without payloads."""
    where = "WHERE base_model = {m:String} " if base_model else ""
    result = store.query(
        f"SELECT {', '.join(LIST_COLUMNS)} FROM baselines FINAL {where}"
        "ORDER BY created_at DESC, baseline_id",
        {"m": base_model} if base_model else None,
    )
    return result.dicts()


def iter_feature_bins(baseline: Baseline) -> Iterable[tuple[str, int, float, int]]:
    """``(feature, bin, share, count)`` rows, e.g. to show a baseline as a table."""
    for name in FEATURES:
        fb = baseline.features.get(name)
        if fb is None:
            continue
        for b, (share, count) in enumerate(zip(fb.shares, fb.counts, strict=True)):
            yield name, b, share, count
