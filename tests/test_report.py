"""`sentryml report`: the HTML report from SQL over a store with a realistic history, opened
in headless Chromium.

The history goes through the real code paths: a baseline fitted with ``fit_baseline`` on
synthetic support conversations, traffic counted by the worker's ``IngestProcessor`` (which
writes ``inference_logs`` and ``window_counts`` through ``flush_log``), drift evaluated by
``evaluate_drift`` at 20-minute steps, judge scores / golden runs / alerts as their events'
rows, and retrain decisions through ``record_job_event``. The embedder is a small hashing
bag-of-words model (a real :class:`~workers.embedding.Embedder`, so no model weights load).

Story (times back from ``now``): 6 h to 3 h in-distribution support traffic on the base
model, 3 h to 1 h cooking questions and rambling answers (drift, judge drop, golden fail),
then the gate fires, an adapter ``lora-1`` is promoted and serves the last hour.
"""

from __future__ import annotations

import hashlib
import html.parser
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from schemas.events import Alert, GoldenRun, JudgeScore
from tests.conftest import REPO
from workers.baseline import fit_baseline, save_baseline
from workers.drift import DriftSettings, DriftThresholds, decide, evaluate_drift, window_counts
from workers.ingest import IngestProcessor, RawRecord
from workers.report import FIGURES, HERO, ReportConfig, build_report
from workers.retrain_gate import record_job_event
from workers.stats import chi2_homogeneity, psi
from workers.store import Store, StoreSettings, open_store
from workers.synthetic import degraded_records, domain_records, support_records, to_inference_logs

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ADAPTER = "lora-1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class HashingEmbedder:
    """Bag of hashed words, L2-normalized: separates support questions from cooking ones
    without loading a model."""

    name = "test-hashing-128"
    dim = 128

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class History:
    now: datetime
    events: int
    adapter_events_last_hour: int
    judge_scored: int
    golden_runs: int
    alerts: int
    baseline_n: int


def _ingest(store: Store, processor: IngestProcessor, logs: list, first_offset: int) -> int:
    records = [
        RawRecord("inference-logs", 0, first_offset + i, e.request_id.encode(), e.to_bytes())
        for i, e in enumerate(logs)
    ]
    result = processor.process(records)
    assert not result.rejected, result.rejected[:1]
    processor.flush(result)
    return first_offset + len(records)


