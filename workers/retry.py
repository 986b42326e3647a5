"""The one retry policy: exponential backoff with jitter, ``Retry-After``, and the loop.

Every caller that retries (the judge and golden model calls, webhooks, the ingest agent's
store and broker calls) runs :func:`retry_async` or :func:`retry_sync` with its own
``classify``: a function that looks at a failure and returns :class:`Retry` when it is
transient (with a short machine-readable reason and the server's ``Retry-After``), or
``None`` when it is not (the error is raised at once). ``classify`` may also raise its own
error to stop (e.g. a ``Retry-After`` longer than the caller will wait).

Delays are "equal jitter": attempt ``n`` waits ``d/2 + U(0, d/2)`` with
``d = min(max_s, base_s · 2^(n-1))``, so N workers that failed together do not return
together and no wait is zero. A ``Retry-After`` the server sent is honoured (capped at
``max_s``), plus up to 10 % so the callers it throttled spread out.

>>> policy = RetryPolicy(max_attempts=3, base_s=1.0, max_s=8.0)
>>> [round(policy.delay(n, rng=_Fixed(1.0)), 2) for n in (1, 2, 3, 4, 5)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> policy.delay(1, retry_after=5.0, rng=_Fixed(0.0))
5.0
>>> transient_status(503), transient_status(429), transient_status(404)
(True, True, False)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from workers.exceptions import WorkerError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth another try: timeouts, conflicts, throttling and server errors.
TRANSIENT_HTTP_STATUSES = frozenset({408, 409, 425, 429})


def transient_status(status: int) -> bool:
    """True for an HTTP status that a later identical request may not get (5xx, 408, 429...)."""
    return status >= 500 or status in TRANSIENT_HTTP_STATUSES


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``, seconds
    or an HTTP date), if any.

    >>> retry_after_s({"retry-after": "2"}), retry_after_s({"retry-after-ms": "1500"})
    (2.0, 1.5)
    """
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _Random(Protocol):
    def random(self) -> float: ...


class _Fixed:
    """A "random" source that always returns one value (doctests)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``max_attempts=None`` retries until it succeeds
    (the ingest agent's store and broker calls: back-pressure, never loss)."""

    max_attempts: int | None = 4
    base_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError(f"base_s and max_s must be >= 0, got {self.base_s}, {self.max_s}")

    def delay(self, attempt: int, retry_after: float | None = None, rng: _Random = random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        full = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        delay = full * (0.5 + 0.5 * rng.random())
        if retry_after is not None:
            wait = min(retry_after, self.max_s)
            delay = max(delay, wait + 0.1 * wait * rng.random())
        return delay


@dataclass(frozen=True)
class Retry:
    """``classify``'s verdict on a transient failure."""

    reason: str
    message: str
    retry_after: float | None = None


class RetriesExhausted(WorkerError):
    """Every attempt failed with a transient error; ``last`` says how the last one did.

    Callers translate it into their own error (``JudgeUnavailable``, ``NotifyError``, a
    failed golden case) with ``reason`` and ``attempts``.
    """

    def __init__(self, what: str, attempts: int, last: Retry) -> None:
        super().__init__(f"{what} failed {attempts} attempts; last ({last.reason}): {last.message}")
        self.attempts = attempts
        self.last = last
        self.reason = last.reason


Classify = Callable[[Exception], Retry | None]


class _Attempts:
    """The bookkeeping of one retried call: both loops below are this plus their await."""

    def __init__(
        self,
        policy: RetryPolicy,
        classify: Classify,
        what: str,
        rng: _Random,
        on_retry: Callable[[int, Retry], None] | None,
    ) -> None:
        self.policy, self.classify, self.what = policy, classify, what
        self.rng, self.on_retry = rng, on_retry
        self.attempt = 1

    def failed(self, exc: Exception) -> float:
        """The delay before the next attempt; raises when there is none."""
        verdict = self.classify(exc)
        if verdict is None:
            raise exc
        if self.on_retry is not None:
            self.on_retry(self.attempt, verdict)
        limit = self.policy.max_attempts
        if limit is not None and self.attempt >= limit:
            raise RetriesExhausted(self.what, self.attempt, verdict) from exc
        delay = self.policy.delay(self.attempt, verdict.retry_after, self.rng)
        log.warning(
            "%s failed (%s, attempt %d%s), retrying in %.2fs: %s",
            self.what,
            verdict.reason,
            self.attempt,
            "" if limit is None else f"/{limit}",
            delay,
            verdict.message[:200],
        )
        self.attempt += 1
        return delay

    def succeeded(self) -> None:
        if self.attempt > 1:
            log.warning("%s succeeded after %d retries", self.what, self.attempt - 1)


async def retry_async(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Classify,
    *,
    what: str,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: _Random = random,
    on_retry: Callable[[int, Retry], None] | None = None,
) -> T:
    """Await ``call()`` until it succeeds, a failure is not transient (raised as is), or
    ``policy.max_attempts`` transient failures (:class:`RetriesExhausted`). ``on_retry``
    sees each transient failure (counters, health); ``sleep`` may itself raise to stop
    waiting (a fenced worker)."""
    attempts = _Attempts(policy, classify, what, rng, on_retry)
    while True:
        try:
            result = await call()
        except Exception as exc:
            await sleep(attempts.failed(exc))
            continue
        attempts.succeeded()
        return result


def retry_sync(
    call: Callable[[], T],
    policy: RetryPolicy,
    classify: Classify,
    *,
    what: str,
    sleep: Callable[[float], object] = time.sleep,
    rng: _Random = random,
    on_retry: Callable[[int, Retry], None] | None = None,
) -> T:
    """:func:`retry_async` for blocking calls (a thread, a CLI)."""
    attempts = _Attempts(policy, classify, what, rng, on_retry)
    while True:
        try:
            result = call()
        except Exception as exc:
            sleep(attempts.failed(exc))
            continue
        attempts.succeeded()
        return result


def poll_until(condition: Callable[[], T], *, timeout: float, interval: float, what: str = "") -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy and
    return that; raise ``TimeoutError`` naming ``what`` (and the last value) at the deadline.
    The tests', the demo's and the benchmarks' waits are this one loop."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or condition}: {last!r}")
