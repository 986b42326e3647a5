"""Fitting a baseline from training records: embed, split fit/reference, k-means, quantile edges, the novelty calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from workers.exceptions import BaselineError
from workers.stats import DEFAULT_MEMORY, DEFAULT_NEIGHBOURS, calibrate, knn_typicality

if TYPE_CHECKING:
    from workers.embedding import Embedder

from workers.baseline._model import (
    DEFAULT_NOVELTY_QUANTILE,
    DEFAULT_OUTPUT_BINS,
    Baseline,
    FeatureBaseline,
    _content_body,
    baseline_id_for,
    nearest_centroids,
    quantile_edges,
)
from workers.baseline._records import TrainingRecord


# --------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------
def _embed(
    texts: Sequence[str], embedder: Embedder, progress: bool, batch_size: int = 64
) -> np.ndarray:
    from tqdm.auto import tqdm

    chunk = max(batch_size, 256)
    parts = []
    with tqdm(
        total=len(texts),
        desc=f"embedding prompts ({embedder.name})",
        unit="prompt",
        disable=not progress,
    ) as bar:
        for start in range(0, len(texts), chunk):
            batch = list(texts[start : start + chunk])
            parts.append(np.asarray(embedder.encode(batch, batch_size=batch_size), np.float32))
            bar.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def split_indices(n: int, reference_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fit, reference) index split; the reference part has ``round(n·fraction)``."""
    order = np.random.default_rng(seed).permutation(n)
    n_ref = round(n * reference_fraction)
    return np.sort(order[n_ref:]), np.sort(order[:n_ref])


def fit_kmeans(embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means (scikit-learn, k-means++, 10 seeded restarts); rows L2-normalized."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=seed)
    model.fit(np.asarray(embeddings, dtype=np.float32))
    centers = np.asarray(model.cluster_centers_, dtype=np.float32)
    return centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)


