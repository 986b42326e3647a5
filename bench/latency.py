"""End-to-end latency: produce → counted in ClickHouse, and drift onset → alert on the topic.

The real worker (:func:`streams.app.create_app` with the ingest agent and the drift
evaluator, default batching: up to 500 events or 2 s) runs in a thread of this process
against the real local broker and its own chDB database. An inference service
(:class:`streams.producer.InferenceLogger`) logs support-assistant requests at a steady
rate, recording the wall-clock time just before each ``log()`` call.

**Counted latency** (method): a bare confluent-kafka consumer on the same topic records
where each request landed (partition, offset) and when it could first be read — that is
the reference, the latency of Kafka itself. The worker's ``flush_log`` rows say which
offsets each flush covered and when ClickHouse stamped the insert that made them count
(``flushed_at``, the same clock). An event's counted latency is the ``flushed_at`` of the
flush covering its offset minus its produce time.

**Alert latency**: after the steady phase the traffic switches to questions from other
domains (cooking, legal, medical, travel) with the drift evaluator running every second;
the latency is from the first drifted request's ``log()`` to the embedding-drift alert
arriving on the alerts topic. It depends on how fast drifted traffic outweighs the
window's earlier traffic, so it is reported with the drifted events it took.

The embedder is model2vec by default: MiniLM on a 2-core shared machine embeds fewer
prompts per second than the 50 events/s offered, and a backlogged worker measures its
backlog, not the pipeline.

Run alone: ``python -m bench.latency [--rate 50 --seconds 60]`` (starts a local broker).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.common import Row, kafka_broker, kafka_settings, log, percentile, store_settings
from bench.common import wait_until as _wait

MODEL, ADAPTER = "support-bot", "v1"


@dataclass
class TopicWatcher:
    """A bare consumer thread on one topic: what arrived, where, and when."""

    kafka: Any
    topic: str
    partitions: int
    seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    values: list[tuple[float, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TopicWatcher:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)]
        )

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    for m in consumer.consume(500, timeout=0.05):
                        now = time.time()
                        if m.error() is not None:
                            continue
                        key = (m.key() or b"").decode()
                        self.seen[key] = (m.partition() or 0, m.offset() or 0, now)
                        self.values.append((now, m.value() or b""))
            finally:
                consumer.close()

        self._thread = threading.Thread(target=loop, name=f"watch-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _pace(rate: float, n: int, send: Any) -> list[float]:
    """Call ``send(i)`` ``n`` times at ``rate`` per second; return each call's start time."""
    times: list[float] = []
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        times.append(time.time())
        send(i)
    return times


