"""The retrain gate: when persistent drift or judge alerts and enough labelled feedback
ask the trainer for a new adapter.
"""

from __future__ import annotations

from workers.retrain_gate._gate import (
    FAILED,
    FIRED,
    FORCED,
    HELD,
    JOB_TERMINAL,
    PROMOTED,
    REFUSED,
    REJECTED,
    STARTED,
    GateDecision,
    GateInputs,
    GatePolicy,
    decide,
    gather_inputs,
    held_for,
    make_job_id,
    models_to_check,
    record_job_event,
    request_for,
)
from workers.retrain_gate._settings import RetrainGateSettings

__all__ = [
    "FAILED",
    "FIRED",
    "FORCED",
    "HELD",
    "JOB_TERMINAL",
    "PROMOTED",
    "REFUSED",
    "REJECTED",
    "STARTED",
    "GateDecision",
    "GateInputs",
    "GatePolicy",
    "RetrainGateSettings",
    "decide",
    "gather_inputs",
    "held_for",
    "make_job_id",
    "models_to_check",
    "record_job_event",
    "request_for",
]
