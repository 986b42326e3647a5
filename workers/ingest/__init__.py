"""The ingest processor: validate, redact, bin and store one batch of inference logs."""

from __future__ import annotations

from workers.ingest._processor import (
    DLQ_OVERSIZE_KEEP_BYTES,
    EVENT_RETENTION,
    BaselineCache,
    BatchResult,
    IngestProcessor,
    RawRecord,
    Rejected,
    inference_log_row,
    redact_rejected,
)

__all__ = [
    "DLQ_OVERSIZE_KEEP_BYTES",
    "EVENT_RETENTION",
    "BaselineCache",
    "BatchResult",
    "IngestProcessor",
    "RawRecord",
    "Rejected",
    "inference_log_row",
    "redact_rejected",
]
