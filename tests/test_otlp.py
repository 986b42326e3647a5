"""OTLP GenAI telemetry → InferenceLog (``workers.otlp``), on real parts.

The telemetry is made by the OpenTelemetry Python SDK: the official OpenAI instrumentation
(``opentelemetry-instrumentation-openai-v2``) around a real ``openai.OpenAI`` client that
calls the local llama.cpp server, or spans and events built with the SDK's own tracer and
logger the way older instrumentations and vLLM set their attributes. The SDK's in-memory
exporters capture them; ``opentelemetry.exporter.otlp.proto.common`` encodes them into the
``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` an OTLP exporter sends to the
Collector, which its Kafka exporter forwards as they are (``otlp_proto``) or as OTLP/JSON
(``otlp_json``, made here by :func:`otlp_json`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

from workers.dlq import RawRecord, redact_rejected
from workers.otlp import (
    REASON_DECODE,
    REASON_INCOMPLETE,
    REASON_INVALID,
    OtlpSettings,
    SpanIndex,
    decode_otlp,
    decode_request,
)
from workers.redact import Redactor

SETTINGS = OtlpSettings()


def otlp_json(request: Any) -> bytes:
    """Test helper: ``request`` in OTLP/JSON, as the Collector's ``otlp_json`` writes it.

    ``json_format.MessageToJson`` is protobuf's JSON mapping, which OTLP/JSON follows
    (camelCase, 64-bit ints as strings, ``AnyValue`` wrappers) except for the ids: protobuf
    writes ``bytes`` as base64, OTLP/JSON writes trace and span ids as hex. So this
    converts every ``traceId`` / ``spanId`` / ``parentSpanId`` from base64 to hex.
    """
    data = json.loads(json_format.MessageToJson(request))

    def hexify(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                hexify(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId"):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)

    hexify(data)
    return json.dumps(data).encode()


def record(value: bytes, topic: str = "otlp_spans", offset: int = 0) -> RawRecord:
    return RawRecord(topic=topic, partition=0, offset=offset, key=None, value=value)


@dataclass
class Telemetry:
    """An SDK tracer and logger provider whose spans and log records stay in memory."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter

    def span_request(self) -> Any:
        return encode_spans(self.spans.get_finished_spans())

    def log_request(self) -> Any:
        return encode_logs(self.logs.get_finished_logs())


def telemetry(**resource: Any) -> Telemetry:
    res = Resource.create({"service.name": "chat-service", **resource})
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tp = TracerProvider(resource=res)
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp = LoggerProvider(resource=res)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return Telemetry(tp, lp, spans, logs)


# -- (1) the official OpenAI instrumentation around a real client and server -------------

MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What colour is the sky on a clear day?"},
]


