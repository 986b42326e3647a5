"""Several ``sentryml worker`` processes in one consumer group, on the real local broker.

Three worker processes (two at first, a third joining mid-stream, one leaving by SIGTERM
mid-stream) share a 6-partition topic and one store, served over ClickHouse's HTTP
protocol by ``workers/store/server.py`` (the ``clickhouse_http_url`` fixture). A
fourth worker process, alone in its own consumer group and database, reads the same
events from a twin topic. The test shows that the workers split the partitions, that
nothing is lost or counted twice across the rebalances, and that window counts, drift
statistics and the judge sample are exactly what the single worker produced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from schemas.events import InferenceLog
from schemas.topics import Topics
from streams.topics import create_topics
from tests.conftest import REPO, _free_port, wait_for
from tests.servers.faulty_openai import FaultyOpenAI
from workers.baseline import Baseline, fit_baseline, save_baseline
from workers.drift import DriftSettings, evaluate_drift
from workers.embedding import load_embedder
from workers.judge import should_judge
from workers.kafka import KafkaSettings
from workers.store import Store, StoreSettings, open_store
from workers.synthetic import support_records

MODEL = "support-bot-base"
ADAPTER = "v1"
PARTITIONS = 6
JUDGE_RATE = 0.05
FEATURES = ("embedding", "output_length", "ttr", "distinct2", "refusal")
SENTRYML = str(REPO / ".venv" / "bin" / "sentryml")


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    """A small baseline, fitted with the fast static embedder the workers will then load."""
    return fit_baseline(
        support_records(300, seed=1),
        load_embedder("model2vec"),
        base_model=MODEL,
        adapter_version=ADAPTER,
        k=6,
        seed=0,
        progress=False,
    )


# -- worker processes ---------------------------------------------------------------------
@dataclass
class WorkerProc:
    worker_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> dict[str, float]:
        """The worker's ``/metrics`` page, parsed (Prometheus text, one sample per name)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.worker_id} exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return bool(json.load(r)["worker_id"] == self.worker_id)
        except OSError:
            return False

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Cluster:
    """Starts ``sentryml worker`` processes; stops whatever it started."""

    kafka_bootstrap: str
    store_url: str
    judge_url: str
    logs: Path
    workers: list[WorkerProc] = field(default_factory=list)

    def start(self, worker_id: str, *, prefix: str, group: str, database: str) -> WorkerProc:
        port = _free_port()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SENTRYML_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SENTRYML_KAFKA_TOPIC_PREFIX": prefix,
            "SENTRYML_KAFKA_PARTITIONS": str(PARTITIONS),
            "SENTRYML_STORE_URL": self.store_url,
            "SENTRYML_STORE_DATABASE": database,
            "SENTRYML_CONSUMER_GROUP": group,
            "SENTRYML_WORKER_ID": worker_id,
            "SENTRYML_METRICS_PORT": str(port),
            "SENTRYML_INGEST_BATCH_MAX": "100",
            "SENTRYML_INGEST_BATCH_SECONDS": "0.5",
            "SENTRYML_JUDGE_BASE_URL": self.judge_url,
            "SENTRYML_JUDGE_SAMPLE_RATE": str(JUDGE_RATE),
            "SENTRYML_JUDGE_BATCH_SECONDS": "0.5",
        }
        log = self.logs / f"{worker_id}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [SENTRYML, "worker", "--loglevel", "info"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProc(worker_id, port, proc, log)
        self.workers.append(worker)
        return worker

    def stop(self, worker: WorkerProc, timeout: float = 60.0) -> int:
        """SIGTERM (Faust's graceful stop) and wait; returns the exit status."""
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
        try:
            return worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            raise AssertionError(
                f"{worker.worker_id} ignored SIGTERM for {timeout}s:\n{worker.tail()}"
            ) from None

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(30)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(10)


