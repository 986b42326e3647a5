"""One alert per incident: drift alerts grouped, escalated, updated and resolved.

One change in traffic fires on several windows (1 h, 24 h, 7 d) and keeps firing every
evaluation; paging once per (window, evaluation) buries the news. As Alertmanager does,
alerts are grouped here by **(model, adapter, kind, feature)** into an incident:

- ``open`` — the first firing evaluation opens it and notifies (the most severe window's
  alert stands for the group; the others are named in its message);
- ``escalated`` — a ``warn`` incident whose group fires ``alert`` notifies at once;
- ``updated`` — while it keeps firing, it notifies again only every ``renotify``;
- ``resolved`` — after ``resolve_after`` evaluations in a row in which every window of the
  group was ``ok``, it notifies once more, with the last numbers, and closes. An
  evaluation without enough data (``insufficient``) neither resolves nor extends it.

:func:`step` is pure (state in, state and notifications out); :func:`load_open` and
:func:`save` keep the state in the ``incidents`` table, so a restarted or new leader
carries on where the last one stopped. Every notification is an ordinary
:class:`~schemas.events.Alert` carrying ``incident_id`` and ``incident_state``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from schemas.events import DRIFT_WINDOWS, Alert, DriftStat
from workers.alerts import alert_id

if TYPE_CHECKING:
    from workers.store import Store

IncidentKey = tuple[str, str, str, str]  # base_model, adapter_version, kind, feature
#: Healthy evaluations in a row that resolve an incident.
DEFAULT_RESOLVE_AFTER = 3
_RANK = {"info": 0, "warn": 1, "alert": 2, "page": 3}


def key_of(alert: Alert) -> IncidentKey:
    return (alert.base_model, alert.adapter_version, alert.kind, alert.feature)


def kind_of(feature: str) -> str:
    """The alert kind of a drift feature (as :func:`workers.drift.drift_alert` sets it)."""
    return "embedding_drift" if feature in ("embedding", "novelty") else "output_drift"


@dataclass(frozen=True)
class Incident:
    """The state of one incident (one row of ``incidents``, replaced on every change)."""

    incident_id: str
    base_model: str
    adapter_version: str
    kind: str
    feature: str
    state: str  # open | resolved
    severity: str
    opened_at: datetime
    updated_at: datetime
    notified_at: datetime
    healthy: int = 0  # healthy evaluations in a row
    message: str = ""

    @property
    def key(self) -> IncidentKey:
        return (self.base_model, self.adapter_version, self.kind, self.feature)

    def to_row(self) -> dict[str, object]:
        return {
            "incident_id": self.incident_id,
            "base_model": self.base_model,
            "adapter_version": self.adapter_version,
            "kind": self.kind,
            "feature": self.feature,
            "state": self.state,
            "severity": self.severity,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "notified_at": self.notified_at,
            "healthy": self.healthy,
            "message": self.message,
        }


def _representative(alerts: Sequence[Alert], windows: Sequence[str]) -> Alert:
    order = {w: i for i, w in enumerate(windows)}
    best = max(alerts, key=lambda a: (_RANK[a.severity], -order.get(a.window, len(order))))
    others = [a for a in alerts if a is not best]
    if not others:
        return best
    also = ", ".join(f"{a.window} {a.severity}" for a in others)
    return best.model_copy(update={"message": f"{best.message} (also: {also})"})


def _notice(alert: Alert, incident: Incident, state: str) -> Alert:
    return alert.model_copy(
        update={
            "alert_id": alert_id(incident.incident_id, state, alert.ts),
            "incident_id": incident.incident_id,
            "incident_state": state,
        }
    )


def step(
    incidents: dict[IncidentKey, Incident],
    alerts: Sequence[Alert],
    healthy: Iterable[IncidentKey],
    now: datetime,
    *,
    renotify: timedelta,
    resolve_after: int = DEFAULT_RESOLVE_AFTER,
    windows: Sequence[str] = DRIFT_WINDOWS,
) -> tuple[dict[IncidentKey, Incident], list[Incident], list[Alert]]:
    """One evaluation: ``(open incidents after it, incidents that changed, notifications)``.

    ``incidents`` are the open ones, ``alerts`` this evaluation's warn/alert alerts,
    ``healthy`` the groups whose every window was ``ok`` this evaluation.
    """
    if resolve_after < 1:
        raise ValueError(f"resolve_after must be >= 1, got {resolve_after}")
    state = dict(incidents)
    changed: list[Incident] = []
    notices: list[Alert] = []
    groups: dict[IncidentKey, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(key_of(alert), []).append(alert)
    for key, group in sorted(groups.items()):
        alert = _representative(group, windows)
        current = state.get(key)
        if current is None:
            incident = Incident(
                incident_id=alert_id("incident", *key, now),
                base_model=key[0],
                adapter_version=key[1],
                kind=key[2],
                feature=key[3],
                state="open",
                severity=alert.severity,
                opened_at=now,
                updated_at=now,
                notified_at=now,
                message=alert.message,
            )
            notices.append(_notice(alert, incident, "open"))
        elif _RANK[alert.severity] > _RANK[current.severity]:
            incident = replace(
                current,
                severity=alert.severity,
                updated_at=now,
                notified_at=now,
                healthy=0,
                message=alert.message,
            )
            notices.append(_notice(alert, incident, "escalated"))
        else:
            due = now - current.notified_at >= renotify
            incident = replace(
                current,
                updated_at=now,
                notified_at=now if due else current.notified_at,
                healthy=0,
                message=alert.message,
            )
            if due:
                notices.append(_notice(alert, incident, "updated"))
        state[key] = incident
        changed.append(incident)
    for key in sorted(set(healthy) - set(groups)):
        current = state.get(key)
        if current is None:
            continue
        incident = replace(current, healthy=current.healthy + 1, updated_at=now)
        if incident.healthy >= resolve_after:
            incident = replace(incident, state="resolved", notified_at=now)
            notices.append(
                Alert(
                    alert_id=alert_id(incident.incident_id, "resolved", now),
                    ts=now,
                    base_model=incident.base_model,
                    adapter_version=incident.adapter_version,
                    kind=incident.kind,
                    feature=incident.feature,
                    severity="info",
                    message=(
                        f"resolved: {incident.feature} drift healthy for {incident.healthy} "
                        f"evaluations (opened {incident.opened_at:%Y-%m-%d %H:%M} UTC, "
                        f"peak {incident.severity}); last: {current.message}"
                    ),
                    incident_id=incident.incident_id,
                    incident_state="resolved",
                )
            )
            del state[key]
        else:
            state[key] = incident
        changed.append(incident)
    return state, changed, notices


def healthy_groups(stats: Iterable[DriftStat], alert_windows: Iterable[str]) -> set[IncidentKey]:
    """Groups whose every alerting window was evaluated ``ok`` (enough data, no drift)."""
    windows = set(alert_windows)
    status: dict[IncidentKey, set[str]] = {}
    for s in stats:
        if s.window in windows:
            key = (s.base_model, s.adapter_version, kind_of(s.feature), s.feature)
            status.setdefault(key, set()).add(s.status)
    return {k for k, v in status.items() if v == {"ok"}}


def load_open(store: Store) -> dict[IncidentKey, Incident]:
    """The open incidents, newest state of each."""
    rows = store.query(
        "SELECT incident_id, base_model, adapter_version, kind, feature, state, severity, "
        "opened_at, updated_at, notified_at, healthy, message FROM incidents FINAL "
        "WHERE state = 'open'"
    ).rows
    out: dict[IncidentKey, Incident] = {}
    for row in rows:
        incident = Incident(
            incident_id=str(row[0]),
            base_model=str(row[1]),
            adapter_version=str(row[2]),
            kind=str(row[3]),
            feature=str(row[4]),
            state=str(row[5]),
            severity=str(row[6]),
            opened_at=row[7],
            updated_at=row[8],
            notified_at=row[9],
            healthy=int(row[10]),
            message=str(row[11]),
        )
        out[incident.key] = incident
    return out


def save(store: Store, changed: Sequence[Incident]) -> None:
    if changed:
        store.insert("incidents", [i.to_row() for i in changed])


def plan_incidents(
    store: Store,
    stats: Sequence[DriftStat],
    alerts: Sequence[Alert],
    now: datetime,
    *,
    renotify: timedelta,
    resolve_after: int = DEFAULT_RESOLVE_AFTER,
    alert_windows: Sequence[str] = DRIFT_WINDOWS,
) -> tuple[list[Incident], list[Alert]]:
    """One evaluation against the stored incident state: ``(changed incidents, notices)``.

    Send the notices, then :func:`save` the changes: a crash in between re-sends them on
    the next evaluation (at least once) rather than losing them.
    """
    _, changed, notices = step(
        load_open(store),
        alerts,
        healthy_groups(stats, alert_windows),
        now,
        renotify=renotify,
        resolve_after=resolve_after,
        windows=alert_windows,
    )
    return changed, notices
