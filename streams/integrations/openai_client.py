"""The OpenAI SDK in one line: ``instrument(client)`` logs every chat completion.

>>> client = instrument(openai.OpenAI(base_url=url), base_model="llama-3-8b")  # doctest: +SKIP
>>> client.chat.completions.create(model="...", messages=[...])                # doctest: +SKIP

``instrument`` replaces ``client.chat.completions.create`` on that client object (sync
``OpenAI`` or ``AsyncOpenAI``, Azure's too) with a wrapper that calls the original, then
hands one :class:`~schemas.events.InferenceLog` to the non-blocking
:class:`~streams.producer.InferenceLogger`: the request's messages, the answer, the token
usage, the latency, and the response id as ``request_id``. With ``stream=True`` the caller
gets the same chunks as before, and the event is logged when the stream ends (with the
usage, if ``stream_options={"include_usage": True}`` asked for it).

Monitoring never fails a request: whatever goes wrong while building or queueing the event
is counted in :attr:`Instrumented.errors` (and logged, rate-limited by the logger), never
raised into the caller. The caller's own errors (a 429, a timeout) pass through untouched
and are not logged as inferences.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streams.integrations._common import chat_messages, content_text
from streams.producer import InferenceLogger

log = logging.getLogger(__name__)


@dataclass
class Instrumented:
    """What :func:`instrument` attached to a client (``client._sentryml``)."""

    logger: InferenceLogger
    base_model: str | None
    adapter_version: str
    app: str | None
    logged: int = 0
    errors: int = 0


def _usage(usage: Any) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


class _Log:
    """Builds and queues the event of one call; every failure is counted, never raised."""

    def __init__(self, state: Instrumented, kwargs: dict[str, Any]) -> None:
        self.state = state
        self.kwargs = kwargs
        self.start = time.perf_counter()

    def done(self, *, response_id: Any, model: Any, completion: str, usage: Any) -> None:
        try:
            latency_ms = (time.perf_counter() - self.start) * 1000
            prompt_tokens, completion_tokens = _usage(usage)
            state = self.state
            queued = state.logger.log(
                request_id=str(response_id or uuid.uuid4()),
                base_model=state.base_model or str(model or self.kwargs.get("model") or "unknown"),
                adapter_version=state.adapter_version,
                messages=chat_messages(self.kwargs.get("messages")),
                completion=completion,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=latency_ms,
                app=state.app,
            )
            if queued:
                state.logged += 1
            else:
                state.errors += 1
        except Exception:  # monitoring must never fail the request
            self.state.errors += 1
            log.debug("sentryml: could not log a chat completion", exc_info=True)

    def response(self, response: Any) -> None:
        try:
            choice = response.choices[0] if response.choices else None
            content = content_text(choice.message.content) if choice else ""
            self.done(
                response_id=response.id, model=response.model, completion=content,
                usage=response.usage,
            )  # fmt: skip
        except Exception:
            self.state.errors += 1


class _StreamState:
    """What a stream's chunks add up to."""

    def __init__(self, call: _Log) -> None:
        self.call = call
        self.parts: list[str] = []
        self.response_id: Any = None
        self.model: Any = None
        self.usage: Any = None
        self.finished = False

    def add(self, chunk: Any) -> None:
        try:
            self.response_id = self.response_id or getattr(chunk, "id", None)
            self.model = self.model or getattr(chunk, "model", None)
            if getattr(chunk, "usage", None) is not None:
                self.usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or ():
                if choice.index == 0 and choice.delta is not None and choice.delta.content:
                    self.parts.append(choice.delta.content)
        except Exception:
            self.call.state.errors += 1

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.call.done(
                response_id=self.response_id, model=self.model,
                completion="".join(self.parts), usage=self.usage,
            )  # fmt: skip


class _SyncStream:
    """The SDK's stream, passed through chunk by chunk; logs when it ends or is closed."""

    def __init__(self, stream: Any, state: _StreamState) -> None:
        self._stream = stream
        self._state = state

    def __iter__(self) -> Iterator[Any]:
        try:
            for chunk in self._stream:
                self._state.add(chunk)
                yield chunk
        finally:
            self._state.finish()

    def __enter__(self) -> _SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._state.finish()

    def __getattr__(self, name: str) -> Any:  # response, headers, ... of the SDK's stream
        return getattr(self._stream, name)


class _AsyncStream:
    def __init__(self, stream: Any, state: _StreamState) -> None:
        self._stream = stream
        self._state = state

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._stream:
                self._state.add(chunk)
                yield chunk
        finally:
            self._state.finish()

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._state.finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_async(client: Any) -> bool:
    try:
        import openai
    except ImportError:  # pragma: no cover - the SDK is what is being instrumented
        return False
    return isinstance(client, openai.AsyncOpenAI)


def instrument(
    client: Any,
    logger: InferenceLogger | None = None,
    *,
    base_model: str | None = None,
    adapter_version: str = "none",
    app: str | None = None,
) -> Any:
    """Log every ``client.chat.completions.create`` call to SentryML; returns ``client``.

    ``base_model`` labels the events (default: the model the response names);
    ``adapter_version`` is the served adapter (``"none"`` for the base model alone).
    Without ``logger`` an :class:`InferenceLogger` is made from ``SENTRYML_*`` settings.
    Instrumenting a client twice keeps one wrapper.
    """
    completions = client.chat.completions
    if getattr(client, "_sentryml", None) is not None:
        return client
    state = Instrumented(
        logger if logger is not None else InferenceLogger(), base_model, adapter_version, app
    )
    original: Callable[..., Any] = completions.create

    if _is_async(client):

        async def create_async(*args: Any, **kwargs: Any) -> Any:
            call = _Log(state, kwargs)
            result = await original(*args, **kwargs)
            if kwargs.get("stream"):
                return _AsyncStream(result, _StreamState(call))
            call.response(result)
            return result

        completions.create = create_async
    else:

        def create(*args: Any, **kwargs: Any) -> Any:
            call = _Log(state, kwargs)
            result = original(*args, **kwargs)
            if kwargs.get("stream"):
                return _SyncStream(result, _StreamState(call))
            call.response(result)
            return result

        completions.create = create
    client._sentryml = state
    return client
