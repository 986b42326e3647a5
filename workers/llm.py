"""The one OpenAI-compatible chat-completion client: every model call SentryML makes.

The judge (:class:`workers.judge.JudgeClient`) and the golden runner
(:class:`workers.golden.OpenAIChat`) both call their model through :class:`ChatClient`:
an async ``openai`` SDK client whose own retries are off (``max_retries=0``), so that
retries are ours — :mod:`workers.retry`'s jittered exponential backoff, ``Retry-After``
honoured — with a per-call timeout and at most ``max_concurrency`` calls in flight.

Failures leave as SentryML errors with a machine-readable ``reason`` and the number of
``attempts``: :class:`LLMUnavailable` when the endpoint kept failing (``rate_limited``,
``server_error``, ``timeout``, ``connection``, ``bad_response``) and :class:`LLMRejected`
when it refused the request itself (``rejected``: 400/401/403/404/422, not retried).

A call constrained to a JSON Schema sends it as ``response_format``: ``json_schema``
(OpenAI, vLLM, Ollama) or llama-cpp-python's ``json_object`` with a schema; ``auto``
starts with ``json_schema`` and switches for good once the endpoint rejects it.

>>> llm = ChatClient(base_url="http://127.0.0.1:8080/v1", model="m")   # doctest: +SKIP
>>> (await llm.complete([{"role": "user", "content": "hi"}], max_tokens=8)).content  # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import openai
from pydantic import SecretStr

from workers.exceptions import WorkerError
from workers.retry import (
    RetriesExhausted,
    Retry,
    RetryPolicy,
    retry_after_s,
    retry_async,
    transient_status,
)

log = logging.getLogger(__name__)

ResponseFormat = Literal["auto", "json_schema", "json_object"]


class LLMError(WorkerError):
    """Base of the model-call errors; ``reason`` is a short machine-readable class of the
    failure (``rate_limited``, ``server_error``, ``timeout``, ``connection``,
    ``bad_response``, ``rejected``) and ``attempts`` the HTTP attempts it took."""

    def __init__(self, message: str, *, reason: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class LLMUnavailable(LLMError):
    """The model endpoint kept failing (429, 5xx, timeouts, connection errors, bodies that
    are not a chat completion) after every retry, or asked to wait longer than allowed.

    Check that the endpoint is up and not overloaded; lower the concurrency if it
    rate-limits.
    """


class LLMRejected(LLMError):
    """The model endpoint refused the request itself (400/401/403/404/422): a configuration
    problem (model name, API key, response format), not retried."""


@dataclass(frozen=True)
class Completion:
    """One successful chat completion. Token counts are ``None`` when the server reported
    no usage."""

    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    attempts: int


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ChatClient:
    """Async chat completions on an OpenAI-compatible endpoint, with bounded concurrency
    and :mod:`workers.retry` retries.

    ``name`` says whose endpoint it is in errors and logs (``judge at URL failed ...``).
    ``max_retry_after_s``: a ``Retry-After`` (429 or 5xx) longer than this fails the call at
    once (:class:`LLMUnavailable`) instead of waiting; ``None`` waits at most the policy's
    ``max_s``. ``max_concurrency=None`` leaves the bound to the caller.
    ``http_client`` is an HTTP client for the SDK (an ``httpx2.AsyncClient``: proxies,
    custom TLS); ``sdk_client`` replaces the SDK client itself. ``sleep`` and ``rng`` make
    the backoff schedule reproducible. One client belongs to one event loop. The API key is
    handed to the SDK and never logged nor shown in ``repr``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr = SecretStr("sk-local"),
        timeout_s: float = 60.0,
        max_concurrency: int | None = None,
        policy: RetryPolicy = RetryPolicy(),
        max_retry_after_s: float | None = None,
        response_format: ResponseFormat = "auto",
        name: str = "model",
        http_client: Any = None,
        sdk_client: Any = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.policy = policy
        self.max_retry_after_s = max_retry_after_s
        self.response_format = response_format
        self.name = name
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._sdk = sdk_client or openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key.get_secret_value(),
            timeout=timeout_s,
            max_retries=0,  # retries are ours: jitter, Retry-After, a known number
            http_client=http_client,
        )
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._style = "json_schema" if response_format == "auto" else response_format
        #: HTTP calls in flight now, and the most ever in flight at once.
        self.in_flight = 0
        self.max_in_flight = 0
        #: counters: ``attempts`` (HTTP calls), ``retry:<reason>`` (retries made)
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ChatClient({self.name} at {self.base_url}, model={self.model!r})"

    @property
    def what(self) -> str:
        return f"{self.name} at {self.base_url}"

    @property
    def retries(self) -> int:
        """Retries made so far, whatever their reason."""
        return sum(n for key, n in self.stats.items() if key.startswith("retry:"))

    @property
    def response_format_style(self) -> str:
        """``json_schema`` or ``json_object`` (what ``auto`` settled on)."""
        return self._style

    async def aclose(self) -> None:
        await self._sdk.close()

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._semaphore or contextlib.nullcontext():
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1

    @staticmethod
    def _format_args(style: str, schema: dict[str, Any] | None, name: str) -> dict[str, Any]:
        if schema is None:
            return {}
        if style == "json_schema":
            # strict=False: strict mode on OpenAI rejects keywords such as maxLength that
            # local grammars use; the caller's own parsing is strict either way.
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
            fmt["json_schema"]["strict"] = False  # type: ignore[index]
            return {"response_format": fmt}
        # llama-cpp-python's form; sent raw because it is not in the SDK's types.
        return {"extra_body": {"response_format": {"type": "json_object", "schema": schema}}}

    def _may_fall_back(self, exc: openai.APIStatusError, style_used: str) -> bool:
        if self.response_format != "auto" or style_used != "json_schema":
            return False
        # llama-cpp-python answers a json_schema response_format with a 500 carrying its
        # validation error ("Input should be 'text' or 'json_object'"); others use 400/422.
        if exc.status_code not in (400, 422, 500):
            return False
        text = f"{exc} {getattr(exc, 'body', '')}"
        return "response_format" in text and ("json_schema" in text or "json_object" in text)

    async def _create(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        schema: dict[str, Any] | None,
        schema_name: str,
        attempt: int,
    ) -> Completion:
        """One attempt: one HTTP call, or two when ``auto`` learns the endpoint's dialect."""
        while True:
            style = self._style
            self.stats["attempts"] += 1
            try:
                async with self._slot():
                    start = time.monotonic()
                    response = await self._sdk.chat.completions.create(
                        model=self.model,
                        messages=messages,  # type: ignore[arg-type]
                        temperature=temperature,
                        max_tokens=max_tokens,
                        **self._format_args(style, schema, schema_name),
                    )
                    latency_ms = (time.monotonic() - start) * 1000
            except openai.APIStatusError as exc:
                if schema is None or not self._may_fall_back(exc, style):
                    raise
                if self._style == "json_schema":  # else a concurrent call switched already
                    log.warning(
                        "%s rejects response_format json_schema; using json_object with a "
                        "schema (llama-cpp-python style) from now on",
                        self.what,
                    )
                    self._style = "json_object"
                continue  # the endpoint's dialect, not a failure
            usage = response.usage
            choice = response.choices[0] if response.choices else None
            return Completion(
                content=(choice.message.content or "") if choice else "",
                finish_reason=choice.finish_reason if choice else None,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                latency_ms=latency_ms,
                attempts=attempt,
            )

    def classify(self, exc: Exception, attempt: int) -> Retry | None:
        """:func:`workers.retry.retry_async`'s verdict on a failed attempt: transient
        failures are retried; a rejection, or a ``Retry-After`` longer than
        ``max_retry_after_s``, raises at once."""
        if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError, its base
            return Retry("timeout", f"no answer within {self.timeout_s}s: {_describe(exc)}"[:500])
        if isinstance(exc, openai.APIConnectionError):
            return Retry("connection", _describe(exc)[:500])
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if not transient_status(status):
                raise LLMRejected(
                    f"{self.what} rejected the request (HTTP {status}): {_describe(exc)}",
                    reason="rejected",
                    attempts=attempt,
                ) from exc
            reason = "rate_limited" if status == 429 else "server_error"
            wait = retry_after_s(exc.response.headers)
            limit = self.max_retry_after_s
            if wait is not None and limit is not None and wait > limit:
                raise LLMUnavailable(
                    f"{self.what} asks to wait {wait:.0f}s (Retry-After), more than "
                    f"the {limit:g}s it may wait",
                    reason=reason,
                    attempts=attempt,
                ) from exc
            return Retry(reason, _describe(exc)[:500], wait)
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            # A 200 whose body is not a chat completion at all (a proxy's HTML page,
            # cut-off JSON): the server's fault, retried like a 5xx.
            return Retry("bad_response", _describe(exc)[:500])
        return None

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        schema_name: str = "answer",
    ) -> Completion:
        """One chat completion, constrained to ``schema`` when given; raises
        :class:`LLMUnavailable` / :class:`LLMRejected`."""
        attempt = 0

        async def call() -> Completion:
            nonlocal attempt
            attempt += 1
            return await self._create(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                schema=schema,
                schema_name=schema_name,
                attempt=attempt,
            )

        def counted(number: int, verdict: Retry) -> None:
            limit = self.policy.max_attempts
            if limit is None or number < limit:  # a retry follows
                self.stats[f"retry:{verdict.reason}"] += 1

        try:
            return await retry_async(
                call,
                self.policy,
                lambda exc: self.classify(exc, attempt),
                what=self.what,
                sleep=self._sleep,
                rng=self._rng,
                on_retry=counted,
            )
        except RetriesExhausted as exc:
            raise LLMUnavailable(str(exc), reason=exc.reason, attempts=exc.attempts) from exc