@pytest.fixture
def instrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory: ``instrumented(mode)`` instruments openai with content ``mode`` captured."""
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ImportError as exc:  # 2.4b0 imports a module opentelemetry-util-genai 1.2 removed
        pytest.fail(
            "opentelemetry-instrumentation-openai-v2 does not import with this "
            f"opentelemetry-util-genai ({exc}); the integrations extra pins "
            "opentelemetry-util-genai<1.2 (rerun scripts/setup.sh)"
        )
    instrumentor = OpenAIInstrumentor()

    def instrument(mode: str) -> Telemetry:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
        tel = telemetry(**{"sentryml.adapter_version": "support-v3"})
        instrumentor.instrument(
            tracer_provider=tel.tracer_provider, logger_provider=tel.logger_provider
        )
        return tel

    yield instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def chat(llm_server: dict[str, str]) -> Any:
    import openai

    client = openai.OpenAI(base_url=llm_server["base_url"], api_key="sk-local", max_retries=0)
    return client.chat.completions.create(
        model=llm_server["model"], messages=MESSAGES, max_tokens=12, temperature=0
    )


def assert_same_as_response(log: Any, response: Any) -> None:
    assert log.messages is not None
    assert [m.model_dump() for m in log.messages] == MESSAGES
    assert log.completion == response.choices[0].message.content
    assert log.completion
    assert log.prompt_tokens == response.usage.prompt_tokens
    assert log.completion_tokens == response.usage.completion_tokens
    assert log.base_model == response.model
    assert log.request_id == response.id
    assert log.adapter_version == "support-v3"  # from the resource
    assert log.app == "chat-service"


def test_openai_v2_spans_and_events_map_to_one_inference(
    llm_server: dict[str, str], instrumented: Any
) -> None:
    """span_and_event: the span and its operation-details event carry the same call; it is
    one inference, from either encoding, and the event alone maps to the same event."""
    tel = instrumented("span_and_event")
    started = time.time()
    response = chat(llm_server)
    elapsed_ms = (time.time() - started) * 1000
    spans, logs = tel.span_request(), tel.log_request()
    (details,) = [r for r in tel.logs.get_finished_logs()]
    assert details.log_record.event_name == "gen_ai.client.inference.operation.details"

    for encode in (lambda r: r.SerializeToString(), otlp_json):
        index = SpanIndex()
        from_spans = decode_otlp(record(encode(spans)), SETTINGS, index=index)
        assert from_spans.rejected == [] and from_spans.skipped == 0
        (log,) = from_spans.logs
        assert_same_as_response(log, response)
        assert log.latency_ms is not None and 0 < log.latency_ms <= elapsed_ms
        # the span's own event, on the logs topic: not counted twice
        from_logs = decode_otlp(record(encode(logs), "otlp_logs"), SETTINGS, index=index)
        assert from_logs.logs == [] and from_logs.duplicates == 1 and from_logs.rejected == []
        # the event alone (no span seen): the same inference, without a latency
        alone = decode_otlp(record(encode(logs), "otlp_logs"), SETTINGS)
        (event_log,) = alone.logs
        assert_same_as_response(event_log, response)
        assert event_log.latency_ms is None
        assert event_log.request_id == log.request_id
        assert event_log.metadata == log.metadata  # the same trace and span ids


def test_openai_v2_event_only_is_joined_to_its_span(
    llm_server: dict[str, str], instrumented: Any
) -> None:
    """event_only: the span has no text; the event has it, and takes the span's latency."""
    tel = instrumented("event_only")
    response = chat(llm_server)
    spans, logs = tel.span_request().SerializeToString(), tel.log_request().SerializeToString()
    assert b"gen_ai.input.messages" not in spans

    index = SpanIndex()
    quiet = OtlpSettings(require_content=False)
    from_spans = decode_otlp(record(spans), quiet, index=index)
    assert from_spans.logs == [] and from_spans.rejected == [] and from_spans.skipped == 1
    from_logs = decode_otlp(record(logs, "otlp_logs"), quiet, index=index)
    (log,) = from_logs.logs
    assert_same_as_response(log, response)
    assert log.latency_ms is not None and log.latency_ms > 0  # the span's duration

    # with content required (the default), the text-less span is dead-lettered alone
    strict = decode_otlp(record(spans), SETTINGS)
    (rejected,) = strict.rejected
    assert rejected.reason == REASON_INCOMPLETE
    assert "completion text" in rejected.error


def test_openai_v2_without_content_capture_is_incomplete(
    llm_server: dict[str, str], instrumented: Any
) -> None:
    tel = instrumented("no_content")
    chat(llm_server)
    batch = decode_otlp(record(tel.span_request().SerializeToString()), SETTINGS)
    assert batch.logs == []
    assert [r.reason for r in batch.rejected] == [REASON_INCOMPLETE]
    assert tel.logs.get_finished_logs() == ()  # no event without content


# -- (2) older attribute names, built with the SDK --------------------------------------


def vllm_style_span(tel: Telemetry, **extra: Any) -> None:
    """A span as vLLM and pre-1.28 instrumentations set it: gen_ai.prompt / completion."""
    tracer = tel.tracer_provider.get_tracer("vllm.engine")
    attributes = {
        "gen_ai.response.model": "meta-llama/Llama-3.1-8B-Instruct",
        "gen_ai.request.id": "cmpl-42",
        "gen_ai.usage.prompt_tokens": 17,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.prompt": "Translate to French: good morning",
        "gen_ai.completion": "Bonjour",
        **extra,
    }
    with tracer.start_as_current_span("llm_request", attributes=attributes):
        time.sleep(0.002)


def test_older_attribute_names() -> None:
    tel = telemetry()
    vllm_style_span(tel, **{"sentryml.adapter_version": "fr-v2"})
    tracer = tel.tracer_provider.get_tracer("openllmetry")
    flat = {
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be terse.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Capital of Peru?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Lima.",
        "gen_ai.usage.prompt_tokens": 12,
        "gen_ai.usage.completion_tokens": 2,
    }
    with tracer.start_as_current_span("openai.chat", attributes=flat):
        pass
    with tracer.start_as_current_span(
        "chat gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"}
    ) as span:
        # the 1.27 conventions: content as span events
        span.add_event(
            "gen_ai.content.prompt",
            {"gen_ai.prompt": json.dumps([{"role": "user", "content": "Hi"}])},
        )
        span.add_event(
            "gen_ai.content.completion",
            {"gen_ai.completion": "[{'role': 'assistant', 'content': 'Hello!'}]"},
        )

    request = tel.span_request()
    for value in (request.SerializeToString(), otlp_json(request)):
        batch = decode_otlp(record(value), SETTINGS)
        assert batch.rejected == []
        vllm, openllmetry, events = batch.logs
        assert (vllm.prompt, vllm.completion) == ("Translate to French: good morning", "Bonjour")
        assert (vllm.prompt_tokens, vllm.completion_tokens) == (17, 5)
        assert vllm.base_model == "meta-llama/Llama-3.1-8B-Instruct"
        assert vllm.adapter_version == "fr-v2"
        assert vllm.latency_ms is not None and vllm.latency_ms >= 2
        assert vllm.request_id == "cmpl-42"  # no response id: vLLM's gen_ai.request.id
        assert [(m.role, m.content) for m in openllmetry.messages or []] == [
            ("system", "Be terse."),
            ("user", "Capital of Peru?"),
        ]
        assert openllmetry.completion == "Lima." and openllmetry.base_model == "gpt-4o-mini"
        assert [(m.role, m.content) for m in events.messages or []] == [("user", "Hi")]
        assert events.completion == "Hello!"

    # a configured request-id attribute (vLLM's own id) and model override
    settings = OtlpSettings(request_id_attribute="gen_ai.request.id", base_model="llama-ft")
    first = decode_otlp(record(request.SerializeToString()), settings).logs[0]
    assert (first.request_id, first.base_model) == ("cmpl-42", "llama-ft")