def populate(store: Store, now: datetime) -> History:
    """Write a six-hour history of one model through the real writers; return its sizes."""
    embedder = HashingEmbedder()
    baseline = fit_baseline(
        support_records(200, seed=1),
        embedder,
        base_model=MODEL,
        k=4,
        progress=False,
        now=now - timedelta(hours=7),
    )
    save_baseline(store, baseline)

    # Traffic: every phase strictly inside its minutes, so window edges are unambiguous.
    phases = [
        ("none", support_records(240, seed=2), now - timedelta(hours=6), timedelta(seconds=44)),
        (
            "none",
            domain_records("cooking", 80, seed=3) + degraded_records("rambling", 80, seed=4),
            now - timedelta(hours=3),
            timedelta(seconds=44),
        ),
        (ADAPTER, support_records(100, seed=5), now - timedelta(minutes=55), timedelta(seconds=30)),
    ]
    processor = IngestProcessor(
        store,
        consumer_group="report-test",
        worker_id="w0",
        embedder_factory=lambda name: embedder,
    )
    logs_by_phase = []
    for i, (adapter, records, start, spacing) in enumerate(phases):
        rng = random.Random(i)
        order = list(range(len(records)))
        rng.shuffle(order)  # mix the shifted phase's two kinds over its two hours
        logs_by_phase.append(
            to_inference_logs(
                [records[j] for j in order],
                base_model=MODEL,
                adapter_version=adapter,
                seed=10 + i,
                start=start,
                spacing=spacing,
            )
        )

    # In time order, as a worker would: count the traffic up to each 20-minute drift
    # evaluation, then evaluate (evaluate_drift must not see counts from its future).
    pending = sorted((e for logs in logs_by_phase for e in logs), key=lambda e: e.ts)
    offset, n_alerts = 0, 0
    for minutes in range(340, -1, -20):
        at = now - timedelta(minutes=minutes)
        due = [e for e in pending if e.ts < at]
        pending = pending[len(due) :]
        if due:
            offset = _ingest(store, processor, due, offset)
        stats, alerts = evaluate_drift(store, at, lambda _m: DriftThresholds())
        store.insert("drift_stats", [s.to_row() for s in stats])
        store.insert("alerts", [a.to_row() for a in alerts])
        n_alerts += len({a.alert_id for a in alerts})
    assert not pending

    # Judge: a sample of every phase; the shifted phase scores worse and refuses more.
    scores = []
    for phase, logs in enumerate(logs_by_phase):
        rng = random.Random(100 + phase)
        for event in logs[::4]:
            bad = phase == 1
            for dimension in ("format", "factual", "refusal"):
                if dimension == "refusal":
                    score = int(rng.random() < (0.3 if bad else 0.03))
                else:
                    score = rng.choice([1, 2, 2, 3, 4] if bad else [4, 4, 5, 5, 5])
                scores.append(
                    JudgeScore(
                        ts=event.ts + timedelta(seconds=5),
                        request_id=event.request_id,
                        base_model=MODEL,
                        adapter_version=event.adapter_version,
                        judge_model="smollm2-135m-instruct",
                        dimension=dimension,
                        score=score,
                    )
                )
    failed = JudgeScore(
        ts=now - timedelta(hours=2),
        request_id="judge-timeout-1",
        base_model=MODEL,
        judge_model="smollm2-135m-instruct",
        dimension="format",
        score=None,
        ok=False,
        error="timeout",
    )
    store.insert("judge_scores", [s.to_row() for s in [*scores, failed]])

    golden = [
        ("none", now - timedelta(hours=6, minutes=30), "deploy", 14),
        ("none", now - timedelta(hours=2), "daily", 9),
        (ADAPTER, now - timedelta(minutes=58), "trainer", 14),
    ]
    store.insert(
        "golden_runs",
        [
            GoldenRun(
                ts=ts,
                run_id=f"run-{i}",
                base_model=MODEL,
                adapter_version=adapter,
                golden_set="support-json",
                trigger=trigger,
                total=15,
                passed=passed,
                pass_rate=passed / 15,
                threshold=0.8,
            ).to_row()
            for i, (adapter, ts, trigger, passed) in enumerate(golden)
        ],
    )
    extra_alerts = [
        Alert(
            ts=now - timedelta(hours=2),
            alert_id="golden-1",
            base_model=MODEL,
            kind="golden",
            severity="page",
            value=0.6,
            threshold=0.8,
            sample_size=15,
            message="golden set support-json: 9/15 passed (60.0%), threshold 80%",
        ),
        Alert(
            ts=now - timedelta(minutes=110),
            alert_id="judge-1",
            base_model=MODEL,
            kind="judge_drop",
            feature="format",
            window="7d_vs_previous",
            severity="alert",
            value=2.4,
            threshold=3.5,
            sample_size=40,
            message="judge format mean fell to 2.40 (n=40) from 4.60 (n=60)",
        ),
    ]
    store.insert("alerts", [a.to_row() for a in extra_alerts])

    job = "smollm2-20260301-abc123"
    for minutes in (300, 240, 180, 140):
        record_job_event(
            store, base_model=MODEL, adapter_version="none", decision="held",
            reason="held: signals: no alert persisted for 3 evaluations",
            now=now - timedelta(minutes=minutes),
        )  # fmt: skip
    for minutes, decision, reason in (
        (100, "fired", "drift:embedding@1h persisted for 3 evaluations; 240 new examples"),
        (98, "started", "lora on 240 examples"),
        (60, "promoted", "golden 14/15 vs incumbent 9/15 (p=0.02), no safety regression"),
    ):
        record_job_event(
            store, base_model=MODEL, adapter_version="none", decision=decision, reason=reason,
            job_id=job, now=now - timedelta(minutes=minutes),
        )  # fmt: skip
    store.insert(
        "adapters",
        [
            {
                "updated_at": now - timedelta(minutes=60),
                "version": ADAPTER,
                "base_model": MODEL,
                "parent_version": "none",
                "method": "lora",
                "dataset_hash": "d" * 64,
                "metrics": '{"golden_pass_rate": 0.933}',
                "sha256": "a" * 64,
                "path": "/adapters/lora-1",
                "status": "promoted",
                "job_id": job,
            }
        ],
    )
    return History(
        now=now,
        events=sum(len(logs) for logs in logs_by_phase),
        adapter_events_last_hour=len(logs_by_phase[2]),
        judge_scored=len(scores),
        golden_runs=len(golden),
        alerts=n_alerts + len(extra_alerts),
        baseline_n=baseline.n_reference,
    )


