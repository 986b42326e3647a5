"""Training baselines: what "no drift" looks like for one (base model, adapter).

A :class:`Baseline` holds, per feature (:data:`FEATURES`), the bins production events are
sorted into and the reference count of each bin:

- ``embedding`` — k-means centroids of the training prompts' embeddings (cosine; bins are
  clusters), plus one *novelty* bin ``k`` for prompts farther from every centroid than
  almost all training prompts (cosine similarity below the ``novelty_quantile`` of the
  fitting split). Text from another domain lands there wholesale, so a partial shift
  that spreads thinly over the clusters still shows as a jump in one bin,
- ``output_length``, ``ttr``, ``distinct2`` — quantile bin edges of the training
  completions' statistics (:mod:`workers.stats`),
- ``novelty`` — how unlike the training data each prompt is: a conformal p-value of its
  similarity to the nearest fitting prompts (a compact float16 memory of them is kept in
  the baseline), binned at fixed p-value edges (:mod:`workers.stats`). Its counts give
  the headline number, the share of traffic unlike the training data,
- ``refusal`` — two bins: not a refusal, refusal.

Why a held-out reference split: centroids and quantile edges are fitted on one part of the
training data (``1 - reference_fraction``), and the baseline counts are measured on the
other part. Counts measured on the fitting data itself are biased: k-means places
centroids to fit exactly those points, so their assignment is tidier than any new sample
from the same distribution, and every production window would look a little drifted. The
reference split is a fresh sample, so under no drift a window and the reference differ by
sampling noise only — which the drift test accounts for (:mod:`workers.drift`).

>>> records = read_training_jsonl("train.jsonl")                       # doctest: +SKIP
>>> baseline = fit_baseline(records, load_embedder(), base_model="m", adapter_version="v1")
...                                                                      # doctest: +SKIP
>>> save_baseline(store, baseline, json_path="baseline.json")         # doctest: +SKIP
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.exceptions import BaselineError
from workers.stats import DEFAULT_NEIGHBOURS, knn_typicality

if TYPE_CHECKING:
    pass


#: Every feature a baseline describes, in a fixed order.
FEATURES: tuple[str, ...] = (
    "embedding",
    "novelty",
    "output_length",
    "ttr",
    "distinct2",
    "refusal",
)


#: Quantile bins per numeric output feature (fewer when values repeat).
DEFAULT_OUTPUT_BINS = 10


#: Share of the fitting split's prompts that fall in the novelty bin (by construction).
DEFAULT_NOVELTY_QUANTILE = 0.01


PAYLOAD_FORMAT = 1


# --------------------------------------------------------------------------------------
# the baseline
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureBaseline:
    """Bins of one feature and the reference sample's count (and share) in each.

    ``edges`` are the interior cut points of numeric features (``len(counts) - 1`` of
    them; a value equal to an edge goes to the bin above). Features without edges
    (``embedding``, ``refusal``) take bin indices directly.

    >>> fb = FeatureBaseline("output_length", (10.0, 20.0), (0.2, 0.5, 0.3), (2, 5, 3))
    >>> fb.assign(np.array([3, 10, 19.5, 400])).tolist(), fb.n
    ([0, 1, 1, 2], 10)
    """

    name: str
    edges: tuple[float, ...] | None
    shares: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.counts or len(self.shares) != len(self.counts):
            raise ValueError(
                f"feature {self.name!r}: shares ({len(self.shares)}) and counts "
                f"({len(self.counts)}) need the same, non-zero number of bins"
            )
        if any(c < 0 for c in self.counts):
            raise ValueError(f"feature {self.name!r}: counts must be >= 0")
        if self.edges is not None:
            if len(self.edges) != len(self.counts) - 1:
                raise ValueError(
                    f"feature {self.name!r}: {len(self.counts)} bins need "
                    f"{len(self.counts) - 1} edges, got {len(self.edges)}"
                )
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"feature {self.name!r}: edges must increase strictly")

    @property
    def n(self) -> int:
        """Size of the reference sample."""
        return int(sum(self.counts))

    @property
    def bins(self) -> int:
        return len(self.counts)

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (int64). Without edges, values are bin indices already
        (booleans for ``refusal``) and must lie in ``[0, bins)``."""
        arr = np.asarray(values)
        if self.edges is not None:
            return np.searchsorted(
                np.asarray(self.edges), arr.astype(np.float64), side="right"
            ).astype(np.int64)
        idx = arr.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.bins):
            raise ValueError(
                f"feature {self.name!r}: bin indices must be in [0, {self.bins}), "
                f"got {int(idx.min())}..{int(idx.max())}"
            )
        return idx

    def assign_one(self, value: float) -> int:
        """:meth:`assign` for one value, without numpy's per-call overhead (hot path)."""
        if self.edges is not None:
            return bisect.bisect_right(self.edges, value)  # = searchsorted(side="right")
        idx = int(value)
        if not 0 <= idx < self.bins:
            raise ValueError(
                f"feature {self.name!r}: bin indices must be in [0, {self.bins}), got {idx}"
            )
        return idx

    @classmethod
    def from_counts(
        cls, name: str, edges: tuple[float, ...] | None, counts: Sequence[int]
    ) -> FeatureBaseline:
        total = int(sum(counts))
        shares = tuple(float(c) / total if total else 0.0 for c in counts)
        return cls(name, edges, shares, tuple(int(c) for c in counts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": None if self.edges is None else list(self.edges),
            "shares": list(self.shares),
            "counts": list(self.counts),
        }


@dataclass(frozen=True, eq=False)
class Baseline:
    """The fitted baseline of one (base model, adapter) with one embedder.

    ``baseline_id`` is a hash of the content (model, adapter, embedder, centroids, bins and
    counts), so refitting the same data with the same seed gives the same id.
    """

    baseline_id: str
    base_model: str
    adapter_version: str
    embedder: str
    k: int
    centroids: np.ndarray
    features: dict[str, FeatureBaseline]
    n_fit: int
    n_reference: int
    created_at: datetime
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: cosine similarity under which a prompt is "outside every cluster" (bin ``k``)
    novelty_threshold: float | None = None
    #: fitting-split embeddings (float16 rows) the ``novelty`` feature's typicality is
    #: measured against; None when the baseline has no ``novelty`` feature
    memory: np.ndarray | None = None
    #: neighbours averaged for the typicality score
    neighbours: int = DEFAULT_NEIGHBOURS

    @property
    def embedding_bins(self) -> int:
        """Bins of the ``embedding`` feature: k clusters (+ the novelty bin when enabled)."""
        return self.k + (self.novelty_threshold is not None)

    def assign_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Embedding bin of each row (int64): the nearest centroid by cosine, or ``k`` (the
        novelty bin) when even the nearest is less similar than ``novelty_threshold``."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or (emb.size and emb.shape[1] != self.centroids.shape[1]):
            raise BaselineError(
                f"embeddings of shape {emb.shape} do not match baseline {self.baseline_id} "
                f"({self.embedder}, {self.centroids.shape[1]} dimensions); embed with the "
                "baseline's embedder"
            )
        if emb.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        bins, sims = nearest_centroids(emb, self.centroids)
        if self.novelty_threshold is not None:
            bins[sims < self.novelty_threshold] = self.k
        return bins

    def typicality(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean cosine similarity of each row to its nearest fitting prompts (the memory)."""
        if self.memory is None:
            raise BaselineError(
                f"baseline {self.baseline_id} has no neighbour memory (fitted without the "
                "novelty feature); refit it to measure the off-distribution share"
            )
        return knn_typicality(embeddings, self.memory, self.neighbours)

    def bin_embeddings(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(embedding bins, novelty bins)`` of each row; novelty bins are None when the
        baseline has no ``novelty`` feature."""
        bins = self.assign_embeddings(embeddings)
        fb = self.features.get("novelty")
        if fb is None or self.memory is None:
            return bins, None
        if bins.size == 0:
            return bins, np.zeros(0, dtype=np.int64)
        return bins, fb.assign(self.typicality(embeddings))

    def to_payload(self) -> dict[str, Any]:
        """A JSON-ready dict (centroids as base64 little-endian float32: exact and compact;
        the neighbour memory as float16)."""
        body = _content_body(
            self.base_model,
            self.adapter_version,
            self.embedder,
            self.k,
            self.centroids,
            self.features,
            self.n_fit,
            self.n_reference,
            self.novelty_threshold,
            self.memory,
            self.neighbours,
        )
        return {
            **body,
            "baseline_id": self.baseline_id,
            "created_at": self.created_at.isoformat(),
            "source": self.source,
            "meta": self.meta,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | str) -> Baseline:
        """Rebuild a baseline from :meth:`to_payload` output (a dict or its JSON text)."""
        data = json.loads(payload) if isinstance(payload, str) else payload
        try:
            if data.get("format") != PAYLOAD_FORMAT:
                raise BaselineError(
                    f"baseline payload format {data.get('format')!r} is not supported "
                    f"(expected {PAYLOAD_FORMAT}); refit with `sentryml baseline fit`"
                )
            shape = tuple(data["centroids"]["shape"])
            raw = base64.b64decode(data["centroids"]["f32le"])
            centroids = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
            features = {
                name: FeatureBaseline(
                    name,
                    None if f["edges"] is None else tuple(float(e) for e in f["edges"]),
                    tuple(float(s) for s in f["shares"]),
                    tuple(int(c) for c in f["counts"]),
                )
                for name, f in data["features"].items()
            }
            created = datetime.fromisoformat(data["created_at"])
            memory = None
            if data.get("memory") is not None:
                mshape = tuple(data["memory"]["shape"])
                mraw = base64.b64decode(data["memory"]["f16le"])
                memory = np.frombuffer(mraw, dtype="<f2").reshape(mshape).astype(np.float16)
            return cls(
                baseline_id=str(data["baseline_id"]),
                base_model=str(data["base_model"]),
                adapter_version=str(data["adapter_version"]),
                embedder=str(data["embedder"]),
                k=int(data["k"]),
                centroids=centroids,
                features=features,
                n_fit=int(data["n_fit"]),
                n_reference=int(data["n_reference"]),
                created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
                source=str(data.get("source", "")),
                meta=dict(data.get("meta") or {}),
                novelty_threshold=(
                    None
                    if data.get("novelty_threshold") is None
                    else float(data["novelty_threshold"])
                ),
                memory=memory,
                neighbours=int(data.get("neighbours", DEFAULT_NEIGHBOURS)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BaselineError):
                raise
            raise BaselineError(f"corrupt baseline payload: {exc!r}; refit the baseline") from exc

    def bin_names(self) -> list[str]:
        """A readable name for every ``embedding`` bin: ``"c3: refund, order, charged"``
        from the fit's keywords (``c3`` for baselines fitted before names), and
        ``"novelty"`` for the novelty bin."""
        named = {int(c["bin"]): str(c["name"]) for c in self.meta.get("clusters", [])}
        names = [named.get(c, f"c{c}") for c in range(self.k)]
        return names + (["novelty"] if self.novelty_threshold is not None else [])

    def summary(self) -> dict[str, Any]:
        """Headline numbers for people: sizes, cluster shares, refusal rate."""
        emb = self.features["embedding"]
        refusal = self.features.get("refusal")
        return {
            "baseline_id": self.baseline_id,
            "base_model": self.base_model,
            "adapter_version": self.adapter_version,
            "embedder": self.embedder,
            "k": self.k,
            "n_fit": self.n_fit,
            "n_reference": self.n_reference,
            "smallest_cluster_share": round(min(emb.shares[: self.k]), 4),
            "largest_cluster_share": round(max(emb.shares[: self.k]), 4),
            "novelty_share": (
                round(emb.shares[self.k], 4) if self.novelty_threshold is not None else None
            ),
            "refusal_rate": round(refusal.shares[1], 4) if refusal else None,
            **{k: v for k, v in self.meta.items() if k.startswith("median_")},
        }


def _content_body(
    base_model: str,
    adapter_version: str,
    embedder: str,
    k: int,
    centroids: np.ndarray,
    features: dict[str, FeatureBaseline],
    n_fit: int,
    n_reference: int,
    novelty_threshold: float | None,
    memory: np.ndarray | None = None,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> dict[str, Any]:
    c = np.ascontiguousarray(centroids, dtype="<f4")
    extra: dict[str, Any] = {}
    if memory is not None:  # absent from older baselines: their ids stay what they were
        mem = np.ascontiguousarray(memory, dtype="<f2")
        extra = {
            "memory": {"shape": list(mem.shape), "f16le": base64.b64encode(mem.tobytes()).decode()},
            "neighbours": int(neighbours),
        }
    return {
        **extra,
        "format": PAYLOAD_FORMAT,
        "base_model": base_model,
        "adapter_version": adapter_version,
        "embedder": embedder,
        "k": int(k),
        "centroids": {"shape": list(c.shape), "f32le": base64.b64encode(c.tobytes()).decode()},
        "features": {name: features[name].to_dict() for name in sorted(features)},
        "n_fit": int(n_fit),
        "n_reference": int(n_reference),
        "novelty_threshold": novelty_threshold,
    }


def baseline_id_for(body: dict[str, Any]) -> str:
    """Deterministic id: ``bl-`` + the first 16 hex digits of the content's SHA-256."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "bl-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def nearest_centroids(
    embeddings: np.ndarray, centroids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the most cosine-similar centroid per row (ties: the lower index) and that
    similarity."""
    emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    cen = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sims = emb @ cen.T
    idx = np.argmax(sims, axis=1)
    return idx.astype(np.int64), sims[np.arange(sims.shape[0]), idx].astype(np.float64)


def assign_to_centroids(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar centroid per row (ties: the lower index)."""
    return nearest_centroids(embeddings, centroids)[0]


def quantile_edges(values: np.ndarray, n_bins: int = DEFAULT_OUTPUT_BINS) -> tuple[float, ...]:
    """Interior cut points of ``n_bins`` equal-count bins; repeated values merge bins.

    >>> quantile_edges(np.arange(100), 4)
    (24.75, 49.5, 74.25)
    >>> quantile_edges(np.array([1.0] * 90 + [0.5] * 10), 4)  # mostly ties: one cut
    (1.0,)
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values to take quantiles of")
    qs = np.quantile(arr, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    edges = np.unique(qs)
    # A cut at the minimum would leave the first bin empty by construction.
    edges = edges[edges > arr.min()]
    return tuple(float(e) for e in edges)
