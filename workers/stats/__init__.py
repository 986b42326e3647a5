"""Pure statistics, no I/O: divergences and two-sample tests over bin counts, the
novelty (off-distribution share) estimator, and per-text features (length, refusal,
diversity).
"""

from __future__ import annotations

from workers.stats._divergence import (
    DEFAULT_EPS,
    chi2_homogeneity,
    holm,
    homogeneity_p_value,
    jsd,
    psi,
)
from workers.stats._novelty import (
    DEFAULT_MEMORY,
    DEFAULT_NEIGHBOURS,
    bin_scores,
    calibrate,
    knn_typicality,
    novel_bin_count,
    off_distribution_share,
)
from workers.stats._text import (
    TextStats,
    distinct_n,
    is_refusal,
    text_stats,
    tokenize,
    type_token_ratio,
    words,
)

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_MEMORY",
    "DEFAULT_NEIGHBOURS",
    "TextStats",
    "bin_scores",
    "calibrate",
    "chi2_homogeneity",
    "distinct_n",
    "holm",
    "homogeneity_p_value",
    "is_refusal",
    "jsd",
    "knn_typicality",
    "novel_bin_count",
    "off_distribution_share",
    "psi",
    "text_stats",
    "tokenize",
    "type_token_ratio",
    "words",
]