@pytest.fixture(scope="module")
def history_store(chdb_dir: Path) -> Iterator[tuple[Store, History, StoreSettings]]:
    """One populated database shared by this module's tests (they only read it)."""
    settings = StoreSettings(url=f"chdb://{chdb_dir}", database=f"t_{uuid.uuid4().hex[:12]}")
    store = open_store(settings)
    store.migrate()
    try:
        yield store, populate(store, datetime.now(UTC).replace(microsecond=0)), settings
    finally:
        store.command(f"DROP DATABASE IF EXISTS {settings.database}")
        store.close()


# --------------------------------------------------------------------------------------
# headless Chromium
# --------------------------------------------------------------------------------------
def _find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; installed here (scripts/install_chromium.sh) when missing."""
    found = _find_chromium()
    if found is None:
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "install_chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        found = _find_chromium()
        if found is None:
            pytest.skip(
                "headless Chromium is not installed and could not be installed "
                f"(scripts/install_chromium.sh: {(done.stderr or done.stdout).strip()[-300:]})"
            )
    return found


def _run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{uuid.uuid4().hex[:8]}"
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.srcs.append(values.get("src") or "")
        if tag == "section":
            self.sections.append(values.get("id") or "")


def _section_html(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"section {key} missing"
    return match.group(1)


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_renders_every_section_with_sample_sizes_in_chromium(
    history_store: tuple[Store, History, StoreSettings], chromium: str, tmp_path: Path
) -> None:
    store, history, _ = history_store
    out = tmp_path / "report"
    out.mkdir()
    (out / "timeline.png").write_bytes(b"stale")  # a previous report's file is replaced
    report = build_report(store, out, ReportConfig(), now=history.now)

    assert report.base_model == MODEL
    sections = {s.key: s for s in report.sections}
    assert list(sections) == [
        "overview", "drift", "clusters", "changes", "output_length", "judge", "golden",
        "timeline", "alerts",
    ]  # fmt: skip
    assert not [k for k, s in sections.items() if s.empty]
    # The sample sizes come from the store, and match what was written.
    assert sections["clusters"].n == history.events  # all six hours lie in the newest 24 h
    assert sections["output_length"].n == history.events
    assert sections["judge"].n == history.judge_scored
    assert sections["golden"].n == history.golden_runs
    assert sections["alerts"].n == history.alerts
    assert report.hero == out / HERO
    assert sorted(p.name for p in report.images) == sorted(FIGURES)

    page = report.index.read_text()
    drift = _section_html(page, "drift")
    # the newest 1h evaluation of the adapter covers exactly its traffic
    row = re.search(rf"<tr><td>embedding</td><td>1h</td><td>{ADAPTER}</td>(.*?)</tr>", drift, re.S)
    assert row, "no embedding/1h row for the adapter in the drift table"
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    # after: last evaluated, PSI, JSD, p-value: n (window) and n (baseline reference split)
    assert cells[4:6] == [f"{history.adapter_events_last_hour:,}", str(history.baseline_n)]
    assert "status-alert" in drift  # the shifted phase alerted
    clusters = _section_html(page, "clusters")
    assert f"n = {history.events:,} events" in clusters and "novelty" in clusters
    changes = _section_html(page, "changes")
    assert sections["changes"].n == history.events  # the newest 24 h hold all the traffic
    assert "unlike the training data:" in changes and "example 1:" in changes
    assert "14 / 15" in _section_html(page, "golden")
    assert "promoted" in _section_html(page, "timeline")
    assert "status-page" in _section_html(page, "alerts")

    # Chromium: the DOM it built has every image, each an existing, non-empty PNG.
    dom = _run_chromium(chromium, tmp_path, "--dump-dom", report.index.as_uri()).stdout
    parser = _Images()
    parser.feed(dom)
    assert parser.sections == list(sections)
    assert sorted(parser.srcs) == sorted(FIGURES)
    for src in parser.srcs:
        data = (out / src).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, src

    # ... and a screenshot of the top of the page shows the figures' pixels.
    from PIL import Image

    shot = tmp_path / "shot.png"
    _run_chromium(
        chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
        "--hide-scrollbars", report.index.as_uri(),
    )  # fmt: skip
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 30_000
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.shape == (2000, 1280, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    # matplotlib's first line colour (tab:blue) is in the figures only, not in the page CSS
    blue = np.all(np.abs(pixels - np.array([31, 119, 180])) <= 10, axis=2)
    assert blue.sum() > 500, "the overview figure did not render in the screenshot"


def _evaluation_rows(section: str) -> dict[str, tuple[str, str, str, str]]:
    """``{window: (n, PSI, p adjusted, status)}`` from a share section's evaluation table."""
    table = re.search(r'<table class="evaluation">.*?<tbody>(.*?)</tbody>', section, re.S)
    assert table, "no evaluation table in the section"
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S):
        window, _, n, psi_text, _, _, p_adjusted, status = re.findall(r"<td>(.*?)</td>", row)
        out[window] = (n, psi_text, p_adjusted, re.sub(r"<[^>]+>", "", status))
    return out


