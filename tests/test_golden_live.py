"""`sentryml golden run` against the real local llama.cpp server (SmolLM2-135M-Instruct).

Two cases designed so the pass rate is known whatever the tiny model says: one passes on
any non-empty answer, one can never pass. So the exit code is checked on both sides of the
threshold, and the page on the real broker's alerts topic and in the alerts table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from schemas.topics import Topics
from streams.commands import golden as golden_commands
from streams.topics import create_topics
from tests.test_golden_agent import consume_alerts

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASES = [
    {
        "id": "answers",
        "tags": ["smoke"],
        "prompt": "Say hello to a customer in one short sentence.",
        "checks": {"regex": r"\w"},
    },
    {
        "id": "impossible",
        "tags": ["smoke", "domain"],
        "prompt": "What is the refund window?",
        "expected": "xyzzy-never",
        "checks": {"exact": True},
    },
]


def _cli() -> typer.Typer:
    app = typer.Typer()
    golden_commands.register(app)
    return app


def test_golden_run_against_the_live_model(
    llm_server, kafka, store, store_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden_file = tmp_path / "live.jsonl"
    golden_file.write_text("\n".join(json.dumps(c) for c in CASES) + "\n")
    create_topics(kafka)
    for key, value in {
        "SENTRYML_STORE_URL": store_settings.url,
        "SENTRYML_STORE_DATABASE": store_settings.database,
        "SENTRYML_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }.items():
        monkeypatch.setenv(key, value)
    args = [
        "golden", "run", "--golden", str(golden_file), "--base-url", llm_server["base_url"],
        "--model", llm_server["model"], "--adapter", "v1", "--concurrency", "2", "--no-progress",
        "--max-tokens", "16",
    ]  # fmt: skip
    runner = CliRunner()

    at_threshold = runner.invoke(_cli(), [*args, "--threshold", "0.5"])
    assert at_threshold.exit_code == 0, at_threshold.output
    assert "PASS" in at_threshold.output and "1/2 passed (50.0%" in at_threshold.output

    under = runner.invoke(_cli(), [*args, "--threshold", "0.75", "--trigger", "ci"])
    assert under.exit_code == 1, under.output
    assert "FAIL" in under.output and "impossible" in under.output
    assert "-xyzzy-never" in under.output  # the expected-vs-actual diff
    assert "newly failing since run" in under.output  # compared with the first run
    assert "page golden-" in under.output and ": sent" in under.output

    runs = store.query(
        "SELECT run_id, trigger, total, passed, pass_rate, threshold, failed_case_ids "
        "FROM golden_runs FINAL ORDER BY ts"
    ).rows
    assert [r[1:6] for r in runs] == [("manual", 2, 1, 0.5, 0.5), ("ci", 2, 1, 0.5, 0.75)]
    assert json.loads(runs[1][6]) == ["impossible"]
    results = store.query(
        "SELECT case_id, passed, output, latency_ms FROM golden_results FINAL "
        "WHERE run_id = {r:String} ORDER BY case_id",
        {"r": runs[1][0]},
    ).rows
    assert [(r[0], r[1]) for r in results] == [("answers", 1), ("impossible", 0)]
    assert results[0][2].strip() and all(r[3] > 0 for r in results)

    # Under threshold: one page, on the real alerts topic and in the alerts table.
    stored = store.query("SELECT alert_id, kind, severity, value, threshold FROM alerts").rows
    assert stored == [(f"golden-{runs[1][0]}", "golden", "page", 0.5, 0.75)]
    got = consume_alerts(kafka, Topics(kafka.topic_prefix).alerts)
    assert [(a.alert_id, a.kind, a.base_model, a.adapter_version) for a in got] == [
        (f"golden-{runs[1][0]}", "golden", llm_server["model"], "v1")
    ]
