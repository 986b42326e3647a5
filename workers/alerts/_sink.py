"""Alert delivery shared by every monitor: store row, alerts topic, optional webhook.

:class:`AlertSink` suppresses a repeat of the same condition (model, adapter, kind,
feature, window, severity) within the renotify interval, looking at the ``alerts`` table so
that every worker agrees and a restart does not re-page. An alert is recorded there only
after it was published, so suppression never hides an alert that was not delivered: a
failed publish raises, nothing is recorded, and the next evaluation raises it again
(at least once: a publish whose record failed is published again; ``alert_id`` is stable).
Store calls run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from schemas.events import Alert
from workers.store import Store

log = logging.getLogger(__name__)

ConditionKey = tuple[str, str, str, str, str, str]


def alert_id(*parts: object) -> str:
    """A deterministic id, so a re-evaluation of the same condition is the same alert."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:24]


def condition(alert: Alert) -> ConditionKey:
    return (
        alert.base_model,
        alert.adapter_version,
        alert.kind,
        alert.feature,
        alert.window,
        alert.severity,
    )


class AlertSink:
    """Store, publish and (optionally) post alerts, without re-notifying too often.

    ``publish`` sends one alert to the alerts topic and returns when it is delivered;
    ``webhook`` (optional) posts it to a Slack-compatible endpoint.
    """

    def __init__(
        self,
        store: Store,
        publish: Callable[[Alert], Awaitable[None]],
        *,
        renotify: timedelta = timedelta(hours=1),
        now: Callable[[], datetime],
        webhook: Callable[[Alert], Awaitable[None]] | None = None,
    ) -> None:
        if renotify < timedelta(0):
            raise ValueError("renotify must be >= 0")
        self.store = store
        self.publish = publish
        self.renotify = renotify
        self.now = now
        self.webhook = webhook

    def recent_conditions(self) -> set[ConditionKey]:
        since = self.now() - self.renotify
        rows = self.store.query(
            "SELECT DISTINCT base_model, adapter_version, kind, feature, window, severity "
            "FROM alerts WHERE ts > {since:DateTime64(3, 'UTC')}",
            {"since": since},
        ).rows
        return {tuple(str(v) for v in row) for row in rows}  # type: ignore[misc]

    async def emit(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Deliver the alerts that are not repeats; return the ones delivered.

        Raises what a failed publish raised, after recording the alerts published before
        it; the failed one and the rest are not recorded, so they are not suppressed.
        """
        if not alerts:
            return []
        recent = await asyncio.to_thread(self.recent_conditions)
        fresh = [a for a in alerts if condition(a) not in recent]
        delivered: list[Alert] = []
        try:
            for alert in fresh:
                log.warning(
                    "ALERT %s %s %s/%s %s: %s",
                    alert.severity,
                    alert.kind,
                    alert.base_model,
                    alert.adapter_version,
                    alert.window,
                    alert.message,
                )
                await self.publish(alert)
                delivered.append(alert)
                if self.webhook is not None:
                    try:
                        await self.webhook(alert)
                    except Exception as exc:  # published already: the topic is the record
                        log.error("webhook delivery failed for alert %s: %s", alert.alert_id, exc)
        finally:
            if delivered:
                await asyncio.to_thread(self._record, delivered)
        return delivered

    def _record(self, delivered: Sequence[Alert]) -> None:
        self.store.insert(
            "alerts",
            [a.to_row() for a in delivered],
            dedup_token="alerts-" + alert_id(*(a.alert_id for a in delivered)),
        )