def test_report_status_is_the_drift_monitors_decision(store: Store, tmp_path: Path) -> None:
    """On a small window the report says what the drift monitor decided, not what one
    chi-square test says: the output-length shift has PSI 0.40 and chi-square p = 0.005,
    an alert for a single test at alpha 0.01, but Holm over the evaluation's 18 tests
    (and the exact test on bins expected to hold under 5 events) leave it ``ok``."""
    now = datetime.now(UTC).replace(microsecond=0)
    embedder = HashingEmbedder()
    baseline = fit_baseline(
        support_records(600, seed=1), embedder, base_model=MODEL, k=4, progress=False,
        now=now - timedelta(hours=7),
    )  # fmt: skip
    save_baseline(store, baseline)
    records = support_records(60, seed=2) + degraded_records("rambling", 20, seed=4)
    random.Random(0).shuffle(records)
    logs = to_inference_logs(
        records, base_model=MODEL, seed=10, start=now - timedelta(minutes=20),
        spacing=timedelta(seconds=13),
    )  # fmt: skip
    processor = IngestProcessor(
        store, consumer_group="report-test", worker_id="w0", embedder_factory=lambda _: embedder
    )
    _ingest(store, processor, logs, 0)
    settings = DriftSettings()
    stats, _ = evaluate_drift(store, now, settings.thresholds_for, windows=settings.windows)
    decided = {(s.feature, s.window): s for s in stats}

    # The data is a case where the one-test verdict and the monitor's differ.
    fb = baseline.features["output_length"]
    counts = window_counts(
        store, (MODEL, "none", baseline), now - timedelta(days=1), now + timedelta(minutes=1)
    )["output_length"]
    observed = [counts.get(b, 0) for b in range(fb.bins)]
    one_test = decide(
        psi(observed, fb.counts), chi2_homogeneity(observed, fb.counts)[1], len(logs), fb.n,
        settings.thresholds_for(MODEL),
    )  # fmt: skip
    assert (one_test, decided[("output_length", "24h")].status) == ("alert", "ok")

    report = build_report(store, tmp_path / "report", ReportConfig(drift=settings), now=now)
    page = report.index.read_text()
    for key, feature in (("output_length", "output_length"), ("clusters", "embedding")):
        section = _section_html(page, key)
        stat = decided[(feature, "24h")]
        shown_p = re.search(r"\bp = ([0-9.e+-]+)", section)
        assert shown_p, f"{key}: no p-value"
        assert shown_p.group(1).rstrip(".") == f"{stat.p_adjusted:.2g}", (key, stat)
        shown_status = re.search(r'status <span class="status-(\w+)">', section)
        assert shown_status and shown_status.group(1) == stat.status, (key, stat)
        rows = _evaluation_rows(section)
        assert list(rows) == list(settings.windows)
        for window, row in rows.items():
            s = decided[(feature, window)]
            assert s.p_adjusted is not None
            expected = (f"{s.sample_size:,}", f"{s.psi:.3f}", f"{s.p_adjusted:.2g}", s.status)
            assert row == expected, (key, window)


