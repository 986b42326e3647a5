"""The one model client (workers/llm.py) against a scripted SDK: which failures are retried,
with what reason, how long it waits, and what leaves as which SentryML error. The real HTTP
paths are in test_judge_client.py and test_golden_run.py (a misbehaving local server)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
from pydantic import SecretStr

from schemas.exceptions import SentryMLError
from workers.llm import ChatClient, LLMRejected, LLMUnavailable
from workers.retry import RetryPolicy

URL = "http://127.0.0.1:9/v1"
REQUEST = httpx2.Request("POST", f"{URL}/chat/completions")


def _status(cls: type[openai.APIStatusError], status: int, **headers: str) -> Exception:
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    return cls(f"Error code: {status}", response=response, body=None)


def _reply(content: str = "ok", usage: bool = True) -> Any:
    message = SimpleNamespace(content=content)
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message, finish_reason="stop")],
        usage=SimpleNamespace(prompt_tokens=7, completion_tokens=2) if usage else None,
    )


class ScriptedSDK:
    """Stands in for ``openai.AsyncOpenAI``: each call takes the next reply or raises it."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        pass


def _client(sdk: ScriptedSDK, **kw: Any) -> tuple[ChatClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = kw.pop("policy", RetryPolicy(max_attempts=3, base_s=0.01, max_s=2.0))
    client = ChatClient(base_url=URL, model="m", sdk_client=sdk, sleep=sleep, policy=policy, **kw)
    return client, slept


def _complete(client: ChatClient, **kw: Any) -> Any:
    return asyncio.run(client.complete([{"role": "user", "content": "hi"}], max_tokens=8, **kw))


def test_a_503_with_retry_after_is_retried_no_sooner() -> None:
    sdk = ScriptedSDK(_status(openai.InternalServerError, 503, **{"retry-after": "0.5"}), _reply())
    client, slept = _client(sdk)
    out = _complete(client)
    assert (out.content, out.prompt_tokens, out.completion_tokens, out.attempts) == ("ok", 7, 2, 2)
    assert len(slept) == 1 and 0.5 <= slept[0] <= 0.55
    assert client.stats == {"attempts": 2, "retry:server_error": 1} and client.retries == 1


def test_a_client_error_is_rejected_at_once() -> None:
    client, slept = _client(ScriptedSDK(_status(openai.NotFoundError, 404)))
    with pytest.raises(LLMRejected, match=r"model at .* rejected the request \(HTTP 404\)") as info:
        _complete(client)
    assert (info.value.reason, info.value.attempts, slept) == ("rejected", 1, [])
    assert isinstance(info.value, SentryMLError)


def test_retry_after_beyond_the_limit_fails_fast_or_waits_the_cap() -> None:
    throttled = _status(openai.RateLimitError, 429, **{"retry-after": "100"})
    client, slept = _client(ScriptedSDK(throttled), max_retry_after_s=2.0)
    with pytest.raises(LLMUnavailable, match="asks to wait 100s") as info:
        _complete(client)
    assert (info.value.reason, info.value.attempts, slept) == ("rate_limited", 1, [])
    # without a limit the wait is the policy's cap (plus its jitter), then it tries again
    throttled = _status(openai.RateLimitError, 429, **{"retry-after": "100"})
    client, slept = _client(ScriptedSDK(throttled, _reply()))
    assert _complete(client).attempts == 2
    assert len(slept) == 1 and 2.0 <= slept[0] <= 2.2


def test_exhausted_retries_say_how_the_last_attempt_failed() -> None:
    sdk = ScriptedSDK(*(openai.APIConnectionError(request=REQUEST) for _ in range(3)))
    client, slept = _client(sdk)
    with pytest.raises(LLMUnavailable, match="failed 3 attempts; last") as info:
        _complete(client)
    assert (info.value.reason, info.value.attempts, len(slept)) == ("connection", 3, 2)
    assert "APIConnectionError" in str(info.value)
    assert client.stats["retry:connection"] == 2  # the last failure is not a retry


def test_timeouts_and_bodies_that_are_not_a_completion_are_retried() -> None:
    sdk = ScriptedSDK(openai.APITimeoutError(request=REQUEST), ValueError("cut-off JSON"), _reply())
    client, _ = _client(sdk, timeout_s=0.3)
    assert _complete(client).attempts == 3
    assert client.stats["retry:timeout"] == 1 and client.stats["retry:bad_response"] == 1


def test_auto_response_format_switches_dialect_without_a_retry() -> None:
    rejected = _status(openai.BadRequestError, 400)
    rejected.body = "response_format: Input should be 'text' or 'json_object'"  # type: ignore[attr-defined]
    sdk = ScriptedSDK(rejected, _reply("{}", usage=False))
    client, slept = _client(sdk)
    out = _complete(client, schema={"type": "object"}, schema_name="verdict")
    assert (out.attempts, out.prompt_tokens, slept) == (1, None, [])
    assert client.response_format_style == "json_object"
    first, second = sdk.calls
    assert first["response_format"]["json_schema"]["name"] == "verdict"
    assert second["extra_body"] == {
        "response_format": {"type": "json_object", "schema": {"type": "object"}}
    }
    # a call without a schema sends no response_format at all
    plain = ScriptedSDK(_reply())
    _complete(_client(plain)[0])
    assert "response_format" not in plain.calls[0] and "extra_body" not in plain.calls[0]


def test_the_api_key_is_not_shown() -> None:
    client = ChatClient(base_url=URL, model="m", api_key=SecretStr("sk-very-secret-key-123"))
    assert repr(client) == f"ChatClient(model at {URL}, model='m')"