# -- traffic ------------------------------------------------------------------------------
class Traffic:
    """Produces inference logs at a steady rate, each to both twin topics, until stopped."""

    def __init__(self, bootstrap: str, topics: list[str], t0: datetime, run: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self._topics = topics
        self._t0 = t0
        self._run = run
        self._records = support_records(5000, seed=7)
        self.produced: list[InferenceLog] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _event(self, i: int) -> InferenceLog:
        record = self._records[i % len(self._records)]
        return InferenceLog(
            request_id=f"{self._run}-{i:05d}",
            ts=self._t0 + timedelta(seconds=i),
            base_model=MODEL,
            adapter_version=ADAPTER,
            prompt=record.prompt,
            completion=record.completion,
        )

    def send(self, n: int) -> None:
        for _ in range(n):
            event = self._event(len(self.produced))
            for topic in self._topics:
                self._producer.produce(topic, event.to_bytes(), event.request_id.encode())
            self.produced.append(event)
            self._producer.poll(0)
        assert self._producer.flush(30) == 0

    def start(self, per_second: int = 40) -> None:
        """Keep producing (``per_second`` in small chunks) in a thread until :meth:`stop`."""

        def run() -> None:
            chunk = max(1, per_second // 10)
            while not self._stop.is_set():
                self.send(chunk)
                self._stop.wait(0.1)  # the pacing of the traffic, not a wait on a result

        self._stop.clear()
        self._thread = threading.Thread(target=run, name="traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None


# -- observations -------------------------------------------------------------------------
def assignment(admin: AdminClient, group: str, topic: str) -> dict[str, set[int]]:
    """``{member client id: partitions of topic}`` as the broker's group coordinator says."""
    description = admin.describe_consumer_groups([group])[group].result(30)
    out: dict[str, set[int]] = {}
    for member in description.members:
        tps = member.assignment.topic_partitions if member.assignment else []
        out[member.member_id] = {tp.partition for tp in tps if tp.topic == topic}
    return out


def stable_with(admin: AdminClient, group: str, topic: str, members: int) -> bool:
    """True when ``members`` members share every partition of ``topic``."""
    try:
        owned = assignment(admin, group, topic)
    except Exception:  # the group does not exist yet, or is rebalancing
        return False
    parts = [p for ps in owned.values() for p in ps]
    return (
        len(owned) == members and all(owned.values()) and sorted(parts) == list(range(PARTITIONS))
    )


def metric_is(worker: WorkerProc, name: str, value: float) -> bool:
    return worker.metrics().get(name) == value


def counted(store: Store) -> int:
    """Events counted so far (the sum of every flush's event count)."""
    return int(store.query("SELECT sum(events) FROM flush_log").scalar() or 0)


def by_worker(store: Store) -> dict[str, tuple[set[int], int]]:
    """``{worker_id: (partitions it flushed, events it counted)}`` from ``flush_log``."""
    rows = store.query(
        "SELECT worker_id, groupUniqArray(partition), sum(events) FROM flush_log GROUP BY worker_id"
    ).rows
    return {str(w): ({int(p) for p in ps}, int(n)) for w, ps, n in rows}


def last_offsets(store: Store, worker_id: str | None = None) -> dict[int, int]:
    """Highest offset flushed per partition (by one worker, or by any)."""
    rows = store.query(
        "SELECT partition, max(last_offset) FROM flush_log "
        "WHERE {w:String} = '' OR worker_id = {w:String} GROUP BY partition",
        {"w": worker_id or ""},
    ).rows
    return {int(p): int(o) for p, o in rows}


def newer(offsets: dict[int, int], mark: dict[int, int]) -> dict[int, int]:
    """The partitions of ``offsets`` that moved past ``mark``."""
    return {p: o for p, o in offsets.items() if o > mark.get(p, -1)}


def taken_over_from(store: Store, worker_id: str, last: dict[int, int]) -> set[int]:
    """Partitions of ``last`` that another worker flushed beyond ``worker_id``'s last offset."""
    rows = store.query(
        "SELECT partition, max(last_offset) FROM flush_log WHERE worker_id != {w:String} "
        "GROUP BY partition",
        {"w": worker_id},
    ).rows
    return {int(p) for p, o in rows if int(p) in last and int(o) > last[int(p)]}


def per_partition(store: Store) -> dict[int, int]:
    rows = store.query("SELECT partition, sum(events) FROM flush_log GROUP BY partition").rows
    return {int(p): int(n) for p, n in rows}


def window_counts(store: Store) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in store.query(
            "SELECT base_model, adapter_version, baseline_id, feature, bucket, bin, sum(count) "
            "FROM window_counts GROUP BY base_model, adapter_version, baseline_id, feature, "
            "bucket, bin ORDER BY base_model, adapter_version, baseline_id, feature, bucket, bin"
        ).rows
    ]


def drift_rows(store: Store, now: datetime) -> list[dict[str, Any]]:
    settings = DriftSettings()
    stats, _ = evaluate_drift(store, now, settings.thresholds_for)
    return sorted(
        (s.to_row() for s in stats), key=lambda r: (r["feature"], r["window"], r["baseline_id"])
    )


def judge_request_ids(bootstrap: str, topic: str, expected: set[str]) -> set[str]:
    """Request ids on the judge-requests topic, read until ``expected`` are all there."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: set[str] = set()

    def all_there() -> bool:
        for msg in consumer.consume(500, timeout=0.5):
            if not msg.error():
                seen.add((msg.key() or b"").decode())
        return expected <= seen

    try:
        wait_for(all_there, timeout=90, what=f"{len(expected)} judge requests on {topic}")
        for msg in consumer.consume(1000, timeout=1.0):  # anything beyond the expected set
            if not msg.error():
                seen.add((msg.key() or b"").decode())
    finally:
        consumer.close()
    return seen


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture
def databases(chdb_dir: Path, baseline: Baseline) -> Iterator[dict[str, Store]]:
    """Two migrated databases in the session folder, each with the baseline saved."""
    stores = {}
    for name in ("multi", "single"):
        settings = StoreSettings(
            url=f"chdb://{chdb_dir}", database=f"so_{name}_{uuid.uuid4().hex[:8]}"
        )
        store = open_store(settings)
        store.migrate()
        save_baseline(store, baseline)
        stores[name] = store
    try:
        yield stores
    finally:
        for store in stores.values():
            store.command(f"DROP DATABASE IF EXISTS {store.database}")


@pytest.fixture
def cluster(kafka_bootstrap: str, clickhouse_http_url: str, tmp_path: Path) -> Iterator[Cluster]:
    with FaultyOpenAI(delay_s=0.01) as judge:
        c = Cluster(kafka_bootstrap, clickhouse_http_url, judge.base_url, tmp_path)
        try:
            yield c
        finally:
            c.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_workers_split_partitions_and_match_one_worker_across_rebalances(
    kafka_bootstrap: str, databases: dict[str, Store], cluster: Cluster
) -> None:
    started = time.time()
    run = uuid.uuid4().hex[:8]
    multi_prefix, single_prefix = f"so{run}m.", f"so{run}s."
    multi_topics, single_topics = Topics(multi_prefix), Topics(single_prefix)
    for prefix in (multi_prefix, single_prefix):
        kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
        create_topics(kafka, partitions=PARTITIONS)
    multi, single = databases["multi"], databases["single"]
    group = f"so-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    source = multi_topics.inference_logs

    def group_worker(worker_id: str) -> WorkerProc:
        return cluster.start(worker_id, prefix=multi_prefix, group=group, database=multi.database)

    # One worker alone (its own group, database and twin topic) sees the same events.
    solo = cluster.start(
        "solo", prefix=single_prefix, group=f"{group}-solo", database=single.database
    )
    w1, w2 = group_worker("w1"), group_worker("w2")
    for w in (solo, w1, w2):
        wait_for(w.healthy, timeout=120, what=f"{w.worker_id} serving /health")
    wait_for(lambda: stable_with(admin, group, source, 2), timeout=90, what="w1+w2 assigned")

    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    traffic = Traffic(kafka_bootstrap, [source, single_topics.inference_logs], t0, run)

    # 1. Two workers split the six partitions: each flushes only its own.
    traffic.send(600)
    wait_for(lambda: counted(multi) == 600, timeout=120, what="600 events counted by w1+w2")
    split = by_worker(multi)
    assert set(split) == {"w1", "w2"}
    (p1, n1), (p2, n2) = split["w1"], split["w2"]
    assert p1 and p2 and not p1 & p2 and p1 | p2 == set(range(PARTITIONS))
    assert n1 > 0 and n2 > 0 and n1 + n2 == 600
    for w, n in ((w1, n1), (w2, n2)):  # each worker's /metrics agrees with the store
        wait_for(
            partial(metric_is, w, "sentryml_events_counted_total", n),
            timeout=30,
            what=f"{w.worker_id} /metrics counted {n}",
        )

    # 2. A third worker joins while traffic flows: the group rebalances to three members.
    traffic.start()
    w3 = group_worker("w3")
    wait_for(w3.healthy, timeout=120, what="w3 serving /health")
    wait_for(lambda: stable_with(admin, group, source, 3), timeout=90, what="w1+w2+w3 assigned")
    wait_for(lambda: "w3" in by_worker(multi), timeout=90, what="w3 flushing its partitions")
    traffic.stop()

    # 3. w1 leaves (SIGTERM) while traffic flows: its partitions move to w2 and w3.
    mark = last_offsets(multi)
    traffic.start()
    wait_for(
        lambda: newer(last_offsets(multi, "w1"), mark), timeout=90, what="w1 counting new traffic"
    )
    assert cluster.stop(w1) == 0, w1.tail()
    wait_for(lambda: stable_with(admin, group, source, 2), timeout=90, what="w2+w3 assigned")
    w1_last = newer(last_offsets(multi, "w1"), mark)

    wait_for(
        lambda: taken_over_from(multi, "w1", w1_last) == set(w1_last),
        timeout=90,
        what=f"w1's partitions {sorted(w1_last)} taken over",
    )
    traffic.stop()
    produced = len(traffic.produced)

    # Nothing lost, nothing counted twice, by the group and by the single worker.
    wait_for(lambda: counted(multi) == produced, timeout=180, what=f"{produced} counted (group)")
    wait_for(lambda: counted(single) == produced, timeout=180, what=f"{produced} counted (solo)")
    assert set(by_worker(multi)) == {"w1", "w2", "w3"}
    for store in (multi, single):
        for feature in FEATURES:
            total = store.query(
                "SELECT sum(count) FROM window_counts WHERE feature = {f:String}", {"f": feature}
            ).scalar()
            assert total == produced, (store.database, feature)
        assert store.query("SELECT count() FROM inference_logs FINAL").scalar() == produced
        assert store.query("SELECT count() FROM inference_logs").scalar() == produced
    # Partition by partition (the twin topics partition keys alike), the same events counted.
    assert per_partition(multi) == per_partition(single)

    # The same window counts, and so the same drift statistics, as one worker.
    assert window_counts(multi) == window_counts(single)
    assert len(window_counts(multi)) > len(FEATURES)
    now = t0 + timedelta(seconds=produced + 60)
    assert drift_rows(multi, now) == drift_rows(single, now) != []

    # The same judge sample: the request ids on each judge-requests topic are exactly the
    # hash-sampled ones (a replayed batch may resend one; it is still the same set).
    expected = {e.request_id for e in traffic.produced if should_judge(e.request_id, JUDGE_RATE)}
    assert expected
    assert judge_request_ids(kafka_bootstrap, multi_topics.judge_requests, expected) == expected
    assert judge_request_ids(kafka_bootstrap, single_topics.judge_requests, expected) == expected

    # The survivors' /metrics: consumer lag drains to zero once offsets are committed; the
    # last flush is a wall-clock timestamp (for Prometheus' time()); no store errors.
    for w in (w2, w3):
        wait_for(
            partial(metric_is, w, "sentryml_consumer_lag", 0),
            timeout=60,
            what=f"{w.worker_id} consumer lag 0",
        )
        metrics = w.metrics()
        assert metrics["sentryml_last_flush_timestamp_seconds"] >= started, w.worker_id
        assert metrics["sentryml_store_errors_total"] == 0, w.worker_id


# -- alerting on SentryML itself ----------------------------------------------------------
ALERTS_FILE = REPO / "deploy" / "prometheus" / "alerts.yml"


def test_alert_rules_parse_and_use_only_exported_metrics() -> None:
    """deploy/prometheus/alerts.yml: valid PromQL, and every sentryml_* name is exported."""
    sources = "\n".join(
        p.read_text() for d in ("streams", "workers") for p in (REPO / d).rglob("*.py")
    )
    rules = [r for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    used: set[str] = set()
    for rule in rules:
        promql_parser.parse(rule["expr"])  # raises ValueError on a syntax error
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for metric in re.findall(r"\bsentryml_[a-z0-9_]+", rule["expr"]):
            assert f'"{metric}"' in sources, f"{rule['alert']}: no code exports {metric}"
            used.add(metric)
    # What docs/operations.md promises to alert on.
    assert {
        "sentryml_consumer_lag",
        "sentryml_dlq_events_total",
        "sentryml_store_errors_total",
        "sentryml_last_flush_timestamp_seconds",
        "sentryml_judge_dlq_total",
    } <= used
    prometheus = yaml.safe_load((ALERTS_FILE.parent / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in prometheus.get("rule_files", [])
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
