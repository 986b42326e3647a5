"""Judge sampling: the hash sample's rate and determinism, rate limits, and the daily budget."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import Alert, InferenceLog, JudgeScore
from workers.alerts import AlertSink
from workers.judge import (
    DailyUsage,
    JudgeModelSettings,
    JudgeSampler,
    JudgeSettings,
    daily_usage,
    should_judge,
)


def _log(request_id: str, model: str = "m") -> InferenceLog:
    return InferenceLog(request_id=request_id, base_model=model, prompt="p", completion="c")


@pytest.mark.parametrize("rate", [0.01, 0.02, 0.05])
def test_rate_over_100k_ids_is_within_10_percent(rate: float) -> None:
    n = 100_000
    chosen = sum(should_judge(f"req-{i}", rate) for i in range(n))
    assert abs(chosen / n - rate) <= 0.1 * rate, (chosen, rate)


def test_decision_matches_the_documented_formula() -> None:
    import hashlib

    for i in range(2000):
        rid = f"r{i}"
        expected = int(hashlib.sha256(rid.encode()).hexdigest(), 16) % 10_000 < 200
        assert should_judge(rid, 0.02) is expected


def test_two_workers_pick_the_same_requests_and_rates_nest() -> None:
    settings = JudgeSettings()
    a = JudgeSampler(settings, usage=lambda now: {})
    b = JudgeSampler(JudgeSettings(), usage=lambda now: {})
    events = [_log(str(uuid.uuid4())) for _ in range(20_000)]
    picked_a = [e.request_id for e in a.select(events)]
    picked_b = [e.request_id for e in b.select(list(reversed(events)))]
    assert picked_a and sorted(picked_a) == sorted(picked_b)
    # a replay of the same batch makes the same choice
    assert [e.request_id for e in a.select(events)] == picked_a
    # what 2% picks, 5% picks too (raising the rate only adds requests)
    wider = {e.request_id for e in events if should_judge(e.request_id, 0.05)}
    assert set(picked_a) < wider


def test_per_model_rates() -> None:
    settings = JudgeSettings(sample_rate=0.01, models={"hot": JudgeModelSettings(sample_rate=0.05)})
    sampler = JudgeSampler(settings, usage=lambda now: {})
    ids = [f"id-{i}" for i in range(40_000)]
    hot = len(sampler.select([_log(i, "hot") for i in ids]))
    cold = len(sampler.select([_log(i, "cold") for i in ids]))
    assert sampler.rate_for("hot") == 0.05 and sampler.rate_for("cold") == 0.01
    assert abs(hot / 40_000 - 0.05) <= 0.005 and abs(cold / 40_000 - 0.01) <= 0.001


def test_rates_outside_1_to_5_percent_need_the_override() -> None:
    with pytest.raises(ValueError, match=r"outside the allowed 0\.01–0\.05.*ALLOW_RATE_OVERRIDE"):
        JudgeSettings(sample_rate=0.2)
    with pytest.raises(ValueError, match=r"models\['x'\]\.sample_rate=0\.005"):
        JudgeSettings(models={"x": JudgeModelSettings(sample_rate=0.005)})
    assert JudgeSettings(sample_rate=0.2, allow_rate_override=True).sample_rate == 0.2
    with pytest.raises(ValueError):
        JudgeSettings(sample_rate=1.5, allow_rate_override=True)
    # settings built without validation are still checked where the sampler starts
    unchecked = JudgeSettings.model_construct(sample_rate=0.5, allow_rate_override=False)
    with pytest.raises(ValueError, match="outside the allowed"):
        JudgeSampler(unchecked, usage=lambda now: {})


class Clock:
    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t


def _spend(store, model: str, ts: datetime, tokens: int, cost: float = 0.0) -> None:
    row = JudgeScore(
        ts=ts,
        request_id=f"spent-{uuid.uuid4().hex[:8]}",
        base_model=model,
        judge_model="j",
        dimension="format",
        score=4,
        prompt_tokens=tokens,
        cost_usd=cost,
    ).to_row()
    store.insert("judge_scores", [row])


def test_budget_exhaustion_pauses_sampling_until_next_utc_day_and_alerts_once(store) -> None:
    clock = Clock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    settings = JudgeSettings(
        sample_rate=0.05,
        daily_token_budget=None,
        models={"m": JudgeModelSettings(daily_token_budget=1_000)},
        budget_refresh_s=5,
    )
    sampler = JudgeSampler(settings, store=store, now=clock)
    events = [_log(f"q{i}", "m") for i in range(400)] + [_log(f"q{i}", "other") for i in range(400)]
    sampled = {e.request_id for e in events if should_judge(e.request_id, 0.05)}
    assert sampled

    # yesterday's spend and another model's spend do not count against m today
    _spend(store, "m", clock.t - timedelta(days=1), 5_000)
    _spend(store, "other", clock.t - timedelta(hours=1), 5_000)
    _spend(store, "m", clock.t - timedelta(hours=2), 600)
    assert daily_usage(store, clock.t)["m"] == DailyUsage(600, 0.0)
    assert {e.base_model for e in sampler.select(events)} == {"m", "other"}
    assert sampler.pop_alerts() == []

    _spend(store, "m", clock.t - timedelta(minutes=1), 500)  # now 1,100 of 1,000 tokens
    clock.t += timedelta(seconds=1)  # inside the cache window: not seen yet
    assert any(e.base_model == "m" for e in sampler.select(events))
    clock.t += timedelta(seconds=5)
    chosen = sampler.select(events)
    assert chosen and {e.base_model for e in chosen} == {"other"}
    assert sampler.paused_until("m") == datetime(2026, 3, 2, tzinfo=UTC)
    (alert,) = sampler.pop_alerts()
    assert (alert.kind, alert.severity, alert.base_model) == ("judge_budget", "warn", "m")
    assert (alert.value, alert.threshold, alert.window) == (1100.0, 1000.0, "2026-03-01")
    assert "paused until 2026-03-02" in alert.message

    # still paused later the same day, and no second alert
    clock.t = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    assert {e.base_model for e in sampler.select(events)} == {"other"}
    assert sampler.pop_alerts() == []

    # the alert reaches the alerts table (and the publisher) exactly once
    published: list[Alert] = []

    async def publish(a: Alert) -> None:
        published.append(a)

    import asyncio

    sink = AlertSink(store, publish, renotify=timedelta(days=1), now=clock)
    asyncio.run(sink.emit([alert]))
    asyncio.run(sink.emit([alert]))  # a second worker raising the same alert
    assert [a.alert_id for a in published] == [alert.alert_id]
    rows = store.query(
        "SELECT kind, severity, base_model, value FROM alerts WHERE kind = 'judge_budget'"
    ).rows
    assert rows == [("judge_budget", "warn", "m", 1100.0)]

    # a new UTC day: the budget is fresh, m is sampled again
    clock.t = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
    again = sampler.select(events)
    assert {e.request_id for e in again} == sampled
    assert sampler.paused_until("m") is None


def test_cost_budget_counts_usd() -> None:
    usage = {"m": DailyUsage(tokens=10, cost_usd=2.5)}
    settings = JudgeSettings(daily_token_budget=None, daily_cost_budget_usd=2.0)
    sampler = JudgeSampler(
        settings, usage=lambda now: usage, now=lambda: datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert not sampler.budget_open("m")
    (alert,) = sampler.pop_alerts()
    assert (alert.feature, alert.value, alert.threshold) == ("cost_usd", 2.5, 2.0)
    assert sampler.budget_open("n")