def test_empty_store_says_no_data_yet_everywhere(store: Store, tmp_path: Path) -> None:
    report = build_report(store, tmp_path / "empty", ReportConfig())
    assert report.base_model is None and report.hero is None
    assert report.sections and all(s.empty for s in report.sections)
    page = report.index.read_text()
    assert page.count('class="empty">No data yet') >= len(report.sections)
    assert "<img" not in page
    assert not list((tmp_path / "empty").glob("*.png"))


@pytest.mark.slow
def test_cli_report_with_adapter_and_since(
    history_store: tuple[Store, History, StoreSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import typer
    from typer.testing import CliRunner

    from streams.commands import report as report_cmd

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is invoked by its name
    report_cmd.register(app)
    _, _, settings = history_store
    monkeypatch.setenv("SENTRYML_STORE_URL", settings.url)
    monkeypatch.setenv("SENTRYML_STORE_DATABASE", settings.database)
    monkeypatch.setenv("COLUMNS", "250")  # rich folds long paths in narrow tables
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        ["report", "--out", str(out), "--adapter", ADAPTER, "--since", "3h",
         "--base-model", MODEL],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output
    page = (out / "index.html").read_text()
    assert f"Adapter: {ADAPTER}" in page
    drift = _section_html(page, "drift")
    adapters = set(re.findall(r"<tr><td>[a-z_0-9]+</td><td>[0-9a-z]+</td><td>(.*?)</td>", drift))
    assert adapters == {ADAPTER}
    # golden runs show every adapter version in range: the 3 h range holds two of them
    assert "2 golden runs" in page

    bad = CliRunner().invoke(app, ["report", "--out", str(out), "--since", "yesterday"])
    assert bad.exit_code != 0 and "neither a duration" in bad.output


def test_parse_since_and_config_validation() -> None:
    from workers.report import parse_since

    now = datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_since("90m", now) == timedelta(minutes=90)
    assert parse_since("2w", now) == timedelta(days=14)
    assert parse_since("2026-03-01T12:00", now) == timedelta(hours=12)
    for bad in ("0d", "soon", "2026-03-03"):
        with pytest.raises(ValueError):
            parse_since(bad, now)
    with pytest.raises(ValueError, match="hero_window"):
        ReportConfig(hero_window="5m")
