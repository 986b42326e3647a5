"""Shared fixtures: one real Kafka broker and one chDB folder per test session.

The broker is started by ``scripts/kafka_local.py`` on a free port (or taken from
``SENTRYML_TEST_KAFKA_BOOTSTRAP``). chDB allows one data folder per process, so tests
isolate by database instead: every ``store`` is a fresh database in the session folder.
Every ``kafka`` settings object has its own topic prefix.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting starve each other on a busy 2-core machine: torch
# generation with SmolLM2 ran 10x slower (50 s vs 4.8 s for 3 prompts x 10 tokens).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from workers.kafka import KafkaSettings
from workers.retry import poll_until
from workers.store import StoreSettings

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real local Kafka 4.x broker for this test session."""
    given = os.environ.get("SENTRYML_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    data = tmp_path_factory.mktemp("kafka")
    port = _free_port()
    script = REPO / "scripts" / "kafka_local.py"
    env = {k: v for k, v in os.environ.items() if k != "SENTRYML_KAFKA_BOOTSTRAP"}
    subprocess.run(
        [sys.executable, str(script), "start", "--port", str(port), "--dir", str(data)],
        check=True,
        env=env,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([sys.executable, str(script), "stop", "--dir", str(data)], check=False)


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of this test's own."""
    return KafkaSettings(
        bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=3
    )


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def store_settings(chdb_dir: Path) -> StoreSettings:
    return StoreSettings(url=f"chdb://{chdb_dir}", database=f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(store_settings: StoreSettings) -> Iterator[object]:
    """A migrated, empty database in the session's chDB folder."""
    from workers.store import open_store

    s = open_store(store_settings)
    s.migrate()
    try:
        yield s
    finally:
        s.command(f"DROP DATABASE IF EXISTS {store_settings.database}")
        s.close()


#: Users of the ``clickhouse_http_url`` endpoint: ``writer`` writes (a password made per
#: test session), ``reader`` only reads.
HTTP_WRITER = ("writer", secrets.token_urlsafe(16))
HTTP_READER = ("reader", "reader-pw")


@pytest.fixture(scope="session")
def clickhouse_http_url(chdb_dir: Path) -> Iterator[str]:
    """A ClickHouse-HTTP endpoint (``workers/store/server.py``) over the session's chDB folder.

    No ClickHouse server binary installs here, so the clickhouse-connect backend is tested
    against this endpoint. It runs in this process over the same folder as the embedded
    store (chDB allows one folder per process; one folder shared in-process is fine).
    Users: :data:`HTTP_WRITER` (writes) and :data:`HTTP_READER` (read-only). The writer's
    credentials are put in the environment (``SENTRYML_STORE_USERNAME`` / ``_PASSWORD``), so
    the processes a test starts log in as a deployment's worker would.
    """
    from workers.store.server import ChdbHTTPServer, ServeUser

    users = [ServeUser(*HTTP_WRITER), ServeUser(*HTTP_READER, readonly=True)]
    server = ChdbHTTPServer(chdb_dir, port=0, users=users).start()
    os.environ["SENTRYML_STORE_USERNAME"], os.environ["SENTRYML_STORE_PASSWORD"] = HTTP_WRITER
    try:
        yield server.url
    finally:
        server.close()


def http_writer_settings(url: str, database: str) -> StoreSettings:
    """Store settings for the ``clickhouse_http_url`` endpoint, logged in as its writer."""
    from pydantic import SecretStr

    return StoreSettings(
        url=url, database=database, username=HTTP_WRITER[0], password=SecretStr(HTTP_WRITER[1])
    )


def wait_for(
    condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> object:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` at the deadline."""
    try:
        return poll_until(condition, timeout=timeout, interval=interval, what=what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real OpenAI-compatible server (llama.cpp) serving SmolLM2-135M-Instruct.

    Yields ``{"base_url": "http://127.0.0.1:PORT/v1", "model": "smollm2-135m-instruct"}``.
    """
    data = tmp_path_factory.mktemp("llm")
    port = _free_port()
    script = REPO / "scripts" / "llm_local.py"
    subprocess.run(
        [sys.executable, str(script), "start", "--port", str(port), "--dir", str(data)],
        check=True,
    )
    try:
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "model": "smollm2-135m-instruct"}
    finally:
        subprocess.run([sys.executable, str(script), "stop", "--dir", str(data)], check=False)
