"""Judge scores as ``gen_ai.evaluation.result`` events, sent by the official OTLP/HTTP
exporter and read back with the official OTLP protobuf classes.

The receiving end is a local HTTP server that decodes what a Collector's OTLP/HTTP
receiver would get (a real Collector builds here in ~3 minutes, too slow for every run).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from workers.dlq import RawRecord
from workers.judge import EvaluationEmitter

TRACE, SPAN = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/logs", got
    finally:
        server.shutdown()


def _row(request_id: str, dimension: str, score: int | None, ok: bool = True) -> dict[str, Any]:
    return {
        "request_id": request_id, "dimension": dimension, "score": score, "ok": ok,
        "rationale": f"{dimension} rationale", "base_model": "m", "adapter_version": "v2",
        "judge_model": "judge-1",
    }  # fmt: skip


def test_scores_become_evaluation_events_parented_to_their_span(receiver: Any) -> None:
    url, got = receiver
    emitter = EvaluationEmitter(url, headers={"authorization": "Bearer k"})
    otlp_log = {"request_id": "r-otel", "metadata": {"otel.trace_id": TRACE, "otel.span_id": SPAN}}
    records = [RawRecord("judge-requests", 0, 0, None, json.dumps(otlp_log).encode())]
    rows = [
        _row("r-otel", "format", 5),
        _row("r-sdk", "refusal", 1),
        _row("r-failed", "factual", None, ok=False),  # a failed judge call has no score
    ]
    assert emitter.emit(rows, records) == 2
    assert emitter.flush()
    emitter.close()
    records_sent = []
    for headers, body in got:
        assert headers["authorization"] == "Bearer k"
        request = ExportLogsServiceRequest.FromString(body)
        for rl in request.resource_logs:
            service = {a.key: a.value.string_value for a in rl.resource.attributes}
            assert service["service.name"] == "sentryml-judge"
            records_sent += [r for sl in rl.scope_logs for r in sl.log_records]
    assert len(records_sent) == 2
    by_id = {}
    for rec in records_sent:
        attrs = {a.key: a.value for a in rec.attributes}
        assert rec.event_name == "gen_ai.evaluation.result"
        by_id[attrs["gen_ai.response.id"].string_value] = (rec, attrs)
    rec, attrs = by_id["r-otel"]
    assert rec.trace_id.hex() == TRACE and rec.span_id.hex() == SPAN  # beside its trace
    assert attrs["gen_ai.evaluation.name"].string_value == "format"
    assert attrs["gen_ai.evaluation.score.value"].double_value == 5.0
    assert attrs["gen_ai.evaluation.score.label"].string_value == "pass"
    assert attrs["gen_ai.evaluation.explanation"].string_value == "format rationale"
    rec, attrs = by_id["r-sdk"]
    assert rec.trace_id == b""  # not from OTLP: correlated by gen_ai.response.id only
    assert attrs["gen_ai.evaluation.score.label"].string_value == "refusal"


def test_the_worker_builds_the_emitter_only_when_an_endpoint_is_set(
    store: Any, store_settings: Any
) -> None:
    from streams.app import create_app
    from streams.config import WorkerSettings
    from workers.judge import JudgeSettings

    for endpoint, expected in (
        (None, type(None)),
        ("http://127.0.0.1:9/v1/logs", EvaluationEmitter),
    ):
        settings = WorkerSettings(store=store_settings, judge=JudgeSettings(otlp_endpoint=endpoint))
        _, ctx = create_app(settings, store=store, agent_modules=())
        assert ctx.judge is not None and isinstance(ctx.judge.evaluations, expected)
