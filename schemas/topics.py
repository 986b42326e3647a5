"""Topic names, with the configurable prefix: the one list every producer and consumer uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every SentryML topic name for one prefix.

    >>> Topics("acme.").inference_logs
    'acme.inference-logs'
    """

    prefix: str = "sentryml."

    @property
    def inference_logs(self) -> str:
        return f"{self.prefix}inference-logs"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def judge_requests(self) -> str:
        return f"{self.prefix}judge-requests"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def retrain_requests(self) -> str:
        return f"{self.prefix}retrain-requests"

    @property
    def adapter_events(self) -> str:
        return f"{self.prefix}adapter-events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    def all(self) -> list[str]:
        return [
            self.inference_logs,
            self.feedback,
            self.judge_requests,
            self.alerts,
            self.retrain_requests,
            self.adapter_events,
            self.dlq,
        ]
