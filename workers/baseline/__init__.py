"""The training baseline: its bins (embedding clusters, output quantiles), how it is fitted
from training data, stored and loaded, and the names of its clusters.
"""

from __future__ import annotations

from workers.baseline._clusters import keywords, shorten
from workers.baseline._fit import fit_baseline, split_indices
from workers.baseline._model import (
    DEFAULT_NOVELTY_QUANTILE,
    FEATURES,
    Baseline,
    FeatureBaseline,
    quantile_edges,
)
from workers.baseline._records import TrainingRecord, read_training_jsonl
from workers.baseline._storage import (
    LIST_COLUMNS,
    iter_feature_bins,
    list_baselines,
    load_baseline,
    load_baseline_by_id,
    save_baseline,
)

__all__ = [
    "DEFAULT_NOVELTY_QUANTILE",
    "FEATURES",
    "LIST_COLUMNS",
    "Baseline",
    "FeatureBaseline",
    "TrainingRecord",
    "fit_baseline",
    "iter_feature_bins",
    "keywords",
    "list_baselines",
    "load_baseline",
    "load_baseline_by_id",
    "quantile_edges",
    "read_training_jsonl",
    "save_baseline",
    "shorten",
    "split_indices",
]
