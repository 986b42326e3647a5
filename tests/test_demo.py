"""The main job's story in a reduced form, on every real part, asserted from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_demo_story_runs_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = DemoConfig(
        out_dir=tmp_path / "demo",
        train_examples=300,
        phase1_events=200,
        phase2_events=160,
        live_requests=1,
        feedback_examples=40,
        train_steps=2,
        train_batch_size=2,
        eval_examples=4,
        max_new_tokens=40,
        timeout_s=1200,
    )
    summary = run_demo(cfg)
    # Every client of the demo's own process was closed before its broker stopped.
    stderr = capfd.readouterr().err
    assert [line for line in stderr.splitlines() if "|FAIL|rdkafka" in line] == []

    # Phase 1 is quiet; phase 2 raises input and output drift alerts (rows in `alerts`).
    assert summary["phase1_drift_alerts"] == 0
    kinds = {row["kind"] for row in summary["alerts"]}
    assert {"embedding_drift", "output_drift"} <= kinds
    # The judge scored its deterministic sample.
    assert sum(row["scored"] for row in summary["judge"]) >= 1
    # Golden runs for two adapter versions: the incumbent on deploy, the candidate in the job.
    assert len({row["adapter_version"] for row in summary["golden"]}) >= 2
    # The gate fired (a recorded decision) and the trainer finished with a verdict.
    decisions = {row["decision"] for row in summary["retrain"]}
    assert "fired" in decisions
    assert {status for _, status in summary["adapter_events"]} & {"promoted", "rejected"}
    assert summary["adapters"], "the candidate adapter is in the registry"
    assert Path(summary["report"]).exists()


def test_a_second_demo_in_the_same_folder_refuses_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    """As tried: a second `make demo` while one ran overwrote the first's pid files."""
    import os
    import subprocess
    import sys

    from streams.demo import REPO, services

    out = tmp_path / "demo"
    with services(out):  # the first demo, holding the folder
        second = subprocess.run(
            [sys.executable, "-m", "streams.cli", "demo", "--out", str(out)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"another demo is running in {out} (pid {os.getpid()})" in " ".join(
            (second.stdout + second.stderr).split()
        ), second.stdout + second.stderr
        assert sorted(p.name for p in out.iterdir()) == ["demo.lock"]  # nothing else touched
    # Once the first has ended, the folder is free again.
    with services(out):
        pass
