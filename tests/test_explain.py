"""What changed: named clusters, the share, keywords and examples on real MiniLM embeddings,
through the real ingest writer and chDB; the `sentryml drift explain` command."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from schemas.events import utcnow
from streams.commands import drift as drift_cmd
from workers.baseline import FeatureBaseline, fit_baseline, save_baseline
from workers.drift import DriftThresholds, bin_changes, bin_names, evaluate_drift
from workers.embedding import load_embedder
from workers.ingest import IngestProcessor, RawRecord
from workers.store import StoreSettings
from workers.synthetic import domain_records, support_records, to_inference_logs


def test_bin_changes_pick_the_largest_moves() -> None:
    fb = FeatureBaseline.from_counts("embedding", None, [40, 30, 20, 10])
    grew, shrank = bin_changes(np.array([5, 30, 20, 45]), fb, ["a", "b", "c", "d"], top=2)
    assert [c.name for c in grew] == ["d"] and [c.name for c in shrank] == ["a"]
    assert grew[0].delta == pytest.approx(0.35) and shrank[0].delta == pytest.approx(-0.35)
    assert bin_changes(np.zeros(4), fb, list("abcd")) == ([], [])


def _shifted(store: Any) -> Any:
    embedder = load_embedder("minilm")
    now = utcnow()
    baseline = fit_baseline(
        support_records(240, seed=31),
        embedder,
        base_model="explain-m",
        k=4,
        progress=False,
        now=now - timedelta(hours=3),
    )
    save_baseline(store, baseline)
    records = support_records(120, seed=32) + domain_records("cooking", 80, seed=33)
    random.Random(1).shuffle(records)
    logs = to_inference_logs(
        records,
        base_model="explain-m",
        seed=34,
        start=now - timedelta(minutes=50),
        spacing=timedelta(seconds=10),
    )
    processor = IngestProcessor(
        store, consumer_group="explain-test", worker_id="w0", embedder_factory=lambda _: embedder
    )
    raw = [
        RawRecord("inference-logs", 0, i, e.request_id.encode(), e.to_bytes())
        for i, e in enumerate(logs)
    ]
    result = processor.process(raw)
    assert not result.rejected
    processor.flush(result)
    return store, baseline, now


def test_a_drift_alert_says_what_changed_and_the_command_shows_it(
    store: Any, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One shifted hour (40 % cooking prompts) through the real writer, then the alert and
    the command (one test: the store fixture is per test, and the ingest is the slow part)."""
    store, baseline, now = _shifted(store)
    _, alerts = evaluate_drift(store, now, lambda _m: DriftThresholds(), windows=("1h",))
    store.insert("alerts", [a.to_row() for a in alerts])  # the details column exists
    novelty = next(a for a in alerts if a.feature == "novelty")
    details = novelty.details
    assert details["window"] == "1h" and details["sample_size"] == 200
    assert details["share_low"] <= 0.4 <= details["share_high"]  # 80 of 200 are cooking
    # the new prompts' keywords and examples are about cooking, not support
    text = " ".join(details["keywords"] + details["examples"]).lower()
    assert any(w in text for w in ("recipe", "bake", "cook", "oven", "sauce", "dough"))
    assert 1 <= len(details["examples"]) <= 5
    names = bin_names(baseline, "embedding")
    assert all(c["name"] in names for c in details["grew"] + details["shrank"])
    assert "new prompts about:" in novelty.message
    # every drift alert of the window carries the same explanation
    assert all(a.details == details for a in alerts if a.window == "1h")

    monkeypatch.setenv("SENTRYML_STORE_URL", store_settings.url)
    monkeypatch.setenv("SENTRYML_STORE_DATABASE", store_settings.database)
    app = typer.Typer()
    drift_cmd.register(app)
    runner = CliRunner()
    shown = runner.invoke(app, ["drift", "explain", "--window", "1h", "--base-model", "explain-m"])
    assert shown.exit_code == 0, shown.output
    assert "unlike the training data:" in shown.output and "example 1:" in shown.output
    as_json = runner.invoke(app, ["drift", "explain", "--window", "24h", "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.output.splitlines() if line.startswith("{")]
    assert any(r["base_model"] == "explain-m" and r["keywords"] for r in rows)
    bad = runner.invoke(app, ["drift", "explain", "--window", "2h"])
    assert bad.exit_code != 0
    none = runner.invoke(app, ["drift", "explain", "--base-model", "nobody"])
    assert none.exit_code == 1
