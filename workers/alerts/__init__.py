"""Alerts: the sink that records and de-duplicates them, and their delivery (Kafka topic,
webhook).
"""

from __future__ import annotations

from workers.alerts._notify import (
    KafkaAlertPublisher,
    NotifyError,
    post_webhook,
    post_webhook_sync,
    slack_payload,
)
from workers.alerts._sink import AlertSink, alert_id

__all__ = [
    "AlertSink",
    "KafkaAlertPublisher",
    "NotifyError",
    "alert_id",
    "post_webhook",
    "post_webhook_sync",
    "slack_payload",
]
