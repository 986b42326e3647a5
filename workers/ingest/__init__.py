"""The ingest processor: validate, redact, bin and store one batch of inference logs."""

from __future__ import annotations

from workers.ingest._processor import (
    EVENT_RETENTION,
    BaselineCache,
    BatchResult,
    IngestProcessor,
    RawRecord,
    RecordDecoder,
    Rejected,
    inference_log_row,
)

__all__ = [
    "EVENT_RETENTION",
    "BaselineCache",
    "BatchResult",
    "IngestProcessor",
    "RawRecord",
    "RecordDecoder",
    "Rejected",
    "inference_log_row",
]