def fit_baseline(
    records: Sequence[TrainingRecord],
    embedder: Embedder,
    *,
    base_model: str,
    adapter_version: str = "none",
    k: int = 16,
    seed: int = 0,
    reference_fraction: float = 0.3,
    output_bins: int = DEFAULT_OUTPUT_BINS,
    novelty_quantile: float | None = DEFAULT_NOVELTY_QUANTILE,
    novelty_memory: int | None = DEFAULT_MEMORY,
    neighbours: int = DEFAULT_NEIGHBOURS,
    progress: bool = True,
    source: str = "",
    now: datetime | None = None,
) -> Baseline:
    """Fit centroids and bin edges on one split, count the held-out reference split.

    ``novelty_quantile`` (None: off) sets the novelty bin: a production prompt whose
    nearest centroid is less similar than this quantile of the fitting split's
    similarities goes to bin ``k``. ``novelty_memory`` (None: no ``novelty`` feature) is how
    many fitting-split embeddings at most (a seeded sample of at most half of them, float16:
    ~0.8 KB each for MiniLM) the baseline keeps to score a prompt's similarity to its
    ``neighbours`` nearest training prompts; every other example is scored against the same
    memory, which calibrates the conformal p-values (:mod:`workers.stats`). Raises
    :class:`BaselineError` when the data cannot support ``k`` clusters.
    """
    from workers.stats import text_stats

    if not 2 <= k <= 4096:
        raise ValueError(f"k must be in [2, 4096], got {k}")
    if not 0.05 <= reference_fraction <= 0.95:
        raise ValueError(f"reference_fraction must be in [0.05, 0.95], got {reference_fraction}")
    if not base_model:
        raise ValueError("base_model must be non-empty")
    if novelty_quantile is not None and not 0.0 < novelty_quantile <= 0.2:
        raise ValueError(f"novelty_quantile must be in (0, 0.2] or None, got {novelty_quantile}")
    if novelty_memory is not None and not neighbours <= novelty_memory <= 100_000:
        raise ValueError(
            f"novelty_memory must be in [neighbours={neighbours}, 100000] or None, "
            f"got {novelty_memory}"
        )
    if not 1 <= neighbours <= 100:
        raise ValueError(f"neighbours must be in [1, 100], got {neighbours}")
    n = len(records)
    need = math.ceil(k / min(reference_fraction, 1 - reference_fraction))
    if n < need:
        raise BaselineError(
            f"{n} training examples are too few for k={k} clusters: both the fitting split "
            f"and the {reference_fraction:.0%} reference split need at least k examples, "
            f"so at least {need} examples; add data or lower --k"
        )
    fit_idx, ref_idx = split_indices(n, reference_fraction, seed)
    fit_prompts = [records[i].prompt for i in fit_idx]
    distinct = len(set(fit_prompts))
    if distinct < k:
        raise BaselineError(
            f"only {distinct} distinct prompts in the fitting split for k={k} clusters; "
            "add varied data or lower --k"
        )

    embeddings = _embed([r.prompt for r in records], embedder, progress)
    centroids = fit_kmeans(embeddings[fit_idx], k, seed)
    novelty: float | None = None
    if novelty_quantile is not None:
        _, fit_sims = nearest_centroids(embeddings[fit_idx], centroids)
        novelty = float(np.quantile(fit_sims, novelty_quantile))
    from workers.baseline._clusters import describe_clusters

    fit_bins, _ = nearest_centroids(embeddings[fit_idx], centroids)
    clusters = describe_clusters(fit_prompts, embeddings[fit_idx], fit_bins, centroids)
    ref_bins, ref_sims = nearest_centroids(embeddings[ref_idx], centroids)
    if novelty is not None:
        ref_bins[ref_sims < novelty] = k
    emb_counts = np.bincount(ref_bins, minlength=k + (novelty is not None))

    stats = [text_stats(r.completion) for r in records]
    columns = {
        "output_length": np.array([s.length for s in stats], dtype=np.float64),
        "ttr": np.array([s.ttr for s in stats], dtype=np.float64),
        "distinct2": np.array([s.distinct2 for s in stats], dtype=np.float64),
    }
    features: dict[str, FeatureBaseline] = {
        "embedding": FeatureBaseline.from_counts("embedding", None, emb_counts.tolist())
    }
    memory: np.ndarray | None = None
    if novelty_memory is not None:
        # The typicality score depends on the memory only (not on the centroids), so every
        # example outside the memory is a fresh draw for it: half the fitting split (at
        # most novelty_memory) is the memory, everything else calibrates the p-values.
        size = max(neighbours, min(novelty_memory, len(fit_idx) // 2))
        pick = np.zeros(n, dtype=bool)
        pick[fit_idx[np.random.default_rng(seed).permutation(len(fit_idx))[:size]]] = True
        memory = embeddings[pick].astype(np.float16)
        cal = calibrate(knn_typicality(embeddings[~pick], memory, neighbours))
        # counts are the calibration gaps per bin (they sum to calibration size + 1): the
        # exact null law of a window's novelty counts is Dirichlet-multinomial in them
        features["novelty"] = FeatureBaseline.from_counts("novelty", cal.edges, cal.counts)
    for name, values in columns.items():
        edges = quantile_edges(values[fit_idx], output_bins)
        probe = FeatureBaseline.from_counts(name, edges, [0] * (len(edges) + 1))
        counts = np.bincount(probe.assign(values[ref_idx]), minlength=len(edges) + 1)
        features[name] = FeatureBaseline.from_counts(name, edges, counts.tolist())
    refusals = np.array([s.refusal for s in stats], dtype=np.int64)[ref_idx]
    features["refusal"] = FeatureBaseline.from_counts(
        "refusal", None, np.bincount(refusals, minlength=2).tolist()
    )

    body = _content_body(
        base_model,
        adapter_version,
        embedder.name,
        k,
        centroids,
        features,
        len(fit_idx),
        len(ref_idx),
        novelty,
        memory,
        neighbours,
    )
    return Baseline(
        baseline_id=baseline_id_for(body),
        base_model=base_model,
        adapter_version=adapter_version,
        embedder=embedder.name,
        k=k,
        centroids=centroids,
        features=features,
        n_fit=len(fit_idx),
        n_reference=len(ref_idx),
        created_at=now or datetime.now(UTC),
        source=source,
        novelty_threshold=novelty,
        memory=memory,
        neighbours=neighbours,
        meta={
            "seed": seed,
            "reference_fraction": reference_fraction,
            "novelty_quantile": novelty_quantile,
            "dim": int(centroids.shape[1]),
            "length_unit": "simple_tokens",
            "median_output_length": float(np.median(columns["output_length"])),
            "median_ttr": round(float(np.median(columns["ttr"])), 4),
            # names for people (workers.baseline): keywords and redacted example prompts
            "clusters": clusters,
        },
    )
