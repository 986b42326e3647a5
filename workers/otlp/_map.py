"""One OTLP export request → the inference logs it carries, its DLQ entries and its count.

An inference is a span whose ``gen_ai.operation.name`` is an inference (``chat``,
``text_completion``, ``generate_content``; a span without the name counts when it names a
model, token usage or content, as vLLM's and older instrumentations' spans do), or a
``gen_ai.client.inference.operation.details`` event, or the older per-message events
(``gen_ai.user.message``, ..., ``gen_ai.choice``) of one span. Each is keyed by its trace
and span id: the first source of a key that carries text becomes the event, later ones
(the span's own event, a redelivered span) are counted as duplicates. A
:class:`SpanIndex` kept by the caller carries that across records and topics, and joins an
event to its span when the span came first (model, tokens and latency of the span).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from pydantic import ValidationError

from schemas.events import InferenceLog
from workers.dlq import RawRecord, Rejected
from workers.otlp import _messages as msg
from workers.otlp._settings import OtlpEncoding, OtlpSettings, OtlpSignal
from workers.otlp._wire import (
    OtlpDecodeError,
    attributes_of,
    decode_request,
    encode,
    encoding_of,
    value_of,
)

#: DLQ reasons: the payload is not OTLP in the expected encoding; an inference lacks what
#: an event needs (prompt, completion text, model); the mapped event fails validation.
REASON_DECODE = "otlp_decode"
REASON_INCOMPLETE = "otlp_incomplete"
REASON_INVALID = "otlp_invalid"

#: ``gen_ai.operation.name`` values that are one call to a model (not embeddings, tools
#: or agents).
INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
#: The older per-message events and the role each one's message has.
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
#: Attributes whose presence (without an operation name) marks a span as an inference.
_INFERENCE_KEYS = frozenset(
    {
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
    }
)
#: Content attributes that older instrumentations put on span events (``gen_ai.content.*``).
_CONTENT_KEYS = (
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[bytes, bytes]


@dataclass
class OtlpBatch:
    """What one Kafka record of OTLP carried."""

    logs: list[InferenceLog] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: spans and log records that are no inference (HTTP spans, embeddings, tool calls),
    #: and inferences without text when ``require_content`` is off
    skipped: int = 0
    #: inferences already mapped from another source (a span's own event, a redelivery)
    duplicates: int = 0


@dataclass(frozen=True)
class _Facts:
    """What a span says about its inference besides the text (kept by :class:`SpanIndex`)."""

    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    request_id: str | None
    adapter: str | None
    latency_ms: float | None


#: vLLM's own request id attribute: the request id when the configured one is absent.
VLLM_REQUEST_ID = "gen_ai.request.id"


class SpanIndex:
    """The recently seen GenAI spans and events, by trace and span id (bounded, LRU).

    Keep one per consumer and pass it to every :func:`decode_otlp` call, so that a span and
    its event in different records (the Collector writes traces and logs to separate
    topics) are one inference, and an event is joined to a span seen before it.

    Each mapped inference remembers the record it came from: decoding that same record
    again (the ingest agent retries a whole batch while the store is down) maps it again,
    so a retry never turns an inference into a "duplicate" and drops it.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[Key, tuple[_Facts | None, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def facts(self, key: Key) -> _Facts | None:
        entry = self._seen.get(key)
        return entry[0] if entry else None

    def mapped(self, key: Key, by: str = "") -> bool:
        """Whether another record than ``by`` already gave this inference."""
        entry = self._seen.get(key)
        return bool(entry and entry[1] is not None and entry[1] != by)

    def note(self, key: Key, facts: _Facts | None, *, mapped: bool, by: str = "") -> None:
        if not self.size or not any(key):
            return
        old_facts, old_by = self._seen.pop(key, (None, None))
        self._seen[key] = (
            facts or old_facts,
            old_by if old_by is not None else (by if mapped else None),
        )
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


def signal_of(topic: str, settings: OtlpSettings) -> OtlpSignal | None:
    """The signal a topic carries; None when it carries both (or is not configured)."""
    if settings.traces_topic == settings.logs_topic:
        return None
    if topic == settings.traces_topic:
        return "traces"
    if topic == settings.logs_topic:
        return "logs"
    return None


def decode_otlp(
    record: RawRecord,
    settings: OtlpSettings | None = None,
    *,
    encoding: OtlpEncoding | None = None,
    signal: OtlpSignal | None = None,
    index: SpanIndex | None = None,
) -> OtlpBatch:
    """The inference logs in one Kafka record the Collector's Kafka exporter wrote.

    ``encoding`` and ``signal`` default to the settings and the record's topic (a topic
    carrying both signals is read from the payload). Never raises on bad input: a payload
    that does not decode is one :class:`Rejected` (``otlp_decode``) carrying the record;
    an inference that cannot be mapped is one (``otlp_incomplete`` / ``otlp_invalid``)
    whose DLQ payload is that span or event alone, in the record's encoding, so it can be
    replayed without the inferences already taken from the record.
    """
    settings = settings or OtlpSettings()
    encoding = encoding_of(record.value, encoding or settings.encoding)
    signal = signal or signal_of(record.topic, settings)
    batch = OtlpBatch()
    try:
        request = decode_request(record.value, encoding, signal)
    except OtlpDecodeError as exc:
        batch.rejected.append(Rejected(record, REASON_DECODE, f"{record.coordinates}: {exc}"))
        return batch
    mapper = _Mapper(
        record, settings, encoding, index if index is not None else SpanIndex(1 << 30), batch
    )
    if isinstance(request, ExportTraceServiceRequest):
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    mapper.span(rs, ss, span)
    else:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                mapper.logs(rl, sl)
    return batch


def _hex(key: Key) -> tuple[str, str]:
    return key[0].hex(), key[1].hex()


def _time(ns: int) -> datetime | None:
    return _EPOCH + timedelta(microseconds=ns // 1000) if ns > 0 else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text or None


def _content(attrs: dict[str, Any]) -> tuple[str | None, list[dict[str, str]] | None, str | None]:
    """``(prompt, messages, completion)`` from any of the conventions' content attributes."""
    prompt, messages = msg.prompt_of(attrs.get("gen_ai.input.messages"))
    if prompt is None and messages is None:
        prompt, messages = msg.prompt_of(attrs.get("gen_ai.prompt"))
    if prompt is None and messages is None:
        flat = msg.indexed(attrs, "gen_ai.prompt")
        messages = msg.chat_turns(flat) if flat else None
    system = msg.system_turns(attrs.get("gen_ai.system_instructions"))
    if system and (messages or prompt is not None):
        if messages is None:
            messages, prompt = [{"role": "user", "content": prompt or ""}], None
        messages = system + messages
    completion = msg.completion_of(attrs.get("gen_ai.output.messages"))
    if completion is None:
        completion = msg.completion_of(attrs.get("gen_ai.completion"))
    if completion is None:
        flat = msg.indexed(attrs, "gen_ai.completion")
        completion = msg.completion_of(flat) if flat else None
    return prompt, messages or None, completion


def _is_inference(attrs: dict[str, Any]) -> bool:
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return operation in INFERENCE_OPERATIONS
    return (
        any(k in _INFERENCE_KEYS for k in attrs) or msg.indexed(attrs, "gen_ai.prompt") is not None
    )


class _Mapper:
    """Maps the spans or log records of one request into ``batch``."""

    def __init__(
        self,
        record: RawRecord,
        settings: OtlpSettings,
        encoding: OtlpEncoding,
        index: SpanIndex,
        batch: OtlpBatch,
    ) -> None:
        self.record = record
        self.settings = settings
        self.encoding = encoding
        self.index = index
        self.batch = batch
        self.position = 0  # items of the record seen, for ids of items without one

    def facts(
        self, attrs: dict[str, Any], resource: dict[str, Any], latency: float | None
    ) -> _Facts:
        model = _text(attrs.get("gen_ai.response.model")) or _text(
            attrs.get("gen_ai.request.model")
        )
        key = self.settings.adapter_attribute
        return _Facts(
            model=model,
            input_tokens=_count(
                attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens"))
            ),
            output_tokens=_count(
                attrs.get("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.completion_tokens"))
            ),
            request_id=_text(attrs.get(self.settings.request_id_attribute))
            or _text(attrs.get(VLLM_REQUEST_ID)),
            adapter=_text(attrs.get(key)) or _text(resource.get(key)),
            latency_ms=latency,
        )

    def span(self, rs: ResourceSpans, ss: ScopeSpans, span: Span) -> None:
        self.position += 1
        attrs = attributes_of(span.attributes)
        for event in span.events:  # older conventions: content on span events
            if event.name.startswith("gen_ai."):
                for k, v in attributes_of(event.attributes).items():
                    if k in _CONTENT_KEYS:
                        attrs.setdefault(k, v)
        if not _is_inference(attrs):
            self.batch.skipped += 1
            return
        resource = attributes_of(rs.resource.attributes)
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        latency = (end - start) / 1e6 if start and end >= start else None
        facts = self.facts(attrs, resource, latency)
        key = (bytes(span.trace_id), bytes(span.span_id))

        def payload() -> Message:
            request = ExportTraceServiceRequest()
            out = request.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
            out.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url).spans.append(span)
            return request

        self.emit(key, attrs, resource, facts, _time(start), payload, "span")

    def logs(self, rl: ResourceLogs, sl: ScopeLogs) -> None:
        resource = attributes_of(rl.resource.attributes)
        groups: dict[Key, list[tuple[LogRecord, dict[str, Any], str]]] = {}
        for rec in sl.log_records:
            self.position += 1
            attrs = attributes_of(rec.attributes)
            name = rec.event_name or _text(attrs.get("event.name")) or ""
            key = (bytes(rec.trace_id), bytes(rec.span_id))
            if name == DETAILS_EVENT:
                self.details(rl, sl, rec, attrs, resource, key)
            elif name in MESSAGE_EVENTS or name == CHOICE_EVENT:
                groups.setdefault(key, []).append((rec, attrs, name))
            else:
                self.batch.skipped += 1
        for key, group in groups.items():
            self.messages(rl, sl, key, group, resource)

    def _log_payload(
        self, rl: ResourceLogs, sl: ScopeLogs, recs: Iterable[LogRecord]
    ) -> Callable[[], Message]:
        def payload() -> Message:
            request = ExportLogsServiceRequest()
            out = request.resource_logs.add(resource=rl.resource, schema_url=rl.schema_url)
            out.scope_logs.add(scope=sl.scope, schema_url=sl.schema_url).log_records.extend(recs)
            return request

        return payload

    def details(
        self,
        rl: ResourceLogs,
        sl: ScopeLogs,
        rec: LogRecord,
        attrs: dict[str, Any],
        resource: dict[str, Any],
        key: Key,
    ) -> None:
        if not _is_inference(attrs):
            self.batch.skipped += 1
            return
        span = self.index.facts(key)
        own = self.facts(attrs, resource, None)
        facts = _joined(own, span)
        ts = _time(rec.time_unix_nano) or _time(rec.observed_time_unix_nano)
        self.emit(key, attrs, resource, facts, ts, self._log_payload(rl, sl, [rec]), "log")

    def messages(
        self,
        rl: ResourceLogs,
        sl: ScopeLogs,
        key: Key,
        group: list[tuple[LogRecord, dict[str, Any], str]],
        resource: dict[str, Any],
    ) -> None:
        """The older per-message events of one span: the prompt turns and the choice."""
        turns: list[dict[str, Any]] = []
        choices: list[tuple[int, Any]] = []
        attrs: dict[str, Any] = {}
        for rec, rec_attrs, name in group:
            for k, v in rec_attrs.items():
                attrs.setdefault(k, v)
            body = msg.structured(attrs_body(rec))
            if name == CHOICE_EVENT:
                index = _count(body.get("index")) if isinstance(body, dict) else None
                choices.append((index or 0, body))
            elif isinstance(body, dict):
                turns.append({**body, "role": body.get("role") or MESSAGE_EVENTS[name]})
            elif isinstance(body, str):
                turns.append({"role": MESSAGE_EVENTS[name], "content": body})
        if turns:
            attrs["gen_ai.input.messages"] = turns
        if choices:
            attrs["gen_ai.output.messages"] = [
                body for _, body in sorted(choices, key=lambda c: c[0])
            ]
        first = group[0][0]
        ts = _time(first.time_unix_nano) or _time(first.observed_time_unix_nano)
        facts = _joined(self.facts(attrs, resource, None), self.index.facts(key))
        payload = self._log_payload(rl, sl, [rec for rec, _, _ in group])
        if not any(key):
            self.reject(
                key, REASON_INCOMPLETE, "per-message GenAI events without a span id: "
                "they cannot be joined into one inference", payload,
            )  # fmt: skip
            return
        self.emit(key, attrs, resource, facts, ts, payload, "log")

    def emit(
        self,
        key: Key,
        attrs: dict[str, Any],
        resource: dict[str, Any],
        facts: _Facts,
        ts: datetime | None,
        payload: Callable[[], Message],
        source: str,
    ) -> None:
        if self.index.mapped(key, self.record.coordinates):
            self.batch.duplicates += 1
            return
        prompt, messages, completion = _content(attrs)
        model = self.settings.base_model or facts.model
        missing = [
            name
            for name, absent in (
                ("prompt", prompt is None and not messages),
                ("completion text", completion is None),
            )
            if absent
        ]
        if missing and not self.settings.require_content and model:
            self.index.note(key, facts, mapped=False)
            self.batch.skipped += 1
            return
        if not model:
            missing.append("model (gen_ai.response.model / gen_ai.request.model)")
        if missing:
            self.index.note(key, facts, mapped=False)
            self.reject(
                key, REASON_INCOMPLETE,
                f"GenAI {source} without {', '.join(missing)}", payload,
            )  # fmt: skip
            return
        trace_hex, span_hex = _hex(key)
        fields: dict[str, Any] = {
            "request_id": facts.request_id or (trace_hex + span_hex) or self._position_id(),
            "base_model": model,
            "adapter_version": facts.adapter or "none",
            "prompt": prompt,
            "messages": messages,
            "completion": completion,
            "prompt_tokens": facts.input_tokens,
            "completion_tokens": facts.output_tokens,
            "latency_ms": facts.latency_ms,
            "app": _text(resource.get("service.name")),
            "metadata": {"otel.trace_id": trace_hex, "otel.span_id": span_hex},
        }
        if ts is not None:
            fields["ts"] = ts
        try:
            event = InferenceLog.model_validate(fields)
        except ValidationError as exc:
            self.index.note(key, facts, mapped=False)
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<event>'}: {e['msg']}"
                for e in exc.errors()
            )
            self.reject(
                key, REASON_INVALID, f"GenAI {source} maps to no valid event: {errors}", payload
            )
            return
        self.index.note(key, facts, mapped=True, by=self.record.coordinates)
        self.batch.logs.append(event)

    def _position_id(self) -> str:
        r = self.record
        return f"otlp-{r.topic}-{r.partition}-{r.offset}-{self.position}"

    def reject(self, key: Key, reason: str, error: str, payload: Callable[[], Message]) -> None:
        trace_hex, span_hex = _hex(key)
        where = f"{self.record.coordinates} trace {trace_hex or '-'} span {span_hex or '-'}"
        self.batch.rejected.append(
            Rejected(
                self.record,
                reason,
                f"{where}: {error}",
                dlq_value=encode(payload(), self.encoding),
                notes=(("sentryml-otlp-span", f"{trace_hex}/{span_hex}".encode()),),
            )
        )


def attrs_body(rec: LogRecord) -> Any:
    """A log record's body as plain Python (None when it has none)."""
    return value_of(rec.body) if rec.HasField("body") else None


def _joined(own: _Facts, span: _Facts | None) -> _Facts:
    """An event's facts, completed by its span's (the latency only the span has)."""
    if span is None:
        return own
    return _Facts(
        model=own.model or span.model,
        input_tokens=own.input_tokens if own.input_tokens is not None else span.input_tokens,
        output_tokens=own.output_tokens if own.output_tokens is not None else span.output_tokens,
        request_id=own.request_id or span.request_id,
        adapter=own.adapter or span.adapter,
        latency_ms=span.latency_ms,
    )
