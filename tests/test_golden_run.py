"""The golden runner against real local servers and chDB: storage, comparison, retries, pages.

The model here is either an injected ``generate(case)`` (the trainer's entry point) or a
real misbehaving OpenAI-compatible server (``tests/servers/faulty_openai.py``). The real
SmolLM2 server and the Kafka alerts topic are in ``test_golden_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from schemas.events import Alert, utcnow
from tests.servers.faulty_openai import FaultyOpenAI
from workers.alerts import AlertSink, NotifyError, post_webhook_sync, slack_payload
from workers.golden import GoldenCase, GoldenSet, ModelUnavailable, OpenAIChat, run_golden

REPLY = {"type": "object", "required": ["intent", "answer"]}


def golden_set() -> GoldenSet:
    def c(cid: str, tags: list[str], checks: dict, **kw: object) -> GoldenCase:
        return GoldenCase.model_validate(
            {"id": cid, "prompt": f"prompt {cid}", "tags": tags, "checks": checks, **kw}
        )

    return GoldenSet(
        name="unit",
        cases=[
            c("fmt", ["format"], {"json_schema": REPLY}),
            c("refund", ["domain"], {"contains": ["30 days"]}, expected="Within 30 days."),
            c("unsafe", ["safety"], {"refusal": True}),
        ],
    )


class Recorder:
    """An alerts-topic stand-in for the AlertSink (the real topic is tested with the broker)."""

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    async def __call__(self, alert: Alert) -> None:
        self.sent.append(alert)


def test_runs_are_stored_compared_and_page_when_under_threshold(store) -> None:
    good = {
        "fmt": '{"intent": "refund", "answer": "ok"}',
        "refund": "Returns are accepted within 30 days.",
        "unsafe": "I'm sorry, but I can't help with that.",
    }
    first = asyncio.run(
        run_golden(
            golden_set(),
            lambda c: good[c.id],
            base_model="m",
            adapter_version="v1",
            threshold=0.9,
            store=store,
        )
    )
    assert first.ok and first.run.pass_rate == 1.0 and first.previous_run_id is None
    assert first.alert is None and not first.paged

    regressed = {**good, "refund": "Returns are accepted within 14 days."}
    publish = Recorder()
    sink = AlertSink(store, publish, now=utcnow)
    second = asyncio.run(
        run_golden(golden_set(), lambda c: regressed[c.id], base_model="m", adapter_version="v1",
                   threshold=0.9, store=store, alerts=sink, trigger="deploy")
    )  # fmt: skip
    assert not second.ok and second.paged
    assert (second.run.passed, second.run.total) == (2, 3)
    assert second.run.pass_rate == pytest.approx(2 / 3)
    assert second.run.tag_pass_rates == {"domain": 0.0, "format": 1.0, "safety": 1.0}
    assert second.previous_run_id == first.run.run_id and second.newly_failing == ["refund"]

    runs = store.query(
        "SELECT run_id, trigger, total, passed, failed_case_ids, tag_pass_rates "
        "FROM golden_runs FINAL ORDER BY ts"
    ).rows
    assert [r[:4] for r in runs] == [
        (first.run.run_id, "manual", 3, 3),
        (second.run.run_id, "deploy", 3, 2),
    ]
    assert json.loads(runs[1][4]) == ["refund"] and json.loads(runs[1][5])["domain"] == 0.0
    failed = store.query(
        "SELECT case_id, tags, passed, failed_checks, expected, output, details "
        "FROM golden_results FINAL WHERE run_id = {r:String} AND passed = 0",
        {"r": second.run.run_id},
    ).rows
    assert len(failed) == 1
    cid, tags, passed, checks, expected, output, details = failed[0]
    assert (cid, tags, passed, checks) == ("refund", ["domain"], 0, ["contains"])
    assert expected == "Within 30 days." and "14 days" in output
    assert json.loads(details) == {"contains": "missing ['30 days']"}
    assert store.query("SELECT count() FROM golden_results").scalar() == 6

    # The page: one alert, stored and published, naming the newly failing case.
    assert [a.alert_id for a in publish.sent] == [f"golden-{second.run.run_id}"]
    page = publish.sent[0]
    assert (page.kind, page.severity, page.feature) == ("golden", "page", "unit")
    assert page.value == pytest.approx(2 / 3) and page.threshold == 0.9
    assert "newly failing: refund" in page.message
    stored = store.query("SELECT alert_id, kind, severity FROM alerts").rows
    assert stored == [(page.alert_id, "golden", "page")]


def test_threshold_is_inclusive_and_validated() -> None:
    outputs = {"fmt": "not json", "refund": "30 days", "unsafe": "I can't help with that."}

    def run(threshold: float):
        return asyncio.run(
            run_golden(golden_set(), lambda c: outputs[c.id], base_model="m", threshold=threshold)
        )

    assert run(2 / 3).ok and not run(0.67).ok
    assert run(0.0).ok
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        run(1.01)


def test_judge_cases_need_a_judge() -> None:
    gs = GoldenSet(
        name="j",
        cases=[GoldenCase(id="j1", prompt="p", checks={"judge": {"rubric": "polite"}})],  # type: ignore[arg-type]
    )
    from workers.golden import GoldenError

    with pytest.raises(GoldenError, match=r"\['j1'\] have a judge check"):
        asyncio.run(run_golden(gs, lambda c: "x", base_model="m"))


def _cases(prompts: dict[str, str]) -> list[GoldenCase]:
    return [
        GoldenCase(id=cid, prompt=p, checks={"json_schema": {"type": "object"}})  # type: ignore[arg-type]
        for cid, p in prompts.items()
    ]


def test_openai_chat_retries_transient_errors_with_bounded_concurrency() -> None:
    prompts = {
        "rate-limited": "fault=429x2#rl",
        "flaky": "fault=500x1#fl",
        "down": "fault=500x9#dn",  # more failures than retries: this case errors
        **{f"plain-{i}": f"hello {i}" for i in range(5)},
    }
    with FaultyOpenAI(retry_after_s=0.05, delay_s=0.1) as server:
        chat = OpenAIChat(server.base_url, "faulty-judge", retries=2, backoff_s=0.01)
        result = asyncio.run(
            run_golden(_cases(prompts), chat, base_model="m", threshold=0.5, concurrency=2)
        )
        assert [r.status for r in server.requests_for("rl")] == [429, 429, 200]
        assert [r.status for r in server.requests_for("fl")] == [500, 200]
        assert [r.status for r in server.requests_for("dn")] == [500, 500, 500]
        assert 1 <= server.max_in_flight <= 2
    by_id = {r.case_id: r for r in result.results}
    assert by_id["rate-limited"].passed and by_id["flaky"].passed
    down = by_id["down"]
    assert not down.passed and down.failed_checks == ["generation"]
    assert "InternalServerError" in (down.error or "")
    assert result.run.failed_case_ids == ["down"] and result.run.total == 8
    assert chat.retried == 5


def test_model_unavailable_when_nothing_could_be_generated() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(ModelUnavailable, match="APIConnectionError"):
        asyncio.run(run_golden(_cases({"a": "x", "b": "y"}), chat, base_model="m"))


# -- the webhook ---------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    script: ClassVar[dict[str, list[int]]] = {}
    bodies: ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append((self.path, body))
        statuses = self.script.get(self.path, [])
        status = statuses.pop(0) if statuses else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"nope")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[str]:
    _Hook.script, _Hook.bodies = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)


def _alert() -> Alert:
    return Alert(
        alert_id="golden-r1", base_model="m", adapter_version="v2", kind="golden",
        severity="page", value=0.5, threshold=0.95, message="pass rate 50% < 95%",
    )  # fmt: skip


def test_webhook_retries_5xx_and_429_then_delivers(webhook_server: str) -> None:
    _Hook.script["/hook"] = [503, 429]
    alert = _alert()
    post_webhook_sync(f"{webhook_server}/hook", alert, retries=3, backoff_s=0.01)
    assert len(_Hook.bodies) == 3
    body = _Hook.bodies[-1][1]
    assert body == slack_payload(alert)
    assert "*PAGE* golden on `m/v2`: pass rate 50% < 95%" in body["text"]
    assert body["sentryml"]["alert_id"] == "golden-r1"


def test_webhook_gives_up_on_4xx_at_once_and_after_retries_on_5xx(webhook_server: str) -> None:
    _Hook.script["/gone"] = [404]
    with pytest.raises(NotifyError, match="rejected alert golden-r1: HTTP 404"):
        post_webhook_sync(f"{webhook_server}/gone", _alert(), retries=3, backoff_s=0.01)
    assert len(_Hook.bodies) == 1
    _Hook.script["/down"] = [500, 500, 500]
    with pytest.raises(NotifyError, match="after 2 attempts: HTTP 500"):
        post_webhook_sync(f"{webhook_server}/down", _alert(), retries=1, backoff_s=0.01)
    assert len(_Hook.bodies) == 3
