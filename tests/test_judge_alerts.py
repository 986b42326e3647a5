"""Judge trend alerts: 7-day rolling means from chDB, the drop rule, renotify; and the CLI."""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from schemas.events import Alert, JudgeScore
from streams.config import WorkerSettings
from tests.servers.faulty_openai import FaultyOpenAI
from workers.alerts import AlertSink
from workers.judge import JudgeSettings, RollingMean, judge_drop_alerts, rolling_judge_means

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def _rows(dimension: str, scores: list[int | None], start: datetime, adapter: str = "v1") -> list:
    rows = []
    for i, score in enumerate(scores):
        rows.append(
            JudgeScore(
                ts=start + timedelta(minutes=10 * i),
                request_id=f"{dimension}-{start:%d}-{adapter}-{i}",
                base_model="bot",
                adapter_version=adapter,
                judge_model="j",
                dimension=dimension,  # type: ignore[arg-type]
                score=score,
                ok=score is not None,
                error=None if score is not None else "unparsable",
            ).to_row()
        )
    return rows


def test_rolling_means_drop_rule_and_renotify(store) -> None:
    prev_start, cur_start = NOW - timedelta(days=13), NOW - timedelta(days=6)
    data = {
        ("factual", "prev"): [4, 5] * 15,
        ("factual", "cur"): [3, 4] * 15,
        ("format", "prev"): [4] * 30,
        ("format", "cur"): [4, 3] * 15,
        ("refusal", "prev"): [0] * 30,
        ("refusal", "cur"): [1] * 6 + [0] * 24,
    }
    rows = []
    for (dimension, window), scores in data.items():
        rows += _rows(dimension, scores, prev_start if window == "prev" else cur_start)
    rows += _rows("factual", [None] * 5, cur_start + timedelta(days=1))  # failures: ignored
    rows += _rows("factual", [1] * 40, NOW - timedelta(days=20))  # older than 14 days
    rows += _rows("factual", [1] * 5, cur_start, adapter="v2")  # too few to judge
    store.insert("judge_scores", rows)
    store.insert("judge_scores", rows[:10])  # a replayed insert: FINAL collapses it

    means = {(m.adapter_version, m.dimension): m for m in rolling_judge_means(store, NOW)}
    for dimension in ("factual", "format", "refusal"):
        m = means[("v1", dimension)]
        assert m.current_mean == pytest.approx(statistics.mean(data[(dimension, "cur")]))
        assert m.previous_mean == pytest.approx(statistics.mean(data[(dimension, "prev")]))
        assert (m.current_n, m.previous_n) == (30, 30)
    assert means[("v2", "factual")] == RollingMean("bot", "v2", "factual", 1.0, 5, None, 0)

    alerts = judge_drop_alerts(
        list(means.values()),
        drop_delta=0.5,
        refusal_rate_delta=0.1,
        min_samples=20,
        baseline_means={"format": 4.2},
        now=NOW,
    )
    got = {(a.feature, a.window): a for a in alerts}
    # factual fell 4.5 -> 3.5; refusals rose 0 -> 0.2; format fell exactly 0.5 (not more)
    # than the week before, but 0.7 below its baseline 4.2
    assert set(got) == {
        ("factual", "7d_vs_previous"),
        ("refusal", "7d_vs_previous"),
        ("format", "7d_vs_baseline"),
    }
    factual = got[("factual", "7d_vs_previous")]
    assert (factual.kind, factual.severity, factual.sample_size) == ("judge_drop", "alert", 30)
    assert factual.value == pytest.approx(3.5) and factual.threshold == pytest.approx(4.0)
    assert "n=30" in factual.message and "4.50" in factual.message
    assert got[("refusal", "7d_vs_previous")].threshold == pytest.approx(0.1)

    # the worker's timer path: store + publish, and no repeat within the renotify interval
    from streams.agents.judge import check_judge_drops

    published: list[Alert] = []

    async def publish(alert: Alert) -> None:
        published.append(alert)

    settings = WorkerSettings(judge=JudgeSettings(baseline_means={"format": 4.2}))
    sink = AlertSink(store, publish, renotify=timedelta(hours=6), now=lambda: NOW)
    sent = asyncio.run(check_judge_drops(settings.judge, store, sink, NOW))
    assert len(sent) == 3 and len(published) == 3
    assert (
        asyncio.run(check_judge_drops(settings.judge, store, sink, NOW + timedelta(minutes=5)))
        == []
    )
    stored = store.query("SELECT feature, window FROM alerts WHERE kind = 'judge_drop'").rows
    assert sorted(stored) == sorted(set(got))


def test_drop_rule_needs_enough_samples_and_validates_arguments() -> None:
    row = RollingMean("m", "v", "factual", 2.0, 19, 4.5, 100)
    assert (
        judge_drop_alerts([row], drop_delta=0.5, refusal_rate_delta=0.1, min_samples=20, now=NOW)
        == []
    )
    assert (
        len(
            judge_drop_alerts(
                [row], drop_delta=0.5, refusal_rate_delta=0.1, min_samples=19, now=NOW
            )
        )
        == 1
    )
    with pytest.raises(ValueError, match="must be > 0"):
        judge_drop_alerts([row], drop_delta=0, refusal_rate_delta=0.1, min_samples=1, now=NOW)


def test_cli_score_prints_every_dimension(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from streams.commands import judge as judge_commands

    app = typer.Typer()
    judge_commands.register(app)
    with FaultyOpenAI() as server:
        monkeypatch.setenv("SENTRYML_JUDGE_BASE_URL", server.base_url)
        result = CliRunner().invoke(
            app,
            ["judge", "score", "-p", "Capital of France?", "-c", "Paris. score=2"],
            env={"COLUMNS": "200"},
        )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "stub verdict" in line]
    assert len(lines) == 3
    assert "format" in lines[0] and "│ 2 " in lines[0]
    assert "refusal" in lines[2] and "│ 1 " in lines[2]
