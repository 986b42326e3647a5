"""The retrain gate: each rule (a)–(d) holds a request back, all four together fire it,
and every decision is a row in retrain_jobs.

Pure rule tests need nothing; the store tests write the monitors' real rows (drift_stats,
judge_scores, feedback, retrain_jobs) into chDB; the firing test runs the gate inside a
real Faust app on the local broker and reads the request back from the topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from schemas.events import RetrainRequest, decode_event
from schemas.topics import Topics
from streams.app import create_app
from streams.config import WorkerSettings
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.harness import running
from workers.kafka import KafkaSettings
from workers.retrain_gate import (
    GateInputs,
    GatePolicy,
    RetrainGateSettings,
    decide,
    gather_inputs,
    held_for,
    record_job_event,
)

MODEL = "support-bot"
NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = GatePolicy(
    persist=timedelta(minutes=30),
    min_examples={"style": 5},
    cooldown=timedelta(days=7),
    max_gap=timedelta(minutes=5),
)


def _run(*alerting: bool, every: timedelta = timedelta(minutes=1), newest: datetime = NOW):
    """Evaluations ``every`` apart, newest first, alerting as given."""
    return [(newest - i * every, a) for i, a in enumerate(alerting)]


ALL_PASS = GateInputs(
    base_model=MODEL,
    adapter_version="v1",
    task_goal="style",
    signals={"drift:embedding@24h": _run(*[True] * 31), "judge:format": _run(False, False)},
    new_examples=6,
    last_job_at=NOW - timedelta(days=8),
    in_flight=None,
)


# --------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "change"),
    [
        ("alerts", {"signals": {"drift:embedding@24h": _run(*[True] * 20, False, *[True] * 20)}}),
        ("examples", {"new_examples": 4}),
        ("cooldown", {"last_job_at": NOW - timedelta(days=6, hours=23)}),
        ("in_flight", {"in_flight": "job-1"}),
    ],
)
def test_each_rule_alone_holds_the_request(rule: str, change: dict[str, Any]) -> None:
    decision = decide(replace(ALL_PASS, **change), POLICY, NOW)
    assert not decision.fire
    failing = [c.name for c in decision.checks if not c.ok]
    assert failing == [rule]
    assert decision.reason.startswith(f"held: {rule}: ")


def test_all_rules_together_fire_and_say_why() -> None:
    decision = decide(ALL_PASS, POLICY, NOW)
    assert decision.fire
    assert decision.persisting == ("drift:embedding@24h",)
    assert "drift:embedding@24h alerted without a break for 30 min (needs 30 min)" in (
        decision.reason
    )
    assert decision.details()["held_s"] == {"drift:embedding@24h": 1800.0, "judge:format": 0.0}
    assert [c.name for c in decision.checks] == ["alerts", "examples", "cooldown", "in_flight"]
    assert "6 new labelled examples, need 5 for goal style" in decision.reason
    assert "last job 8.0 days ago, cooldown 7.0 days" in decision.reason


def test_persistence_is_unbroken_wall_clock_time_on_fresh_evaluations() -> None:
    gap = POLICY.max_gap
    minute = timedelta(minutes=1)
    assert held_for(_run(*[True] * 31), NOW, gap) == timedelta(minutes=30)  # exactly: fires
    assert held_for(_run(*[True] * 30), NOW, gap) == timedelta(minutes=29)  # a minute short
    assert held_for(_run(False, *[True] * 40), NOW, gap) == timedelta(0)  # recovered now
    assert held_for(_run(*[True] * 5, False, *[True] * 40), NOW, gap) == 4 * minute
    # A gap longer than max_gap (evaluations stopped) ends the run there...
    sparse = _run(*[True] * 3) + _run(*[True] * 40, newest=NOW - 2 * minute - gap - minute)
    assert held_for(sparse, NOW, gap) == 2 * minute
    # ... and a run whose newest evaluation is older than max_gap is stale: it counts 0.
    assert held_for(_run(*[True] * 40), NOW + gap + minute, gap) == timedelta(0)
    assert held_for(_run(*[True] * 40), NOW + gap, gap) == timedelta(minutes=39)
    assert held_for([], NOW, gap) == timedelta(0)
    # One alerting evaluation has held for no time at all, and the reason says so.
    decision = decide(replace(ALL_PASS, signals={"s": _run(True)}), POLICY, NOW)
    assert not decision.fire and "no alert held for 30 min (alerting now: s for 0 min)" in (
        decision.reason
    )


def test_policy_and_settings_validate_their_ranges() -> None:
    with pytest.raises(ValueError, match="persist"):
        GatePolicy(persist=timedelta(0), min_examples={"style": 1}, cooldown=timedelta(days=7))
    with pytest.raises(ValueError, match="max_gap"):
        GatePolicy(persist=timedelta(hours=1), min_examples={"style": 1},
                   cooldown=timedelta(days=7), max_gap=timedelta(0))  # fmt: skip
    policy = GatePolicy.from_settings(RetrainGateSettings())
    assert (policy.persist, policy.max_gap) == (timedelta(hours=6), timedelta(minutes=10))
    with pytest.raises(ValueError, match="ALLOW_SHORT_COOLDOWN"):
        RetrainGateSettings(cooldown_days=2)
    short = RetrainGateSettings(cooldown_days=2, allow_short_cooldown=True)
    assert GatePolicy.from_settings(short).cooldown == timedelta(days=2)
    defaults = RetrainGateSettings(min_examples={"task": 3000})
    assert defaults.min_examples == {
        "style": 200,
        "vocabulary": 500,
        "task": 3000,
        "instruction": 2000,
    }


# --------------------------------------------------------------------------------------
# Inputs from the store
# --------------------------------------------------------------------------------------


def _drift(store: Any, statuses_newest_first: list[str], *, feature: str = "embedding",
           window: str = "24h", adapter: str = "v1", model: str = MODEL,
           baseline: str = "b1", newest: datetime = NOW) -> None:  # fmt: skip
    rows = [
        {
            "ts": newest - timedelta(minutes=i),
            "base_model": model,
            "adapter_version": adapter,
            "baseline_id": baseline,
            "feature": feature,
            "window": window,
            "psi": 0.4 if status == "alert" else 0.01,
            "jsd": 0.1,
            "chi2": 50.0,
            "p_value": 0.001,
            "sample_size": 500,
            "baseline_size": 1000,
            "psi_warn": 0.1,
            "psi_alert": 0.2,
            "status": status,
        }
        for i, status in enumerate(statuses_newest_first)
    ]
    store.insert("drift_stats", rows)


def _feedback(store: Any, n: int, *, at: datetime, model: str = MODEL) -> None:
    rows = [
        {
            "ts": at - timedelta(seconds=i),
            "request_id": f"r-{uuid.uuid4().hex[:8]}",
            "base_model": model,
            "adapter_version": "v1",
            "label": "bad",
            "correction": json.dumps({"intent": "refund", "answer": f"Refund {i} is on its way."}),
        }
        for i in range(n)
    ]
    store.insert("feedback", rows)


def _job(store: Any, decision: str, at: datetime, job_id: str) -> None:
    record_job_event(store, base_model=MODEL, adapter_version="v1", decision=decision,
                     reason="test", job_id=job_id, now=at)  # fmt: skip


def _worker_settings(store_settings: Any, kafka: KafkaSettings | None = None) -> WorkerSettings:
    return WorkerSettings(
        store=store_settings,
        **({"kafka": kafka} if kafka else {}),
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        # Evaluations a minute apart: three alerting in a row have held for 2 minutes.
        retrain=RetrainGateSettings(
            persist_s=120, max_gap_s=90, min_examples={"style": 5}, interval_s=3600
        ),
    )


ALL_PASS_ROWS: dict[str, Callable[[Any], None]] = {
    "alerts": lambda s: _drift(s, ["alert", "alert", "alert", "ok"]),
    "examples": lambda s: _feedback(s, 6, at=NOW - timedelta(hours=1)),
    "cooldown": lambda s: (
        _job(s, "fired", NOW - timedelta(days=8), "old"),
        _job(s, "rejected", NOW - timedelta(days=8) + timedelta(hours=2), "old"),
    ),
    "in_flight": lambda s: None,
}
HOLDING_ROWS: dict[str, Callable[[Any], None]] = {
    "alerts": lambda s: _drift(s, ["alert", "alert", "ok", "alert"]),
    "examples": lambda s: _feedback(s, 4, at=NOW - timedelta(hours=1)),
    "cooldown": lambda s: (
        _job(s, "fired", NOW - timedelta(days=2), "recent"),
        _job(s, "promoted", NOW - timedelta(days=2) + timedelta(hours=1), "recent"),
    ),
    # Fired 8 days ago (cooldown passed), restarted by a trainer an hour ago, no outcome yet.
    "in_flight": lambda s: (
        _job(s, "fired", NOW - timedelta(days=8), "running"),
        _job(s, "started", NOW - timedelta(hours=1), "running"),
    ),
}


@pytest.mark.parametrize("rule", sorted(HOLDING_ROWS))
def test_each_rule_holds_back_from_stored_rows_and_the_decision_is_recorded(
    store: Any, store_settings: Any, rule: str
) -> None:
    import asyncio

    from streams.agents.retrain_gate import run_gate

    for name in ALL_PASS_ROWS:
        (HOLDING_ROWS if name == rule else ALL_PASS_ROWS)[name](store)
    settings = _worker_settings(store_settings)
    _app, ctx = create_app(settings, store=store, now=lambda: NOW,
                           agent_modules=["streams.agents.retrain_gate"])  # fmt: skip
    sent: list[RetrainRequest] = []

    async def send(request: RetrainRequest) -> None:
        sent.append(request)

    (outcome,) = asyncio.run(run_gate(ctx, send))
    assert not outcome.decision.fire and sent == []
    assert [c.name for c in outcome.decision.checks if not c.ok] == [rule]
    rows = store.query(
        "SELECT decision, reason, details, job_id FROM retrain_jobs "
        "WHERE ts = {t:DateTime64(3, 'UTC')}",
        {"t": NOW},
    ).dicts()
    assert len(rows) == 1
    assert rows[0]["decision"] == "held" and rows[0]["job_id"] == ""
    assert rows[0]["reason"].startswith(f"held: {rule}: ")
    details = json.loads(rows[0]["details"])
    assert {k for k, v in details["checks"].items() if not v["ok"]} == {rule}


def test_examples_count_only_since_the_last_trained_job(store: Any, store_settings: Any) -> None:
    _feedback(store, 10, at=NOW - timedelta(days=20))  # used by the job 10 days ago
    _job(store, "fired", NOW - timedelta(days=10), "j1")
    _job(store, "promoted", NOW - timedelta(days=10) + timedelta(hours=1), "j1")
    _feedback(store, 3, at=NOW - timedelta(days=1))
    _job(store, "forced", NOW - timedelta(hours=5), "j2")  # refused: used no data
    _job(store, "refused", NOW - timedelta(hours=4), "j2")
    settings = _worker_settings(store_settings)
    inputs = gather_inputs(store, MODEL, settings.retrain, settings.judge, NOW)
    assert inputs.new_examples == 3
    assert inputs.last_job_at == NOW - timedelta(hours=5)  # cooldown counts the forced job
    assert inputs.in_flight is None


def test_drift_signals_follow_the_served_adapter(store: Any, store_settings: Any) -> None:
    _drift(store, ["alert"] * 3, adapter="v0", feature="output_length")  # old adapter
    _drift(store, ["ok"] + ["alert"] * 3, adapter="v1")
    _drift(store, ["alert"] * 3, adapter="v1", window="7d")  # not a gate window by default
    settings = _worker_settings(store_settings)
    inputs = gather_inputs(store, MODEL, settings.retrain, settings.judge, NOW)
    assert inputs.adapter_version == "v1"
    minute = timedelta(minutes=1)
    assert inputs.signals == {
        "drift:embedding@24h": [
            (NOW, False),
            (NOW - minute, True),
            (NOW - 2 * minute, True),
            (NOW - 3 * minute, True),
        ]
    }


def test_only_recent_evaluations_of_the_current_baseline_count(
    store: Any, store_settings: Any
) -> None:
    """A refitted baseline starts a new history; old rows and rows past the period never
    count, even when evaluations stopped while alerting."""
    _drift(store, ["alert"] * 10, baseline="b0", newest=NOW - timedelta(minutes=2))
    _drift(store, ["alert"] * 2, baseline="b1")  # refitted: the newest evaluations
    settings = _worker_settings(store_settings)
    inputs = gather_inputs(store, MODEL, settings.retrain, settings.judge, NOW)
    assert [ts for ts, _ in inputs.signals["drift:embedding@24h"]] == [
        NOW,
        NOW - timedelta(minutes=1),
    ]
    assert not decide(inputs, GatePolicy.from_settings(settings.retrain), NOW).persisting
    # Evaluations that stopped an hour ago while alerting are stale, not persisting.
    later = NOW + timedelta(hours=1)
    stale = gather_inputs(store, MODEL, settings.retrain, settings.judge, later)
    assert stale.signals.get("drift:embedding@24h", []) == []


def test_a_judge_drop_that_persists_counts_as_an_alert(store: Any, store_settings: Any) -> None:
    """Scores: 4.5 in the 7 days before, 2.0 in the last 7 days; the judge's own rule holds
    at the last three evaluation instants, so the gate sees a persisting judge alert."""
    rows = []
    for i in range(25):
        for days_ago, score in ((10, 5 if i % 2 else 4), (2, 2)):
            rows.append({
                "ts": NOW - timedelta(days=days_ago, minutes=i), "request_id": f"j{days_ago}-{i}",
                "base_model": MODEL, "adapter_version": "v1", "judge_model": "judge",
                "dimension": "format", "score": score, "ok": 1, "rationale": "",
                "injection_flag": 0, "latency_ms": 1.0, "prompt_tokens": 1,
                "completion_tokens": 1, "cost_usd": 0.0,
            })  # fmt: skip
    store.insert("judge_scores", rows)
    _drift(store, ["ok"] * 3)
    settings = _worker_settings(store_settings)
    inputs = gather_inputs(store, MODEL, settings.retrain, settings.judge, NOW)
    # persist 120 s, judge interval 300 s: the rule is re-applied at now and now - 300 s.
    assert inputs.signals["judge:format"] == [(NOW, True), (NOW - timedelta(seconds=300), True)]
    assert [a for _, a in inputs.signals["drift:embedding@24h"]] == [False, False, False]
    decision = decide(inputs, GatePolicy.from_settings(settings.retrain), NOW)
    assert decision.persisting == ("judge:format",)


# --------------------------------------------------------------------------------------
# Firing, on the real broker
# --------------------------------------------------------------------------------------


def _consume_requests(kafka: KafkaSettings, n: int, timeout: float = 60.0) -> list[RetrainRequest]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"r-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([Topics(kafka.topic_prefix).retrain_requests])
    got: list[RetrainRequest] = []

    def poll() -> bool:
        for message in consumer.consume(10, 0.5):
            value = message.value()
            if not message.error() and value is not None:
                got.append(decode_event(value, RetrainRequest))
        return len(got) >= n

    try:
        wait_for(poll, timeout=timeout, what=f"{n} retrain request(s)")
    finally:
        consumer.close()
    return got


@pytest.mark.kafka
def test_all_rules_together_fire_a_request_through_the_worker(
    store: Any, store_settings: Any, kafka: KafkaSettings
) -> None:
    from streams.agents.retrain_gate import run_gate

    for write in ALL_PASS_ROWS.values():
        write(store)
    create_topics(kafka, partitions=1)
    settings = _worker_settings(store_settings, kafka)
    app, ctx = create_app(settings, store=store, now=lambda: NOW,
                          agent_modules=["streams.agents.retrain_gate"])  # fmt: skip
    with running(app) as runner:
        (outcome,) = runner.call(run_gate(ctx, ctx.retrain_send))
    assert outcome.decision.fire and outcome.request is not None
    (request,) = _consume_requests(kafka, 1)
    assert request == outcome.request
    assert (request.base_model, request.adapter_version, request.method) == (MODEL, "v1", "lora")
    assert request.reason.startswith(
        "fired: alerts: drift:embedding@24h alerted without a break for 2 min (needs 2 min)"
    )
    row = store.query(
        "SELECT decision, job_id, reason FROM retrain_jobs WHERE decision = 'fired' "
        "AND ts = {t:DateTime64(3, 'UTC')}",
        {"t": NOW},
    ).dicts()
    assert row == [{"decision": "fired", "job_id": request.job_id, "reason": request.reason}]
    # The fired job is now in flight: the next check holds, and says so.
    inputs = gather_inputs(
        store, MODEL, settings.retrain, settings.judge, NOW + timedelta(minutes=5)
    )
    assert inputs.in_flight == request.job_id


@pytest.mark.kafka
def test_operator_can_force_a_request_and_it_is_recorded_as_forced(
    store: Any, store_settings: Any, kafka: KafkaSettings
) -> None:
    import typer

    from streams.commands import trainer as trainer_cmd

    _feedback(store, 2, at=NOW - timedelta(hours=1))  # the gate would hold: no alerts, 2 < 200
    create_topics(kafka, partitions=1)
    env = {
        "SENTRYML_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SENTRYML_STORE_URL": store_settings.url,
        "SENTRYML_STORE_DATABASE": store_settings.database,
    }
    cli = typer.Typer()
    trainer_cmd.register(cli)
    result = CliRunner().invoke(
        cli,
        ["retrain", "request", "--base-model", MODEL, "--adapter", "v7", "--method", "dpo",
         "--reason", "new product line"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = _consume_requests(kafka, 1)
    assert request.forced and request.method == "dpo" and request.adapter_version == "v7"
    assert request.reason.startswith("forced by operator:") and "new product line" in request.reason
    (row,) = store.query(
        "SELECT decision, job_id, reason FROM retrain_jobs WHERE base_model = {m:String}",
        {"m": MODEL},
    ).dicts()
    assert row["decision"] == "forced" and row["job_id"] == request.job_id
    assert "the gate would have held: held: alerts: no alert held for 6.0 hours" in row["reason"]
