"""Crash mid-job, restart: the job completes once, with one registry entry.

`sentryml trainer` runs as a real subprocess against the real broker and, through the
ClickHouse-HTTP endpoint over this session's chDB folder, the test's own database. It is
killed with SIGKILL right after it registered the trained adapter (during the evaluation),
so the offset is not committed and no outcome is recorded. The restarted trainer consumes
the same request again, retrains under the same adapter version and finishes the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from schemas.events import RetrainRequest
from schemas.topics import Topics
from streams.topics import create_topics
from tests.conftest import HTTP_WRITER, REPO, wait_for
from tests.test_trainer import (
    MODEL,
    TINY_GOLDEN,
    committed_offset,
    publish_request,
    seed_support_data,
    sha256_file,
)
from trainer.registry import Registry, adapter_version_for
from workers.kafka import KafkaSettings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CONFIG = """\
golden_set: {golden}
lora_r: 2
lora_alpha: 4
lora_dropout: 0.0
target_modules: [q_proj, v_proj]
max_steps: 2
batch_size: 2
learning_rate: 0.002
warmup_ratio: 0.0
max_seq_length: 64
min_examples: {{style: 20}}
max_new_tokens: 12
system_prompt: Reply in JSON.
judge_good_min_score: null
device: cpu
"""


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "trainer", "--max-jobs", "1"],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def test_trainer_killed_mid_job_finishes_it_after_restart_with_one_registry_entry(
    store: Any, store_settings: Any, kafka: KafkaSettings, clickhouse_http_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from trainer.demo_model import ensure_demo_model

    demo_model = ensure_demo_model()  # converted before the subprocesses race to it
    create_topics(kafka, partitions=1)
    seed_support_data(store, 30)
    golden = tmp_path / "tiny.yaml"
    golden.write_text(TINY_GOLDEN)
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(golden=golden))
    group = f"trainer-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTRYML_")},
        "SENTRYML_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SENTRYML_STORE_URL": clickhouse_http_url,
        "SENTRYML_STORE_DATABASE": store_settings.database,
        "SENTRYML_STORE_USERNAME": HTTP_WRITER[0],
        "SENTRYML_STORE_PASSWORD": HTTP_WRITER[1],
        "SENTRYML_ADAPTERS_DIR": str(tmp_path / "adapters"),
        "SENTRYML_CONFIG_FILE": str(config),
        "SENTRYML_CONSUMER_GROUP": group,
        # Static membership: the restarted trainer takes the partition back at once.
        "SENTRYML_INSTANCE_ID": f"trainer-host-{uuid.uuid4().hex[:6]}",
        "SENTRYML_MODEL_CACHE": str(demo_model.parent),
        "HF_HUB_OFFLINE": "1",
    }
    request = RetrainRequest(job_id=f"crash-20260101T000000-{uuid.uuid4().hex[:6]}",
                             base_model=MODEL, method="lora", task_goal="style")  # fmt: skip
    version = adapter_version_for(request.job_id)
    publish_request(kafka, request)
    registry = Registry(store)
    log = tmp_path / "trainer.log"

    def status() -> str | None:
        record = registry.get(MODEL, version)
        return record.status if record else None

    def outcomes() -> list[str]:
        rows = store.query(
            "SELECT decision FROM retrain_jobs WHERE job_id = {j:String} ORDER BY ts",
            {"j": request.job_id},
        ).rows
        return [str(r[0]) for r in rows]

    first = _start(env, log)
    try:
        wait_for(
            lambda: status() == "trained" or first.poll() is not None,
            timeout=900,
            interval=0.1,
            what="the first trainer to register the trained adapter",
        )
        assert first.poll() is None, f"trainer exited early:\n{log.read_text()[-3000:]}"
        first.send_signal(signal.SIGKILL)  # mid-evaluation: no outcome, no commit
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert outcomes() == ["started"], f"the kill did not land mid-job: {outcomes()}"
    assert status() == "trained"

    second = _start(env, log)
    try:
        rc = second.wait(900)
    finally:
        if second.poll() is None:
            second.kill()
    assert rc == 0, log.read_text()[-3000:]

    decisions = outcomes()
    assert decisions[:2] == ["started", "started"] and len(decisions) == 3, decisions
    assert decisions[2] in ("promoted", "rejected")
    attempts = store.query(
        "SELECT reason FROM retrain_jobs WHERE job_id = {j:String} AND decision = 'started' "
        "ORDER BY ts",
        {"j": request.job_id},
    ).rows
    assert [r[0].split(":")[0] for r in attempts] == ["attempt 1", "attempt 2"]
    (record,) = registry.list_adapters(MODEL)  # one entry, not one per attempt
    assert (record.version, record.status, record.job_id) == (version, decisions[2], request.job_id)
    assert record.sha256 == sha256_file(Path(record.path) / "adapter_model.safetensors")
    assert [p.name for p in (tmp_path / "adapters").rglob("adapter_model.safetensors")] == [
        "adapter_model.safetensors"
    ]
    topic = Topics(kafka.topic_prefix).retrain_requests
    assert committed_offset(kafka, group, topic) == 1
