"""OTLP payloads as the Collector's Kafka exporter writes them, to and from protobuf.

``otlp_proto`` is a serialized ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``.
``otlp_json`` is the OTLP/JSON mapping of the same messages: protobuf's JSON mapping
(camelCase names, 64-bit integers as strings, enums as numbers) except that trace and span
ids are hex strings, not base64, and unknown fields are ignored. Both decode to the same
protobuf request here, so one mapper reads both.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

from google.protobuf import json_format, unknown_fields
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from workers.exceptions import WorkerError
from workers.otlp._settings import OtlpEncoding, OtlpSignal

Request = ExportTraceServiceRequest | ExportLogsServiceRequest

#: The id fields of OTLP/JSON, hex there and base64 in protobuf's own JSON mapping.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
#: Nesting deeper than this in an attribute value is cut (protobuf itself stops at 100).
_MAX_DEPTH = 64


class OtlpDecodeError(WorkerError, ValueError):
    """A payload is not an OTLP export request in the expected encoding."""


def encoding_of(value: bytes, encoding: OtlpEncoding) -> OtlpEncoding:
    """The payload's encoding: ``auto`` reads one that starts with ``{`` as JSON.

    A serialized export request starts with its field 1 (``0x0a``); ``{`` (``0x7b``) would
    be field 15 as a group, which no OTLP message has, so the two never overlap.
    """
    if encoding != "auto":
        return encoding
    return "otlp_json" if value.lstrip()[:1] == b"{" else "otlp_proto"


def decode_request(value: bytes, encoding: OtlpEncoding, signal: OtlpSignal | None) -> Request:
    """The export request in ``value``; ``signal`` None: told from the payload."""
    if encoding_of(value, encoding) == "otlp_json":
        return _from_json(value, signal)
    return _from_proto(value, signal)


def _from_proto(value: bytes, signal: OtlpSignal | None) -> Request:
    kinds: tuple[type[Request], ...]
    if signal == "traces":
        kinds = (ExportTraceServiceRequest,)
    elif signal == "logs":
        kinds = (ExportLogsServiceRequest,)
    else:  # one topic for both: the first reading whose ids are well-formed
        kinds = (ExportTraceServiceRequest, ExportLogsServiceRequest)
    error = "no OTLP export request"
    for kind in kinds:
        request = kind()
        try:
            request.ParseFromString(value)
        except (DecodeError, RecursionError) as exc:
            error = f"not a serialized {kind.__name__}: {exc}"
            continue
        if signal is not None or _plausible(request):
            return request
        error = "neither a trace nor a logs export request (ids are not 16/8 bytes)"
    raise OtlpDecodeError(error)


def _plausible(request: Request) -> bool:
    """Whether every span / log record has well-formed ids, and no field went unknown.

    Reading one request type as the other mostly fails on a field's wire type, but not
    always (a field number of the same wire type reads as the other's field, an unknown
    number is kept aside), so this tells a trace request from a logs request when both
    share a topic.
    """
    items: list[Message] = []
    if isinstance(request, ExportTraceServiceRequest):
        for rs in request.resource_spans:
            items.extend(span for ss in rs.scope_spans for span in ss.spans)
        return bool(items) and all(
            len(s.trace_id) == 16 and len(s.span_id) == 8 and not _has_unknown(s) for s in items
        )
    for rl in request.resource_logs:
        items.extend(rec for sl in rl.scope_logs for rec in sl.log_records)
    return bool(items) and all(
        len(r.trace_id) in (0, 16) and len(r.span_id) in (0, 8) and not _has_unknown(r)
        for r in items
    )


def _has_unknown(message: Message) -> bool:
    return len(unknown_fields.UnknownFieldSet(message)) > 0


def _from_json(value: bytes, signal: OtlpSignal | None) -> Request:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OtlpDecodeError(f"OTLP/JSON must be an object, got {type(data).__name__}")
    found: OtlpSignal | None = None
    if "resourceSpans" in data or "resource_spans" in data:
        found = "traces"
    elif "resourceLogs" in data or "resource_logs" in data:
        found = "logs"
    if found is None:
        raise OtlpDecodeError("not an OTLP export request: no resourceSpans or resourceLogs")
    if signal is not None and found != signal:
        raise OtlpDecodeError(f"expected {signal}, got a {found} export request")
    request: Request = (
        ExportTraceServiceRequest() if found == "traces" else ExportLogsServiceRequest()
    )
    try:
        _hex_ids_to_base64(data)
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OtlpDecodeError(f"not an OTLP/JSON {found} export request: {exc}") from exc
    return request


def _hex_ids_to_base64(node: Any, depth: int = 0) -> None:
    """Rewrite OTLP/JSON's hex ids, in place, to the base64 that protobuf's parser reads."""
    if depth > 12:  # ids sit at most 6 objects deep (request, resource, scope, span, link)
        return
    if isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item, depth + 1)
    elif isinstance(node, dict):
        for key, item in node.items():
            if key in _ID_FIELDS and isinstance(item, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError as exc:
                    raise OtlpDecodeError(f"{key} {item[:40]!r} is not hex") from exc
            elif isinstance(item, dict | list) and key not in ("attributes", "body"):
                _hex_ids_to_base64(item, depth + 1)


def to_json(request: Message) -> bytes:
    """``request`` in OTLP/JSON, as the Collector writes it (hex ids, camelCase)."""
    data = json_format.MessageToDict(request, preserving_proto_field_name=False)
    _base64_ids_to_hex(data)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _base64_ids_to_hex(item)
    elif isinstance(node, dict):
        for key, item in node.items():
            if key in _ID_FIELDS and isinstance(item, str):
                with contextlib.suppress(binascii.Error):
                    node[key] = base64.b64decode(item).hex()
            elif isinstance(item, dict | list) and key not in ("attributes", "body"):
                _base64_ids_to_hex(item)


def encode(request: Message, encoding: OtlpEncoding) -> bytes:
    """``request`` in ``encoding`` (``auto``: protobuf, the exporter's default)."""
    return to_json(request) if encoding == "otlp_json" else request.SerializeToString()


def value_of(value: AnyValue, depth: int = 0) -> Any:
    """An ``AnyValue`` as plain Python: str, bool, int, float, bytes, list or dict."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth >= _MAX_DEPTH:
            return None
        return [value_of(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        if depth >= _MAX_DEPTH:
            return None
        return attributes_of(value.kvlist_value.values, depth + 1)
    return getattr(value, kind)


def attributes_of(pairs: Any, depth: int = 0) -> dict[str, Any]:
    """``KeyValue`` pairs as a dict (a repeated key keeps its last value)."""
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = value_of(pair.value, depth)
    return out