def test_older_per_message_events_join_their_span() -> None:
    """gen_ai.system.message / gen_ai.user.message / gen_ai.choice log events, with body
    content, emitted in the span's context: one inference with the span's model."""
    tel = telemetry()
    tracer = tel.tracer_provider.get_tracer("legacy")
    logger = tel.logger_provider.get_logger("legacy")
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": "chatcmpl-legacy",
            "gen_ai.usage.input_tokens": 9,
            "gen_ai.usage.output_tokens": 3,
        },
    ) as span:
        context = set_span_in_context(span)
        for name, body in (
            ("gen_ai.system.message", {"content": "Answer in French."}),
            ("gen_ai.user.message", {"content": "Thank you"}),
            ("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Merci"}}),
        ):  # fmt: skip
            logger.emit(
                LogRecord(
                    event_name=name,
                    body=body,
                    attributes={"gen_ai.system": "openai"},
                    context=context,
                )
            )
    spans = tel.span_request().SerializeToString()
    logs = tel.log_request()

    index = SpanIndex()
    # the span (no content) comes first, content not required: remembered, not mapped
    first = decode_otlp(record(spans), OtlpSettings(require_content=False), index=index)
    assert first.logs == [] and first.skipped == 1
    for value in (logs.SerializeToString(), otlp_json(logs)):
        batch = decode_otlp(record(value, "otlp_logs"), SETTINGS, index=SpanIndex())
        # without its span: no model, so it is dead-lettered
        assert [r.reason for r in batch.rejected] == [REASON_INCOMPLETE]
        assert "model" in batch.rejected[0].error
    joined = decode_otlp(record(logs.SerializeToString(), "otlp_logs"), SETTINGS, index=index)
    (log,) = joined.logs
    assert [(m.role, m.content) for m in log.messages or []] == [
        ("system", "Answer in French."),
        ("user", "Thank you"),
    ]
    assert log.completion == "Merci"
    assert log.base_model == "gpt-4o-mini-2024-07-18"
    assert (log.prompt_tokens, log.completion_tokens) == (9, 3)
    assert log.request_id == "chatcmpl-legacy"
    assert log.latency_ms is not None
    again = decode_otlp(record(logs.SerializeToString(), "otlp_logs", 1), SETTINGS, index=index)
    assert again.logs == [] and again.duplicates == 1  # a redelivery is not counted twice
    # The same record decoded again (the ingest agent retries a batch while the store is
    # down) is the same inference, not a duplicate of itself.
    retried = decode_otlp(record(logs.SerializeToString(), "otlp_logs"), SETTINGS, index=index)
    assert retried.logs == joined.logs and retried.duplicates == 0


# -- (3) the DLQ reasons --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", "otlp_proto"),  # truncated protobuf
        (b"{not json", "auto"),
        (b'{"type": "sentryml.inference_log.v1", "request_id": "r1"}', "otlp_json"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "auto"),
        (b'{"resourceSpans": "nope"}', "otlp_json"),
    ],
)
def test_undecodable_payload_is_one_rejection_of_the_record(value: bytes, encoding: str) -> None:
    batch = decode_otlp(record(value), OtlpSettings(encoding=encoding))  # type: ignore[arg-type]
    (rejected,) = batch.rejected
    assert rejected.reason == REASON_DECODE
    assert rejected.value == value  # the record as it came
    assert "otlp_spans[0]@0" in rejected.error
    assert batch.logs == []


