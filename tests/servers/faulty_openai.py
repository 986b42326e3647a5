"""A real OpenAI-compatible chat-completions server on 127.0.0.1 that misbehaves on cue.

It runs aiohttp in a background thread (its own event loop), so the judge client under
test talks to it over real TCP/HTTP. What it does to a request is chosen by a marker in
the request text — the completion under review carries it:

- ``fault=429x2#ID``  — answer 429 with ``Retry-After`` twice, then behave;
- ``fault=500x1#ID``  — one 500, then behave;
- ``fault=404x1#ID``  — one 404 "model not found" (a client error: not to be retried);
- ``fault=hangx9#ID`` — hang (longer than the client's timeout) nine times;
- ``fault=badjsonx1#ID`` — a valid HTTP response whose answer is not valid JSON, once;
- ``fault=badbodyx1#ID`` — an HTTP 200 whose body itself is not JSON, once;
- ``score=N``        — the verdict's score (default 4).

Counts are kept per ``(marker, dimension)``. Every request is logged with its arrival time
and status, and the server tracks how many requests it was answering at once (hanging ones
excepted: the client abandons them at its timeout, the server cannot tell when).

    with FaultyOpenAI() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_MARKER = re.compile(r"fault=(429|500|404|hang|badjson|badbody)x(\d+)#([\w.-]+)")
_SCORE = re.compile(r"score=([1-5])\b")
_DIMENSION = re.compile(r"^Dimension: (.+)$", re.M)


@dataclass(frozen=True)
class Logged:
    """One request the server received."""

    at: float  # time.monotonic() at arrival
    marker: str
    dimension: str
    status: int
    mode: str


class FaultyOpenAI:
    def __init__(
        self,
        *,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        delay_s: float = 0.05,
        reject_json_schema: bool = False,
        model: str = "faulty-judge",
    ) -> None:
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.reject_json_schema = reject_json_schema
        self.model = model
        self.log: list[Logged] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultyOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=1.0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def _stop() -> None:
            assert self._stopping is not None and self._runner is not None
            self._stopping.set()  # release hanging handlers
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FaultyOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------------------
    def requests_for(self, marker_id: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.marker.endswith(f"#{marker_id}")]

    # -- handlers ----------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.json()
        hangs = self._mode_of(body) == "hang"
        if hangs:  # abandoned by the client at its timeout: not "in flight" for it
            return await self._answer(body, arrived)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(body, arrived)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _mode_of(self, body: dict[str, Any]) -> str:
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        found = _MARKER.search(text)
        if not found:
            return "ok"
        dimension = _DIMENSION.search(text)
        key = (found.group(0), dimension.group(1).strip() if dimension else "?")
        with self._lock:  # peek: the count is taken in _answer
            return found.group(1) if self._seen[key] < int(found.group(2)) else "ok"

    async def _answer(self, body: dict[str, Any], arrived: float) -> web.StreamResponse:
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        found = _DIMENSION.search(text)
        dimension = found.group(1).strip() if found else "?"
        fmt = (body.get("response_format") or {}).get("type", "")
        marker_match = _MARKER.search(text)
        marker = marker_match.group(0) if marker_match else ""
        mode = "ok"
        if marker_match:
            with self._lock:
                self._seen[(marker, dimension)] += 1
                nth = self._seen[(marker, dimension)]
            if nth <= int(marker_match.group(2)):
                mode = marker_match.group(1)
        if self.reject_json_schema and fmt == "json_schema":
            mode = "reject_json_schema"

        def record(status: int) -> None:
            with self._lock:
                self.log.append(Logged(arrived, marker, dimension, status, mode))

        if mode == "reject_json_schema":  # what llama-cpp-python's server answers
            record(500)
            return web.json_response(
                {
                    "error": {
                        "message": "1 validation error: {'type': 'literal_error', 'loc': "
                        "('body', 'response_format', 'type'), 'msg': \"Input should be "
                        "'text' or 'json_object'\", 'input': 'json_schema'}",
                        "type": "internal_server_error",
                    }
                },
                status=500,
            )
        if mode == "429":
            record(429)
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                status=429,
                headers={"Retry-After": f"{self.retry_after_s:g}"},
            )
        if mode == "404":
            record(404)
            return web.json_response(
                {"error": {"message": "model not found", "type": "invalid_request_error"}},
                status=404,
            )
        if mode == "500":
            record(500)
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error"}}, status=500
            )
        if mode == "hang":
            record(0)
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hang_s)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if mode == "badbody":
            record(200)
            return web.Response(
                text='{"id": "x", "choices": [', content_type="application/json", status=200
            )
        await asyncio.sleep(self.delay_s)  # long enough for concurrent calls to overlap
        if mode == "badjson":
            content = '{"rationale": "cut short", "score": '
        else:
            score_match = _SCORE.search(text)
            score = int(score_match.group(1)) if score_match else 4
            verdict: dict[str, Any] = {"rationale": f"stub verdict on {dimension}"}
            if dimension == "refusal":
                verdict["refused"] = score <= 2
            else:
                verdict["score"] = score
            content = json.dumps(verdict)
        record(200)
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.log)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(text) // 4,
                    "completion_tokens": len(content) // 4,
                    "total_tokens": len(text) // 4 + len(content) // 4,
                },
            }
        )