def run(
    bootstrap: str,
    *,
    rate: float = 50.0,
    seconds: float = 60.0,
    backend: str = "model2vec",
    alert_timeout: float = 120.0,
    seed: int = 11,
) -> list[Row]:
    """Counted latency (p50/p99) at ``rate`` for ``seconds``, then alert latency."""
    from bench.worker import fit
    from schemas.topics import Topics
    from streams.app import create_app
    from streams.config import JudgeSettings, ProducerSettings, WorkerSettings
    from streams.producer import InferenceLogger
    from tests.harness import running
    from workers.baseline import save_baseline
    from workers.drift import DriftSettings
    from workers.store import open_store
    from workers.synthetic import domain_prompts, support_records

    partitions = 6
    kafka = kafka_settings(bootstrap, partitions=partitions)
    topics = Topics(kafka.topic_prefix)
    config = store_settings()
    store = open_store(config)
    store.migrate()
    save_baseline(store, fit(backend))
    group = f"bench-latency-{uuid.uuid4().hex[:6]}"
    settings = WorkerSettings(
        kafka=kafka,
        store=config,
        consumer_group=group,
        drift=DriftSettings(interval_s=1.0),
        judge=JudgeSettings(enabled=False),  # ingest and drift alone: no judge sample
        worker_id="bench-latency",
    )
    app, _ctx = create_app(
        settings, store=store, agent_modules=("streams.agents.ingest", "streams.agents.drift")
    )
    n_steady = int(rate * seconds)
    steady = support_records(n_steady + 200, seed=seed)
    answers = [r.completion for r in steady]
    drifted = [
        p
        for d in ("cooking", "legal", "medical", "travel")
        for p in domain_prompts(d, int(rate * alert_timeout / 4) + 1, seed=seed)
    ]
    random.Random(seed).shuffle(drifted)
    ids = [f"lat-{uuid.uuid4().hex}" for _ in range(len(steady) + len(drifted))]
    logger = InferenceLogger(ProducerSettings(kafka=kafka), strict=True)

    def log_support(i: int) -> None:
        r = steady[i]
        logger.log(
            request_id=ids[i],
            ts=datetime.now(UTC),
            base_model=MODEL,
            adapter_version=ADAPTER,
            prompt=r.prompt,
            completion=r.completion,
        )

    def log_drifted(j: int) -> None:
        logger.log(
            request_id=ids[len(steady) + j],
            ts=datetime.now(UTC),
            base_model=MODEL,
            adapter_version=ADAPTER,
            prompt=drifted[j],
            completion=answers[j % len(answers)],  # outputs unchanged: input drift only
        )

    def counted() -> int:
        value = store.query(
            "SELECT sum(events) FROM flush_log WHERE consumer_group = {g:String}", {"g": group}
        ).scalar()
        return int(value or 0)

    source = TopicWatcher(kafka, topics.inference_logs, partitions).start()
    alerts = TopicWatcher(kafka, topics.alerts, partitions).start()
    try:
        with running(app):
            # Warm-up (not measured): the group has joined and a first batch was flushed.
            warm = 200
            _pace(rate, warm, lambda i: log_support(n_steady + i))
            logger.flush(30)
            _wait(lambda: counted() >= warm, 180, "warm-up events counted", 0.2)
            log(f"latency: steady phase, {n_steady} events at {rate:g}/s")
            produced = _pace(rate, n_steady, log_support)
            logger.flush(30)
            _wait(lambda: counted() >= warm + n_steady, 180, "steady events counted", 0.2)
            alerts_before = len(alerts.values)
            log("latency: drift onset")
            onset: list[float] = []  # produce time of each drifted event

            def send_drifted(j: int) -> None:
                onset.append(time.time())
                log_drifted(j)

            def alerted() -> bool:
                return any(
                    json.loads(v).get("kind") == "embedding_drift"
                    for _, v in alerts.values[alerts_before:]
                )

            stop = threading.Event()
            producer_thread = threading.Thread(
                target=lambda: _pace_until(rate, len(drifted), send_drifted, stop), daemon=True
            )
            producer_thread.start()
            try:
                _wait(alerted, alert_timeout, "an embedding-drift alert", 0.05)
                alert_error = None
            except TimeoutError as exc:
                alert_error = str(exc)
            stop.set()
            producer_thread.join(10)
            logger.flush(30)
    finally:
        source.stop()
        alerts.stop()
    flushes = store.query(
        "SELECT partition, first_offset, last_offset, "
        "toUnixTimestamp64Milli(flushed_at) / 1000.0 AS t FROM flush_log "
        "WHERE consumer_group = {g:String} ORDER BY t",
        {"g": group},
    ).rows
    counted_lat, kafka_lat = [], []
    for i, t_produced in enumerate(produced):
        where = source.seen.get(ids[i])
        if where is None:
            continue
        p, off, t_seen = where
        t_counted = next(
            (float(t) for part, lo, hi, t in flushes if part == p and lo <= off <= hi), None
        )
        if t_counted is not None:
            counted_lat.append(t_counted - t_produced)
            kafka_lat.append(t_seen - t_produced)
    if len(counted_lat) < 0.95 * n_steady:
        raise RuntimeError(f"latency: only {len(counted_lat)}/{n_steady} steady events matched")
    ms = {
        "counted": np.asarray(counted_lat) * 1000,
        "kafka": np.asarray(kafka_lat) * 1000,
    }
    p50 = {k: percentile(v, 50) for k, v in ms.items()}
    p99 = {k: percentile(v, 99) for k, v in ms.items()}
    log(
        f"latency: counted p50 {p50['counted']:.0f} ms p99 {p99['counted']:.0f} ms; "
        f"kafka p50 {p50['kafka']:.1f} ms p99 {p99['kafka']:.1f} ms"
    )
    first_alert = next(
        (
            (t, json.loads(v))
            for t, v in alerts.values[alerts_before:]
            if json.loads(v).get("kind") == "embedding_drift"
        ),
        None,
    )
    alert_s = None if first_alert is None or not onset else first_alert[0] - onset[0]
    alert_info: dict[str, Any] = {"false_alarms_before_onset": alerts_before}
    if first_alert is not None and onset:
        alert = first_alert[1]
        alert_info.update(
            {
                "window": alert.get("window"),
                "psi": alert.get("value"),
                "p_value": alert.get("p_value"),
                "window_sample_size": alert.get("sample_size"),
                "drifted_events_produced_before_alert": sum(1 for t in onset if t < first_alert[0]),
            }
        )
    log(f"latency: alert after {alert_s} s ({alert_info})")
    common = {
        "n": len(counted_lat),
        "extra": {
            "rate_per_s": rate,
            "seconds": seconds,
            "embedder": backend,
            "batch": "take(500, within=2 s)",
        },
    }
    label = f"produce → flush_log insert covering the offset, {backend} embedding"
    ref = "produce → readable by a bare consumer (Kafka's own latency)"
    rows = [
        Row(
            name="latency.counted_p50",
            title=f"End-to-end latency p50, produce → counted in ClickHouse, {rate:g} ev/s",
            ours=round(p50["counted"], 1),
            reference=round(p50["kafka"], 1),
            unit="ms",
            better="lower",
            ours_label=label,
            reference_label=ref,
            note="dominated by batching: a batch closes at 500 events or 2 s",
            **common,  # type: ignore[arg-type]
        ),
        Row(
            name="latency.counted_p99",
            title=f"End-to-end latency p99, produce → counted in ClickHouse, {rate:g} ev/s",
            ours=round(p99["counted"], 1),
            reference=round(p99["kafka"], 1),
            unit="ms",
            better="lower",
            ours_label=label,
            reference_label=ref,
            **common,  # type: ignore[arg-type]
        ),
        Row(
            name="latency.drift_alert",
            title="Alert latency after a planted drift onset (other-domain prompts)",
            ours=None if alert_s is None else round(alert_s, 2),
            reference=None,
            unit="s",
            n=int(alert_info.get("drifted_events_produced_before_alert") or 0),
            better="lower",
            ours_label="first drifted log() → embedding_drift alert read from the alerts topic",
            reference_label="",
            note=(
                alert_error
                or f"evaluator every 1 s; the alert needs the drifted share of the window to "
                f"grow: {alert_info.get('drifted_events_produced_before_alert')} drifted "
                f"events at {rate:g}/s after {n_steady + warm} in-distribution ones "
                f"(window n={alert_info.get('window_sample_size')}, "
                f"PSI {float(alert_info.get('psi') or 0):.3f})"
            ),
            extra={**common["extra"], **alert_info},  # type: ignore[dict-item]
        ),
    ]
    store.close()
    return rows


def _pace_until(rate: float, n: int, send: Any, stop: threading.Event) -> None:
    start = time.monotonic()
    for i in range(n):
        if stop.is_set():
            return
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--embedder", default="model2vec", choices=["model2vec", "minilm"])
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        for row in run(bootstrap, rate=args.rate, seconds=args.seconds, backend=args.embedder):
            print(row.to_dict())


if __name__ == "__main__":
    main()
