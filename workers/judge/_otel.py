"""Judge scores as OpenTelemetry too: one ``gen_ai.evaluation.result`` event per score.

Off unless ``SENTRYML_JUDGE_OTLP_ENDPOINT`` names an OTLP/HTTP logs endpoint (a Collector's
``http://collector:4318/v1/logs``, or a backend's). Each stored score becomes a log record
with the GenAI semantic conventions' evaluation attributes (``gen_ai.evaluation.name`` = the
dimension, ``.score.value``, ``.score.label``, ``.explanation`` = the rationale,
``gen_ai.response.id`` = the request id), parented to the inference's span when the event
came in through OTLP (its ``otel.trace_id`` / ``otel.span_id`` metadata), so the scores
appear beside the traces in the backend the team already uses.

The official SDK's batching exporter sends them from a thread of its own: the judge agent
never waits for the endpoint, and a down endpoint costs dropped telemetry, never scores
(those are in ``judge_scores`` first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from workers.dlq import RawRecord

log = logging.getLogger(__name__)

EVENT_NAME = "gen_ai.evaluation.result"
#: What a score means, for ``gen_ai.evaluation.score.label`` (low cardinality, documented).
_LABELS = {"refusal": {0: "not_refusal", 1: "refusal"}}


def score_label(dimension: str, score: int) -> str:
    """``pass`` for 4–5, ``fail`` for 1–3; refusal's 0/1 are named.

    >>> score_label("format", 5), score_label("factual", 2), score_label("refusal", 1)
    ('pass', 'fail', 'refusal')
    """
    named = _LABELS.get(dimension)
    if named is not None:
        return named.get(score, str(score))
    return "pass" if score >= 4 else "fail"


def trace_parents(records: Sequence[RawRecord]) -> dict[str, tuple[int, int]]:
    """``{request_id: (trace_id, span_id)}`` of the judged logs that came in through OTLP."""
    out: dict[str, tuple[int, int]] = {}
    for record in records:
        try:
            event = json.loads(record.value)
            meta = event.get("metadata") or {}
            trace, span = meta.get("otel.trace_id"), meta.get("otel.span_id")
            if trace and span:
                out[str(event["request_id"])] = (int(trace, 16), int(span, 16))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            continue
    return out


class EvaluationEmitter:
    """Send score rows as ``gen_ai.evaluation.result`` log records over OTLP/HTTP."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        service_name: str = "sentryml-judge",
        exporter: Any = None,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        self.endpoint = endpoint
        self._provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(
                exporter or OTLPLogExporter(endpoint=endpoint, headers=dict(headers or {}))
            )
        )
        self._logger = self._provider.get_logger("sentryml.judge")
        self.emitted = 0

    def emit(self, rows: Sequence[Mapping[str, Any]], records: Sequence[RawRecord] = ()) -> int:
        """One event per usable score row (failed judge calls have no score); returns how
        many were handed to the exporter."""
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            TraceFlags,
            set_span_in_context,
        )

        parents = trace_parents(records)
        n = 0
        for row in rows:
            if not row.get("ok") or row.get("score") is None:
                continue
            score = int(row["score"])
            parent = parents.get(str(row["request_id"]))
            context = (
                set_span_in_context(
                    NonRecordingSpan(
                        SpanContext(*parent, is_remote=True, trace_flags=TraceFlags(1))
                    )
                )
                if parent
                else None
            )
            self._logger.emit(
                LogRecord(
                    event_name=EVENT_NAME,
                    context=context,
                    severity_number=SeverityNumber.INFO,
                    attributes={
                        "gen_ai.evaluation.name": str(row["dimension"]),
                        "gen_ai.evaluation.score.value": float(score),
                        "gen_ai.evaluation.score.label": score_label(str(row["dimension"]), score),
                        "gen_ai.evaluation.explanation": str(row.get("rationale") or ""),
                        "gen_ai.response.id": str(row["request_id"]),
                        "gen_ai.request.model": str(row.get("base_model") or ""),
                        "sentryml.adapter_version": str(row.get("adapter_version") or ""),
                        "sentryml.judge_model": str(row.get("judge_model") or ""),
                    },
                )
            )
            n += 1
        self.emitted += n
        return n

    def flush(self, timeout_s: float = 10.0) -> bool:
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def close(self) -> None:
        self._provider.shutdown()
