"""One alert per incident: open, escalate, renotify, resolve (pure), and the state in chDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import Alert, DriftStat
from workers.drift import healthy_groups, load_open, plan_incidents, save, step

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = ("m", "v1", "embedding_drift", "novelty")
RENOTIFY = timedelta(hours=1)


def _alert(window: str, severity: str, at: datetime, value: float = 0.3) -> Alert:
    return Alert(
        alert_id=f"{window}-{severity}-{at:%H%M}",
        ts=at,
        base_model="m",
        adapter_version="v1",
        kind="embedding_drift",
        feature="novelty",
        window=window,
        severity=severity,  # type: ignore[arg-type]
        value=value,
        message=f"{value:.0%} of the last {window}'s prompts look unlike the training data",
    )


def test_an_incident_opens_once_escalates_renotifies_and_resolves() -> None:
    state: dict[Any, Any] = {}
    minute = timedelta(minutes=1)
    # three windows fire at once: one notification, the most severe window standing for them
    state, changed, sent = step(
        state,
        [_alert("1h", "warn", T0), _alert("24h", "warn", T0), _alert("7d", "warn", T0)],
        [],
        T0,
        renotify=RENOTIFY,
    )
    assert [a.incident_state for a in sent] == ["open"] and sent[0].window == "1h"
    assert "(also: 24h warn, 7d warn)" in sent[0].message
    incident_id = sent[0].incident_id
    assert incident_id and state[KEY].incident_id == incident_id and len(changed) == 1

    # it keeps firing: no repeat within the renotify interval
    state, _, sent = step(
        state, [_alert("24h", "warn", T0 + minute)], [], T0 + minute, renotify=RENOTIFY
    )
    assert sent == []
    # escalation notifies at once
    t = T0 + 2 * minute
    state, _, sent = step(state, [_alert("24h", "alert", t, 0.4)], [], t, renotify=RENOTIFY)
    assert [(a.incident_state, a.severity, a.incident_id) for a in sent] == [
        ("escalated", "alert", incident_id)
    ]
    # a later, lower severity does not de-escalate; after the interval it is renotified
    t = T0 + 2 * minute + RENOTIFY
    state, _, sent = step(state, [_alert("24h", "warn", t)], [], t, renotify=RENOTIFY)
    assert [a.incident_state for a in sent] == ["updated"] and state[KEY].severity == "alert"

    # healthy twice: still open; no data: no change; healthy again: resolved, one notice
    for i in range(2):
        t += minute
        state, _, sent = step(state, [], [KEY], t, renotify=RENOTIFY)
        assert sent == [] and state[KEY].healthy == i + 1
    t += minute
    state, changed, sent = step(state, [], [], t, renotify=RENOTIFY)  # insufficient
    assert changed == [] and state[KEY].healthy == 2
    t += minute
    state, changed, sent = step(state, [], [KEY], t, renotify=RENOTIFY)
    assert [(a.incident_state, a.severity, a.incident_id) for a in sent] == [
        ("resolved", "info", incident_id)
    ]
    assert "healthy for 3 evaluations" in sent[0].message and "peak alert" in sent[0].message
    assert changed[0].state == "resolved" and KEY not in state
    # firing again opens a new incident
    t += minute
    state, _, sent = step(state, [_alert("1h", "warn", t)], [], t, renotify=RENOTIFY)
    assert sent[0].incident_state == "open" and sent[0].incident_id != incident_id


def test_a_firing_evaluation_resets_the_healthy_count() -> None:
    state, _, _ = step({}, [_alert("1h", "warn", T0)], [], T0, renotify=RENOTIFY)
    t = T0
    for _ in range(2):
        t += timedelta(minutes=1)
        state, _, _ = step(state, [], [KEY], t, renotify=RENOTIFY)
    state, _, _ = step(state, [_alert("1h", "warn", t)], [], t, renotify=RENOTIFY)
    assert state[KEY].healthy == 0
    with pytest.raises(ValueError, match="resolve_after"):
        step(state, [], [], t, renotify=RENOTIFY, resolve_after=0)


def _stat(window: str, status: str, feature: str = "novelty") -> DriftStat:
    return DriftStat(
        ts=T0,
        base_model="m",
        adapter_version="v1",
        baseline_id="bl",
        feature=feature,
        window=window,  # type: ignore[arg-type]
        psi=0.0,
        jsd=0.0,
        chi2=0.0,
        p_value=1.0,
        sample_size=100,
        baseline_size=600,
        psi_warn=0.1,
        psi_alert=0.2,
        status=status,  # type: ignore[arg-type]
    )


def test_healthy_means_every_alerting_window_ok() -> None:
    stats = [_stat("1h", "insufficient"), _stat("24h", "ok"), _stat("7d", "ok")]
    stats += [_stat("24h", "ok", "ttr"), _stat("7d", "ok", "ttr")]
    assert healthy_groups(stats, ("24h", "7d")) == {KEY, ("m", "v1", "output_drift", "ttr")}
    assert healthy_groups(stats, ("1h", "24h", "7d")) == {("m", "v1", "output_drift", "ttr")}


def test_incident_state_survives_in_the_store(store: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    alerts = [_alert("24h", "alert", now)]
    changed, sent = plan_incidents(store, [], alerts, now, renotify=RENOTIFY)
    store.insert("alerts", [a.to_row() for a in sent])  # incident columns exist
    save(store, changed)
    loaded = load_open(store)
    assert loaded[KEY].incident_id == sent[0].incident_id and loaded[KEY].severity == "alert"
    row = store.query("SELECT incident_id, incident_state FROM alerts").rows[0]
    assert tuple(row) == (sent[0].incident_id, "open")
    # a new leader reading the state goes on with the same incident, then resolves it
    t = now
    for _ in range(3):
        t += timedelta(minutes=1)
        changed, sent = plan_incidents(
            store,
            [_stat("24h", "ok"), _stat("7d", "ok")],
            [],
            t,
            renotify=RENOTIFY,
            alert_windows=("24h", "7d"),
        )
        save(store, changed)
    assert [a.incident_state for a in sent] == ["resolved"] and load_open(store) == {}
