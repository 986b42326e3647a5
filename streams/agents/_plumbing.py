"""What every batching agent needs between taking a batch and acking it.

- :func:`raw_record` turns a Faust event into a :class:`workers.dlq.RawRecord`, and
  :func:`batch_coordinates` names a batch's offsets in a log line;
- :func:`retry_forever` runs a blocking store (or broker) call in a thread until it
  succeeds: the stream back-pressures instead of losing data, and a :class:`RebalanceFence`
  may end the wait (:class:`streams.exceptions.Fenced`);
- :func:`deliver` sends a record and waits for the broker's acknowledgement, retrying
  transient failures, before the source offsets are acked;
- :func:`stop_unacked` ends the worker with a batch it must not ack, so that Kafka
  redelivers it to the partitions' next owner.

Both retry loops are :func:`workers.retry.retry_async` with an unbounded
:class:`workers.retry.RetryPolicy` (0.5 s doubling to ``max_backoff``, jittered).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError

from streams.app import WorkerContext
from streams.exceptions import BrokerUnavailable, Fenced
from workers.dlq import RawRecord
from workers.retry import Retry, RetryPolicy, retry_async
from workers.store.exceptions import StoreUnavailable

log = logging.getLogger(__name__)

#: What :func:`retry_forever` retries unless told otherwise: the store or the broker away.
TRANSIENT: tuple[type[Exception], ...] = (StoreUnavailable, BrokerUnavailable)


def raw_record(event: Any) -> RawRecord:
    message = event.message
    headers = tuple((k, v) for k, v in (message.headers or ()))
    return RawRecord(
        message.topic, message.partition, message.offset, message.key, message.value or b"", headers
    )


def batch_coordinates(records: list[RawRecord]) -> str:
    """``topic[partition]@first-last`` for each partition of a batch."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        lo, hi = spans.get((r.topic, r.partition), (r.offset, r.offset))
        spans[(r.topic, r.partition)] = (min(lo, r.offset), max(hi, r.offset))
    return ", ".join(f"{t}[{p}]@{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items()))


async def stop_unacked(
    ctx: WorkerContext,
    records: list[RawRecord],
    exc: Exception,
    *,
    redact: Callable[[str], str],
) -> None:
    """End the worker with the batch ``records`` unacked, because of ``exc``, and take
    nothing more (the stop cancels the wait).

    Fenced (:class:`RebalanceFence`): the next owner counts the batch once. Anything else
    is neither bad input (that went to the DLQ) nor transient (that was retried): carrying
    on would let later acks commit past this batch, so Kafka redelivers it instead. The
    traceback is logged through ``redact`` (it may quote the input).
    """
    if isinstance(exc, Fenced):
        log.error("fenced: the batch %s: %s", batch_coordinates(records), exc)
        ctx.metrics.inc("sentryml_fenced_total")
    else:
        log.critical(
            "unexpected error in the batch %s, not acked; stopping the worker so "
            "that Kafka redelivers it: %s",
            batch_coordinates(records),
            redact("".join(traceback.format_exception(exc))),
        )
        ctx.metrics.inc("sentryml_fatal_errors_total")
    ctx.fail(exc)
    await asyncio.Event().wait()


class RebalanceFence:
    """Why this worker must give its in-flight batch up: a rebalance has waited for it
    longer than ``fence_s`` (``SENTRYML_REBALANCE_FENCE_S``). Call it to ask (``None``:
    carry on); ``rebalancing`` says whether a rebalance is under way (``app.rebalancing``).
    """

    def __init__(self, rebalancing: Callable[[], bool], fence_s: float) -> None:
        self.rebalancing = rebalancing
        self.fence_s = fence_s
        self._seen: float | None = None  # when the current rebalance was first seen

    def __call__(self) -> str | None:
        if not self.rebalancing():
            self._seen = None
            return None
        if self._seen is None:
            self._seen = time.monotonic()
        waited = time.monotonic() - self._seen
        if waited <= self.fence_s:
            return None
        return (
            f"a rebalance has waited {waited:.0f} s for it (SENTRYML_REBALANCE_FENCE_S); "
            "giving it up unflushed so that the partitions' next owner counts it once"
        )


def _policy(max_backoff: float) -> RetryPolicy:
    return RetryPolicy(max_attempts=None, base_s=0.5, max_s=max_backoff)


def _nominal_delay(policy: RetryPolicy, attempt: int) -> float:
    """The un-jittered backoff after failed attempt ``attempt`` (what the log line says)."""
    return min(policy.max_s, policy.base_s * 2 ** (attempt - 1))


async def retry_forever(
    fn: Any,
    *args: Any,
    what: str,
    max_backoff: float = 30.0,
    on_error: Callable[[BaseException], None] | None = None,
    fenced: Callable[[], str | None] | None = None,
    transient: tuple[type[Exception], ...] = TRANSIENT,
) -> Any:
    """Call ``fn`` in a thread until it succeeds and return its result; ``transient``
    errors (:class:`StoreUnavailable`, :class:`BrokerUnavailable`) back off
    exponentially (0.5 s doubling to ``max_backoff``, jittered), other errors raise.
    ``on_error`` is called (on the event loop) with each failed attempt's error; ``fenced``
    is asked during the backoff whether to give up (a reason: :class:`Fenced` is raised)."""
    loop = asyncio.get_running_loop()
    policy = _policy(max_backoff)

    def classify(exc: Exception) -> Retry | None:
        if not isinstance(exc, transient):
            return None
        if on_error is not None:
            on_error(exc)
        return Retry(type(exc).__name__, str(exc))

    def on_retry(attempt: int, verdict: Retry) -> None:
        log.error(
            "%s failed (attempt %d), not committing; retrying in %.1fs: %s",
            what,
            attempt,
            _nominal_delay(policy, attempt),
            verdict.message,
        )

    async def sleep(delay: float) -> None:
        until = loop.time() + delay
        while (left := until - loop.time()) > 0:
            reason = fenced() if fenced is not None else None
            if reason:
                # Called while retry_async handles the failed attempt: chain it.
                raise Fenced(f"{what} not done: {reason}") from sys.exception()
            await asyncio.sleep(min(left, 0.5))

    return await retry_async(
        lambda: loop.run_in_executor(None, fn, *args),
        policy,
        classify,
        what=what,
        sleep=sleep,
        on_retry=on_retry,
    )


def transient_send_error(exc: BaseException) -> bool:
    """A send that may succeed later (the broker away, a leader moving), not a refusal."""
    cause = exc.__cause__ if isinstance(exc, ProducerSendError) and exc.__cause__ else exc
    return isinstance(cause, KafkaTimeoutError) or bool(getattr(cause, "retriable", False))


async def deliver(
    topic: Any,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    max_backoff: float = 30.0,
) -> None:
    """Send and wait for the broker's acknowledgement (before the source offset is acked).

    Transient failures are retried with backoff (the batch waits, as for a store outage);
    a refusal (``MessageSizeTooLarge``, authorization) raises."""
    policy = _policy(max_backoff)
    where = topic.get_topic_name()

    async def send() -> None:
        fut = await topic.send(key=key, value=value, headers=headers)
        await fut

    def classify(exc: Exception) -> Retry | None:
        if isinstance(exc, ProducerSendError | KafkaTimeoutError) and transient_send_error(exc):
            return Retry(type(exc).__name__, repr(exc))
        return None

    def on_retry(attempt: int, verdict: Retry) -> None:
        log.error(
            "delivery to %s failed (attempt %d), not committing; retrying in %.1fs: %s",
            where,
            attempt,
            _nominal_delay(policy, attempt),
            verdict.message,
        )

    await retry_async(send, policy, classify, what=f"delivery to {where}", on_retry=on_retry)
