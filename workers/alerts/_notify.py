"""Alert delivery transports: a Slack-compatible webhook and the Kafka alerts topic.

Both are plain ``async`` callables of one :class:`~schemas.events.Alert`, so they plug into
``workers.alerts.AlertSink(publish=..., webhook=...)``.

>>> hook = functools.partial(post_webhook, "https://hooks.slack.com/services/T/B/X")  # doctest: +SKIP
>>> asyncio.run(hook(alert))                                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from schemas.events import Alert
from schemas.exceptions import SentryMLError
from workers.kafka import KafkaSettings, NotDelivered, SyncPublisher
from workers.retry import (
    Classify,
    RetriesExhausted,
    Retry,
    RetryPolicy,
    retry_after_s,
    retry_async,
    transient_status,
)

__all__ = [
    "KafkaAlertPublisher",
    "NotifyError",
    "post_webhook",
    "post_webhook_sync",
    "slack_payload",
]

_SEVERITY_ICON = {"info": ":information_source:", "warn": ":warning:", "alert": ":rotating_light:"}


class NotifyError(SentryMLError):
    """An alert could not be delivered after retries.

    The alert is already in the ``alerts`` table; check the webhook URL (a 4xx is not
    retried) or the broker, then re-send from the table if needed.
    """


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack's incoming-webhook JSON (``text``), with the full alert under ``sentryml``."""
    icon = _SEVERITY_ICON.get(alert.severity, ":rotating_light:")
    text = (
        f"{icon} *{alert.severity.upper()}* {alert.kind} on "
        f"`{alert.base_model}/{alert.adapter_version}`: {alert.message}"
    )
    return {"text": text, "sentryml": json.loads(alert.to_bytes())}


class _HTTPStatus(NotifyError):
    """A webhook answer other than 2xx, for :func:`_classify` to judge."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {response.text[:200]}")
        self.response = response


def _classify(alert: Alert) -> Classify:
    """Timeouts, connection errors, 408, 429 and 5xx are retried (honouring
    ``Retry-After``); any other answer is a refusal, raised as :class:`NotifyError`."""

    def classify(exc: Exception) -> Retry | None:
        if isinstance(exc, httpx.TransportError):
            return Retry("connection", f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, _HTTPStatus):
            return None
        status = exc.response.status_code
        if not transient_status(status):
            raise NotifyError(f"webhook rejected alert {alert.alert_id}: {exc}") from exc
        return Retry(f"http_{status}", str(exc), retry_after_s(exc.response.headers))

    return classify


async def post_webhook(
    url: str,
    alert: Alert,
    *,
    client: httpx.AsyncClient | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
) -> None:
    """POST the alert as Slack-compatible JSON; retry timeouts, 429 and 5xx with backoff
    (:mod:`workers.retry`).

    Raises :class:`NotifyError` on a 4xx other than 408/429 (not retried) or when retries
    are exhausted.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    policy = RetryPolicy(max_attempts=retries + 1, base_s=backoff_s, max_s=30.0)
    own = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    payload = slack_payload(alert)

    async def post() -> None:
        resp = await http.post(url, json=payload)
        if resp.status_code >= 300:
            raise _HTTPStatus(resp)

    try:
        await retry_async(
            post, policy, _classify(alert), what=f"webhook for alert {alert.alert_id}"
        )
    except RetriesExhausted as exc:
        raise NotifyError(
            f"webhook failed for alert {alert.alert_id} after {exc.attempts} attempts: "
            f"{exc.last.message}"
        ) from exc
    finally:
        if own:
            await http.aclose()


def post_webhook_sync(url: str, alert: Alert, **kwargs: Any) -> None:
    """:func:`post_webhook` for code without an event loop (not callable inside one)."""
    asyncio.run(post_webhook(url, alert, **kwargs))


class KafkaAlertPublisher:
    """Send alerts to the alerts topic with confluent-kafka, keyed by model; wait for delivery.

    For code outside the Faust worker (the CLI, the trainer). ``await publisher(alert)``
    raises :class:`NotifyError` when the broker does not acknowledge within ``timeout_s``.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._publisher = SyncPublisher(
            kafka, timeout_s=timeout_s, config={"enable.idempotence": True}
        )

    def _send(self, alert: Alert) -> None:
        try:
            self._publisher.publish(self.topic, alert.base_model.encode(), alert.to_bytes())
        except NotDelivered as exc:
            raise NotifyError(
                f"alert {alert.alert_id} not delivered to {self.topic}: {exc.reason}"
            ) from exc

    async def __call__(self, alert: Alert) -> None:
        await asyncio.to_thread(self._send, alert)
