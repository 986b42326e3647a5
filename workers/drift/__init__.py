"""Drift monitoring: a window's decision per feature (thresholds, tests), the periodic
evaluation of every window against the baseline, explanations of what changed, and
incidents that open, notify and resolve.
"""

from __future__ import annotations

from workers.drift._decide import DriftResult, DriftThresholds, decide, evaluate
from workers.drift._evaluate import (
    WINDOWS,
    active_streams,
    decide_evaluation,
    evaluate_drift,
    window_counts,
)
from workers.drift._explain import bin_changes, bin_names, explain_window
from workers.drift._incidents import healthy_groups, load_open, plan_incidents, save, step
from workers.drift._settings import DriftSettings

__all__ = [
    "WINDOWS",
    "DriftResult",
    "DriftSettings",
    "DriftThresholds",
    "active_streams",
    "bin_changes",
    "bin_names",
    "decide",
    "decide_evaluation",
    "evaluate",
    "evaluate_drift",
    "explain_window",
    "healthy_groups",
    "load_open",
    "plan_incidents",
    "save",
    "step",
    "window_counts",
]
