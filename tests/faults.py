"""Helpers of the fault tests: a worker subprocess, a TCP proxy that can refuse, Kafka I/O.

Everything here is a real part or a real local misbehaving server: ``WorkerProcess`` runs
``sentryml worker`` (``python -m streams.cli worker``) and is stopped with real signals;
``TcpProxy`` forwards a real TCP port and can stop listening (connections are refused)
and start again on the same port; the Kafka helpers use confluent-kafka against the real
broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.events import InferenceLog
from schemas.topics import Topics
from streams.topics import create_topics
from tests.conftest import REPO, wait_for
from workers.kafka import KafkaSettings

#: Where tests append their measured numbers (JSON lines) when this variable names a file;
#: docs/reliability.md's table is built from such a run.
REPORT_ENV = "SENTRYML_RELIABILITY_REPORT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(fault: str, **numbers: Any) -> None:
    """Record what a fault test measured (printed; appended to $SENTRYML_RELIABILITY_REPORT)."""
    line = json.dumps({"fault": fault, **numbers}, default=str)
    print(f"RELIABILITY {line}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


# -- Kafka ------------------------------------------------------------------------------
def make_events(n: int, *, tag: str, ts: datetime | None = None) -> list[InferenceLog]:
    """``n`` distinct valid inference logs (request ids ``{tag}-{i}``), a minute old."""
    ts = ts or datetime.now(UTC) - timedelta(minutes=1)
    return [
        InferenceLog(
            request_id=f"{tag}-{i}",
            ts=ts,
            base_model="support-bot-base",
            adapter_version="v1",
            prompt=f"How do I reset the password of account {i}?",
            completion="Open Settings, choose Security, then Reset password.",
            completion_tokens=9,
            latency_ms=12.5,
        )
        for i in range(n)
    ]


def produce(
    kafka: KafkaSettings, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> int:
    """Produce (key, value) pairs idempotently and wait for every acknowledgement."""
    producer = Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "linger.ms": 20,
            "message.max.bytes": 16_000_000,
        }
    )
    n = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        n += 1
    left = producer.flush(60)
    assert left == 0, f"{left} messages not acknowledged by the broker"
    return n


def consume_all(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Read ``topic`` from the start until ``expected`` messages arrived (plus stragglers)."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 16_000_000,
        }
    )
    consumer.subscribe([topic])
    out: list = []

    def got_all() -> bool:
        out.extend(m for m in consumer.consume(500, timeout=0.5) if not m.error())
        return len(out) >= expected

    try:
        wait_for(got_all, timeout=timeout, what=f"{expected} messages on {topic}")
        out.extend(m for m in consumer.consume(500, timeout=1.0) if not m.error())
    finally:
        consumer.close()
    return out


def end_offsets(kafka: KafkaSettings, topic: str, partitions: int) -> dict[int, int]:
    """High watermark per partition (the number of records written to it)."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"hw-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def committed(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001: nothing committed; {}: the group
    coordinator is not ready yet, e.g. while it loads after a start)."""
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT):
            return {}
        raise
    finally:
        consumer.close()


#: Answers of a broker whose partition leaders are not ready yet.
_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
)


def caught_up(kafka: KafkaSettings, group: str, topic: str) -> bool:
    """The group has committed every record of ``topic`` (so each was flushed or DLQ'd).

    False, to be asked again, while the broker answers with a retriable error (a partition
    leader not elected yet right after the topic was created: NOT_LEADER_FOR_PARTITION)."""
    try:
        ends = end_offsets(kafka, topic, kafka.partitions)
    except KafkaException as exc:
        error = exc.args[0]
        if error.retriable() or error.code() in _NOT_READY:
            return False
        raise
    done = committed(kafka, group, topic, kafka.partitions)
    return all(end == 0 or done.get(p) == end for p, end in ends.items())


# -- the store ------------------------------------------------------------------------
def flushed_events(store: Any) -> int:
    """Events counted by flushes (flush_log is what feeds window_counts)."""
    return int(store.query("SELECT sum(events) FROM flush_log").scalar() or 0)


def stored_logs(store: Any) -> tuple[int, int]:
    """(rows in inference_logs after dedup by request_id, distinct request ids)."""
    row = store.query("SELECT count(), uniqExact(request_id) FROM inference_logs FINAL").rows[0]
    return int(row[0]), int(row[1])


# -- the worker as a process ------------------------------------------------------------
class WorkerProcess:
    """``sentryml worker`` in a subprocess with its env, logs in a file, metrics over HTTP."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SENTRYML_METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics counters ({} while its web server is not up)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        """The worker's /health: (HTTP status, JSON body); (0, {}) while it is not up."""
        url = f"http://127.0.0.1:{self.metrics_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- a TCP proxy that can refuse --------------------------------------------------------
class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target``; :meth:`down` refuses, :meth:`up` serves again.

    ``down`` closes the listening socket and every open connection, so clients see what a
    crashed or unreachable server gives them: resets, then refused connections. ``hang``
    keeps accepting connections and reading requests but forwards nothing either way (a
    server stuck in a long GC pause or a full disk); ``unhang`` resets those connections,
    as a server that gives up on them does, and forwards again. With ``refuse_inserts``
    set, a connection that sends an ``INSERT`` is reset (reads still work: a server that
    went read-only, or a write path cut off).
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.hanging = False
        self.refuse_inserts = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> TcpProxy:
        """Listen (again) on :attr:`port`; a no-op when already up."""
        if self._listener is not None:
            return self
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone won't.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._drop_connections()

    def hang(self) -> None:
        self.hanging = True

    def unhang(self) -> None:
        self.hanging = False
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.refuse_inserts and b"INSERT" in data:
                    return  # the finally resets both sides
                if not self.hanging:  # hung: swallowed, the peer waits for an answer
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            src.close()  # each socket is the source of exactly one pump
            with self._lock:
                self._conns.discard(src)


# -- one fault test's rig ---------------------------------------------------------------
@dataclass
class Rig:
    """One test's topics, group, store endpoint (behind a proxy) and worker factory."""

    kafka: KafkaSettings
    store: object
    proxy: TcpProxy
    group: str
    database: str
    tmp: Path

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka.topic_prefix)

    def worker(self, name: str, **env: str) -> WorkerProcess:
        base = {
            "SENTRYML_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "SENTRYML_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "SENTRYML_KAFKA_PARTITIONS": str(self.kafka.partitions),
            "SENTRYML_STORE_URL": self.proxy.url,
            "SENTRYML_STORE_DATABASE": self.database,
            "SENTRYML_CONSUMER_GROUP": self.group,
            "SENTRYML_WORKER_ID": name,
            "SENTRYML_INGEST_BATCH_MAX": "500",
            "SENTRYML_INGEST_BATCH_SECONDS": "0.5",
            "SENTRYML_JUDGE_ENABLED": "false",
            "SENTRYML_RETRAIN_ENABLED": "false",
            "BROKER_SESSION_TIMEOUT": "10",
        }
        return WorkerProcess({**base, **env}, self.tmp / f"{name}.log").start()

    def produce(self, events: list) -> None:
        produce(
            self.kafka,
            self.topics.inference_logs,
            [(e.request_id.encode(), e.to_bytes()) for e in events],
        )

    def caught_up(self) -> bool:
        """Every produced record is committed by the group (so it was flushed first)."""
        return caught_up(self.kafka, self.group, self.topics.inference_logs)

    def committed_total(self) -> int:
        done = committed(self.kafka, self.group, self.topics.inference_logs, self.kafka.partitions)
        return sum(max(o, 0) for o in done.values())

    def dlq_size(self) -> int:
        return sum(end_offsets(self.kafka, self.topics.dlq, self.kafka.partitions).values())

    def dlq_reasons(self, expected: int) -> dict[str, int]:
        """Read the DLQ (``expected`` records) and count its records by ``sentryml-reason``."""
        reasons: dict[str, int] = {}
        for msg in consume_all(self.kafka, self.topics.dlq, expected):
            reason = dict(msg.headers())["sentryml-reason"].decode()
            reasons[reason] = reasons.get(reason, 0) + 1
        return reasons

    def assert_exact(self, produced: int) -> None:
        assert flushed_events(self.store) == produced, "flush_log counts != events produced"
        assert stored_logs(self.store) == (produced, produced), "inference_logs rows"
        assert self.dlq_size() == 0, "a good event went to the DLQ"


@contextlib.contextmanager
def rig_on(
    kafka: KafkaSettings, store: Any, store_settings: Any, clickhouse_http_url: str, tmp: Path
) -> Iterator[Rig]:
    """Topics created, the store endpoint behind a proxy that is up; the proxy closed after."""
    endpoint = urlsplit(clickhouse_http_url)
    proxy = TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 8123).up()
    create_topics(kafka)
    try:
        yield Rig(kafka, store, proxy, f"g-{uuid.uuid4().hex[:8]}", store_settings.database, tmp)
    finally:
        proxy.down()
