"""OTLP GenAI telemetry → inference logs: what the OpenTelemetry Collector's Kafka exporter
writes (``otlp_proto`` or ``otlp_json``), mapped to the :class:`~schemas.events.InferenceLog`
the producer SDK sends.

Spans and log records of the GenAI semantic conventions are read, current and older:
``gen_ai.input.messages`` / ``gen_ai.output.messages`` on spans and on the
``gen_ai.client.inference.operation.details`` event; ``gen_ai.prompt`` /
``gen_ai.completion`` (plain, JSON, or flattened ``gen_ai.prompt.0.content``) on spans and
span events; the per-message events ``gen_ai.user.message``, ..., ``gen_ai.choice``.
``base_model`` is the response model (else the request model, or the configured one),
tokens are ``gen_ai.usage.input_tokens`` / ``output_tokens`` (or ``prompt_tokens`` /
``completion_tokens``), the latency is the span's duration, ``app`` the resource's
``service.name``. One call per record::

    index = SpanIndex(settings.join_spans)           # one per consumer
    batch = decode_otlp(record, settings, index=index)
    batch.logs, batch.rejected, batch.skipped, batch.duplicates
"""

from __future__ import annotations

from workers.otlp._map import (
    INFERENCE_OPERATIONS,
    REASON_DECODE,
    REASON_INCOMPLETE,
    REASON_INVALID,
    OtlpBatch,
    SpanIndex,
    decode_otlp,
    signal_of,
)
from workers.otlp._settings import OtlpEncoding, OtlpSettings, OtlpSignal
from workers.otlp._wire import OtlpDecodeError, decode_request, to_json

__all__ = [
    "INFERENCE_OPERATIONS",
    "REASON_DECODE",
    "REASON_INCOMPLETE",
    "REASON_INVALID",
    "OtlpBatch",
    "OtlpDecodeError",
    "OtlpEncoding",
    "OtlpSettings",
    "OtlpSignal",
    "SpanIndex",
    "decode_otlp",
    "decode_request",
    "signal_of",
    "to_json",
]
