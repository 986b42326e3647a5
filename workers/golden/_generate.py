"""Generation: a model's answer to a case, through an OpenAI-compatible chat API."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from workers.golden._format import GoldenCase
from workers.retry import RetryPolicy


@dataclass(frozen=True)
class Generation:
    """A model's answer; ``completion_tokens`` when the server reports usage."""

    text: str
    completion_tokens: int | None = None
    finish_reason: str | None = None


#: ``generate(case)``: sync (run in a thread) or async; returns the text or a Generation.
Generate = Callable[[GoldenCase], "str | Generation | Awaitable[str | Generation]"]


async def generate_one(generate: Generate, case: GoldenCase) -> Generation:
    """Call ``generate(case)``, sync (in a thread) or async; its answer as a Generation."""
    if inspect.iscoroutinefunction(generate) or inspect.iscoroutinefunction(
        getattr(generate, "__call__", None)  # noqa: B004 - async callable objects
    ):
        out = await generate(case)  # type: ignore[misc]
    else:
        out = await asyncio.to_thread(generate, case)
        if inspect.isawaitable(out):
            out = await out
    if isinstance(out, Generation):
        return out
    if isinstance(out, str):
        return Generation(out)
    raise TypeError(f"generate() must return str or Generation, got {type(out).__name__}")


class OpenAIChat:
    """Generate golden outputs through an OpenAI-compatible chat API, deterministically.

    Temperature 0; the calls go through the one model client, :class:`workers.llm.ChatClient`:
    transient failures (timeouts, connection errors, bodies that are not a completion,
    408/409/425/429/5xx) are retried ``retries`` times with :mod:`workers.retry`'s jittered
    exponential backoff (``Retry-After`` honoured up to 30 s); what still fails raises
    :class:`workers.llm.LLMUnavailable` / :class:`workers.llm.LLMRejected`, recorded as the
    case's generation error. ``max_tokens`` caps generation; a case with a ``max_tokens``
    check is allowed a little more so an overlong answer is seen, not cut to fit.

    >>> chat = OpenAIChat("http://127.0.0.1:8080/v1", "smollm2-135m-instruct")  # doctest: +SKIP
    >>> asyncio.run(chat(case)).text                                              # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | SecretStr = "sk-local",
        timeout_s: float = 60.0,
        max_tokens: int = 256,
        retries: int = 4,
        backoff_s: float = 0.5,
        client: Any = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        from workers.llm import ChatClient  # imports openai: only when a model is called

        self.model = model
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_s = backoff_s
        self.llm = ChatClient(
            base_url=base_url,
            model=model,
            api_key=api_key if isinstance(api_key, SecretStr) else SecretStr(api_key),
            timeout_s=timeout_s,
            policy=RetryPolicy(max_attempts=retries + 1, base_s=backoff_s, max_s=30.0),
            name="model",
            sdk_client=client,
        )

    @property
    def retried(self) -> int:
        """Retries made so far (every case together)."""
        return self.llm.retries

    async def __call__(self, case: GoldenCase) -> Generation:
        limit = self.max_tokens
        if case.checks.max_tokens is not None:
            limit = max(limit, case.checks.max_tokens + 16)
        out = await self.llm.complete(case.chat(), max_tokens=limit, temperature=0.0)
        return Generation(
            text=out.content,
            completion_tokens=out.completion_tokens,
            finish_reason=out.finish_reason,
        )

    async def aclose(self) -> None:
        await self.llm.aclose()