def test_unmappable_inferences_are_rejected_one_by_one() -> None:
    tel = telemetry()
    tracer = tel.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span(
        "chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.prompt": "hi"}
    ):
        pass  # no model and no completion
    vllm_style_span(tel, **{"gen_ai.response.id": "x" * 300})  # request_id too long
    vllm_style_span(tel, **{"gen_ai.prompt": "mail jane@example.com", "gen_ai.response.model": ""})
    vllm_style_span(tel)  # fine
    request = tel.span_request()
    for value, encoding in (
        (request.SerializeToString(), "otlp_proto"),
        (otlp_json(request), "otlp_json"),
    ):
        batch = decode_otlp(record(value), SETTINGS)
        assert len(batch.logs) == 1
        reasons = [r.reason for r in batch.rejected]
        assert reasons == [REASON_INCOMPLETE, REASON_INVALID, REASON_INCOMPLETE]
        assert "completion text" in batch.rejected[0].error and "model" in batch.rejected[0].error
        assert "request_id" in batch.rejected[1].error
        # each DLQ payload is its one span, in the record's encoding, and decodes again
        for rejected in batch.rejected:
            again = decode_request(rejected.value, encoding, "traces")  # type: ignore[arg-type]
            (span,) = [s for rs in again.resource_spans for ss in rs.scope_spans for s in ss.spans]
            assert (
                dict(rejected.notes)["sentryml-otlp-span"]
                == f"{span.trace_id.hex()}/{span.span_id.hex()}".encode()
            )
        # and the DLQ contract applies: PII in the payload is masked
        if encoding == "otlp_json":
            masked = redact_rejected(batch.rejected[2], Redactor())
            assert b"jane@example.com" not in masked.value and b"[EMAIL]" in masked.value


def test_future_timestamp_is_invalid() -> None:
    tel = telemetry()
    tracer = tel.tracer_provider.get_tracer("t")
    later = time.time_ns() + 3600 * 10**9
    span = tracer.start_span("llm_request", start_time=later, attributes={
        "gen_ai.response.model": "m", "gen_ai.prompt": "p", "gen_ai.completion": "c",
    })  # fmt: skip
    span.end(end_time=later + 10**6)
    (rejected,) = decode_otlp(record(tel.span_request().SerializeToString()), SETTINGS).rejected
    assert rejected.reason == REASON_INVALID and "ts" in rejected.error


def test_empty_and_non_genai_payloads_are_no_error() -> None:
    tel = telemetry()
    with tel.tracer_provider.get_tracer("http").start_as_current_span("GET /health"):
        pass
    batch = decode_otlp(record(tel.span_request().SerializeToString()), SETTINGS)
    assert (batch.logs, batch.rejected, batch.skipped) == ([], [], 1)
    empty = decode_otlp(record(b'{"resourceSpans": []}'), SETTINGS)
    assert (empty.logs, empty.rejected, empty.skipped) == ([], [], 0)


# -- (4) a mixed batch ----------------------------------------------------------------------


def test_mixed_batch_skips_what_is_no_inference() -> None:
    tel = telemetry()
    tracer = tel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /answer", attributes={"http.request.method": "POST"}):
        vllm_style_span(tel)
        with tracer.start_as_current_span("embeddings", attributes={
            "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "minilm",
        }):  # fmt: skip
            pass
        vllm_style_span(
            tel,
            **{"gen_ai.prompt": "Translate to French: thanks", "gen_ai.completion": "Merci",
               "gen_ai.request.id": "cmpl-43"},
        )  # fmt: skip
    request = tel.span_request()
    for value in (request.SerializeToString(), otlp_json(request)):
        batch = decode_otlp(record(value), SETTINGS)
        assert batch.rejected == []
        assert batch.skipped == 2  # the HTTP span and the embeddings call
        assert [log.completion for log in batch.logs] == ["Bonjour", "Merci"]
        assert len({log.request_id for log in batch.logs}) == 2
        assert all(log.app == "chat-service" for log in batch.logs)


def test_one_topic_for_both_signals_is_told_from_the_payload() -> None:
    tel = telemetry()
    vllm_style_span(tel)
    logger = tel.logger_provider.get_logger("x")
    logger.emit(LogRecord(event_name="gen_ai.client.inference.operation.details", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}],
        "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "Yo"}]}],
    }))  # fmt: skip
    shared = OtlpSettings(traces_topic="otel", logs_topic="otel")
    spans: Sequence[bytes] = (tel.span_request().SerializeToString(), otlp_json(tel.span_request()))
    logs: Sequence[bytes] = (tel.log_request().SerializeToString(), otlp_json(tel.log_request()))
    for value in spans:
        assert [log.completion for log in decode_otlp(record(value, "otel"), shared).logs] == [
            "Bonjour"
        ]
    for value in logs:
        (log,) = decode_otlp(record(value, "otel"), shared).logs
        assert (log.prompt_text, log.completion, log.base_model) == ("Hi", "Yo", "m")
