"""Alert delivery transports: a Slack-compatible webhook and the Kafka alerts topic.

Both are plain ``async`` callables of one :class:`~schemas.events.Alert`, so they plug into
``workers.alerts.AlertSink(publish=..., webhook=...)``.

>>> hook = functools.partial(post_webhook, "https://hooks.slack.com/services/T/B/X")  # doctest: +SKIP
>>> asyncio.run(hook(alert))                                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any

import httpx

from schemas.events import Alert
from schemas.exceptions import SentryMLError
from workers.kafka import KafkaSettings

log = logging.getLogger(__name__)

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


def _backoff(attempt: int, base: float, retry_after: str | None) -> float:
    delay = base * 2**attempt * (0.5 + random.random())
    if retry_after is not None:
        # An HTTP-date Retry-After is not parsed: keep our own backoff then.
        with contextlib.suppress(ValueError):
            delay = max(delay, min(float(retry_after), 30.0))
    return delay


async def post_webhook(
    url: str,
    alert: Alert,
    *,
    client: httpx.AsyncClient | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
) -> None:
    """POST the alert as Slack-compatible JSON; retry timeouts, 429 and 5xx with backoff.

    Raises :class:`NotifyError` on a 4xx other than 408/429 (not retried) or when retries
    are exhausted.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    own = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    payload = slack_payload(alert)
    try:
        for attempt in range(retries + 1):
            retry_after: str | None = None
            try:
                resp = await http.post(url, json=payload)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    return
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise NotifyError(f"webhook rejected alert {alert.alert_id}: {problem}")
                retry_after = resp.headers.get("retry-after")
            if attempt == retries:
                raise NotifyError(
                    f"webhook failed for alert {alert.alert_id} after {retries + 1} attempts: "
                    f"{problem}"
                )
            delay = _backoff(attempt, backoff_s, retry_after)
            log.warning("webhook %s (attempt %d), retrying in %.2fs", problem, attempt + 1, delay)
            await asyncio.sleep(delay)
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
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        from confluent_kafka import Producer

        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer(
            {**kafka.client_config(), "acks": "all", "enable.idempotence": True}
        )

    def _send(self, alert: Alert) -> None:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(
            self.topic,
            key=alert.base_model.encode(),
            value=alert.to_bytes(),
            on_delivery=on_delivery,
        )
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            reason = errors[0] if errors else f"not acknowledged within {self.timeout_s}s"
            raise NotifyError(f"alert {alert.alert_id} not delivered to {self.topic}: {reason}")

    async def __call__(self, alert: Alert) -> None:
        await asyncio.to_thread(self._send, alert)
