"""Worker throughput: the ingest agent vs the limits of consuming and of embedding.

All runs read the same events from the real local broker: realistic support-assistant
requests (:mod:`workers.synthetic`), produced once to a 6-partition topic. Each worker run
is the real Faust app (:func:`streams.app.create_app` with the ingest agent, default
``IngestSettings``: batches of up to 500 events, embedding batches of 64) in a thread of
this process, with its own consumer group and its own chDB database.

Pairs:

1. worker with embedding disabled (no baseline stored, so nothing is embedded or binned;
   it still validates, redacts, computes text stats and writes raw rows) vs a bare
   consumer reading the same topic: aiokafka (the client library Faust uses — the
   physical limit of consuming through it) and, for reference, confluent-kafka;
2. worker with MiniLM embedding vs raw ``SentenceTransformer.encode`` (batch size 64) on
   exactly the prompts the worker embedded (read back from ``inference_logs``);
3. faster paths vs that MiniLM worker: the model2vec backend, the prompt cache on traffic
   where a share of requests repeats an earlier prompt, and embedding a 25 % sample.

How rates are measured: a worker's rate comes from its own ``flush_log`` rows (one flush
per batch, stamped by ClickHouse): events flushed after the first flush divided by the
time from the first flush to the last, so start-up and group join are not counted. A
bare consumer is assigned all partitions (no group join) and timed from its first fetch
to its last event.

Run alone: ``python -m bench.worker`` (starts a local broker; 2-6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.common import Row, kafka_broker, kafka_settings, log, store_settings, wait_until

MODEL, ADAPTER = "support-bot", "v1"
EMBED_BATCH = 64  # IngestSettings.embed_batch_size default
OVERHEAD_TARGET = 0.9  # worker >= 90 % of raw encode (overhead <= 10 %)


@dataclass
class WorkerRun:
    """What one worker run measured."""

    label: str
    events: int
    seconds: float
    embedded: int
    flushes: int
    cpu_s_per_event: float | None
    store: Any
    group: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def extra(self) -> dict[str, Any]:
        return {
            "events_timed": self.events,
            "seconds": round(self.seconds, 2),
            "flushes": self.flushes,
            "embedded": self.embedded,
            "process_cpu_ms_per_event": None
            if self.cpu_s_per_event is None
            else round(self.cpu_s_per_event * 1000, 3),
        }


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def unique_events(n: int, seed: int) -> list[Any]:
    """``n`` support requests, no prompt twice (the generator's templates repeat some exact
    prompts; repeats are dropped so the prompt cache cannot help the runs that compare
    embedding cost)."""
    from workers.synthetic import support_records, to_inference_logs

    seen: set[str] = set()
    records: list[Any] = []
    draw = 0
    while len(records) < n:
        for r in support_records(2 * n, seed=seed + 10_000 * draw):
            if r.prompt not in seen:
                seen.add(r.prompt)
                records.append(r)
                if len(records) == n:
                    break
        draw += 1
    return to_inference_logs(records, base_model=MODEL, adapter_version=ADAPTER, seed=seed)


def repeating_events(n: int, repeat_rate: float, seed: int, window: int = 2000) -> list[Any]:
    """``n`` requests where a share ``repeat_rate`` repeats one of the last ``window`` prompts
    (templated and suggested questions, retries), the rest are fresh."""
    from workers.baseline import TrainingRecord
    from workers.synthetic import support_records, to_inference_logs

    if not 0 <= repeat_rate < 1:
        raise ValueError(f"repeat_rate must be in [0, 1), got {repeat_rate}")
    rng = random.Random(seed)
    fresh = iter(support_records(n, seed=seed + 1000))
    out: list[TrainingRecord] = []
    for _ in range(n):
        if out and rng.random() < repeat_rate:
            out.append(rng.choice(out[-window:]))
        else:
            out.append(next(fresh))
    return to_inference_logs(out, base_model=MODEL, adapter_version=ADAPTER, seed=seed)


def repeat_share(events: list[Any]) -> float:
    """Share of events whose prompt appeared earlier in the list (a perfect cache's hit rate)."""
    prompts = [e.prompt_text for e in events]
    return 1.0 - len(set(prompts)) / len(prompts)


def produce(kafka: Any, topic: str, events: list[Any]) -> None:
    from confluent_kafka import Producer

    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 20})
    for e in events:
        producer.produce(topic, e.to_bytes(), e.request_id.encode())
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} events were not delivered to {topic}")


def fit(backend: str, seed: int = 1) -> Any:
    """A k=16 baseline fitted on 600 support conversations with ``backend``'s embedder."""
    from workers.baseline import fit_baseline
    from workers.embedding import load_embedder
    from workers.synthetic import support_records

    return fit_baseline(
        support_records(600, seed=seed),
        load_embedder(backend),
        base_model=MODEL,
        adapter_version=ADAPTER,
        k=16,
        seed=0,
        progress=False,
    )


# --------------------------------------------------------------------------------------
# bare consumers
# --------------------------------------------------------------------------------------
async def _aiokafka_rate(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = 0
        t0 = time.perf_counter()
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for m in messages:
                    got += m.value is not None  # touch each record, as a worker would
        return n / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def aiokafka_rate(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    """Events/s of a bare aiokafka consumer reading ``n`` events from the start of ``topic``."""
    return asyncio.run(asyncio.wait_for(_aiokafka_rate(bootstrap, topic, partitions, n), 300))


def confluent_rate(kafka: Any, topic: str, partitions: int, n: int) -> float:
    """Events/s of a bare confluent-kafka consumer reading ``n`` events from the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"bare-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    deadline = time.monotonic() + 300
    t0 = time.perf_counter()
    try:
        while got < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare confluent consumer read {got}/{n} events")
            for m in consumer.consume(1000, timeout=1.0):
                if m.error() is None:
                    got += m.value() is not None
        return n / (time.perf_counter() - t0)
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------
# worker runs
# --------------------------------------------------------------------------------------
def _flushed(store: Any, group: str) -> tuple[int, int]:
    """``(events, flushes)`` flushed so far by consumer group ``group``."""
    row = store.query(
        "SELECT sum(events), uniqExact(flushed_at) FROM flush_log "
        "WHERE consumer_group = {g:String}",
        {"g": group},
    ).rows[0]
    return int(row[0] or 0), int(row[1] or 0)


def run_worker(
    label: str,
    kafka: Any,
    baseline: Any | None,
    *,
    stop_after: int,
    max_seconds: float = 120.0,
    sample_rate: float = 1.0,
    batch_max: int = 500,
    timeout: float = 600.0,
) -> WorkerRun:
    """Run the ingest agent until ``stop_after`` events are flushed (or ``max_seconds`` after
    its first flush, once it has 3 flushes); the rate comes from ``flush_log``."""
    from streams.app import create_app
    from streams.config import IngestSettings, WorkerSettings
    from tests.harness import running
    from workers.baseline import save_baseline
    from workers.store import open_store

    store_config = store_settings()
    store = open_store(store_config)
    store.migrate()
    if baseline is not None:
        save_baseline(store, baseline)
    group = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    settings = WorkerSettings(
        kafka=kafka,
        store=store_config,
        consumer_group=group,
        ingest=IngestSettings(embed_sample_rate=sample_rate, batch_max=batch_max),
        worker_id=f"bench-{label}",
    )
    app, _ctx = create_app(settings, store=store, agent_modules=("streams.agents.ingest",))
    # (events flushed, process CPU seconds) when the first flush was seen, and at the end
    first: list[tuple[int, float, float]] = []

    def done() -> bool:
        flushed, n_flushes = _flushed(store, group)
        if flushed and not first:
            first.append((flushed, time.process_time(), time.monotonic()))
        if flushed >= stop_after:
            return True
        return bool(first) and n_flushes >= 3 and time.monotonic() - first[0][2] > max_seconds

    with running(app):
        wait_until(
            done, timeout=timeout, what=f"{label}: {stop_after} events flushed", interval=0.25
        )
        last_events, _ = _flushed(store, group)
        cpu_end = time.process_time()
    flushes = store.query(
        "SELECT toUnixTimestamp64Milli(flushed_at) AS t, sum(events) AS n FROM flush_log "
        "WHERE consumer_group = {g:String} GROUP BY t ORDER BY t",
        {"g": group},
    ).rows
    if len(flushes) < 3:
        raise RuntimeError(f"{label}: only {len(flushes)} flushes; raise stop_after")
    seconds = (int(flushes[-1][0]) - int(flushes[0][0])) / 1000.0
    events = sum(int(n) for _, n in flushes[1:])
    embedded = int(
        store.query("SELECT count() FROM inference_logs FINAL WHERE embed_bin >= 0").scalar() or 0
    )
    cpu = None
    if first and last_events > first[0][0]:
        cpu = (cpu_end - first[0][1]) / (last_events - first[0][0])
    result = WorkerRun(label, events, seconds, embedded, len(flushes), cpu, store, group)
    log(
        f"worker {label}: {result.rate:,.1f} events/s ({events} events in {seconds:.1f}s, "
        f"{len(flushes)} flushes, {embedded} embedded)"
    )
    return result


def raw_encode_rate(texts: list[str], batch_size: int = EMBED_BATCH) -> tuple[float, float]:
    """``(prompts/s, CPU s per prompt)`` of plain ``SentenceTransformer.encode`` on ``texts``
    (the packaged MiniLM, a fresh instance)."""
    from sentence_transformers import SentenceTransformer

    from workers.embedding import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(texts) / wall, cpu / len(texts)


def stage_costs(events: list[Any]) -> dict[str, float]:
    """Single-thread µs per event of the ingest stages that do not embed, on ``events``."""
    from schemas.events import InferenceLog, decode_event
    from workers.redact import Redactor
    from workers.textstats import text_stats

    payloads = [e.to_bytes() for e in events]
    redactor = Redactor()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = [decode_event(p, InferenceLog) for p in payloads]
    out["decode_validate_us"] = (time.perf_counter() - t0) / len(events) * 1e6
    t0 = time.perf_counter()
    redacted = [redactor.redact_event(e) for e in decoded]
    out["redact_us"] = (time.perf_counter() - t0) / len(events) * 1e6
    t0 = time.perf_counter()
    for e in redacted:
        text_stats(e.completion)
    out["text_stats_us"] = (time.perf_counter() - t0) / len(events) * 1e6
    return {k: round(v, 1) for k, v in out.items()}


# --------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------
def run(
    bootstrap: str,
    *,
    n_events: int = 10_000,
    n_embed: int = 1_500,
    max_seconds: float = 45.0,
    repeat_rate: float = 0.3,
    sample_rate: float = 0.25,
    seed: int = 7,
) -> list[Row]:
    """All worker pairs; see the module docstring. Returns the result rows.

    Every run uses the shipped ingest settings (batches of up to 500 events, embedding
    batches of 64). MiniLM runs stop after ``n_embed`` events or ``max_seconds`` after
    their first flush (with 3 flushes at least), whichever is first, so that a slow,
    shared machine still finishes.
    """
    from streams.topics import Topics

    partitions = 6
    kafka = kafka_settings(bootstrap, partitions=partitions)
    topic = Topics(kafka.topic_prefix).inference_logs
    events = unique_events(n_events, seed)
    natural_repeats = repeat_share(events)
    produce(kafka, topic, events)
    log(f"worker: {n_events} events on {topic} ({natural_repeats:.1%} repeated prompts)")

    # 1. no embedding vs bare consumers
    bare_aio = aiokafka_rate(bootstrap, topic, partitions, n_events)
    bare_ck = confluent_rate(kafka, topic, partitions, n_events)
    log(f"bare consumers: aiokafka {bare_aio:,.0f}/s, confluent-kafka {bare_ck:,.0f}/s")
    plain = run_worker("no-embedding", kafka, None, stop_after=n_events)
    stages = stage_costs(events[:2000])
    log(f"ingest stages, µs/event single-threaded: {stages}")

    # 2. MiniLM vs raw encode on the prompts it embedded
    minilm = fit("minilm")
    full = run_worker("minilm", kafka, minilm, stop_after=n_embed, max_seconds=max_seconds)
    texts = [
        str(r[0])
        for r in full.store.query(
            "SELECT prompt FROM inference_logs FINAL WHERE embed_bin >= 0"
        ).rows
    ]
    raw_rate, raw_cpu = raw_encode_rate(texts)
    log(f"raw SentenceTransformer.encode: {raw_rate:,.1f} prompts/s on {len(texts)} prompts")

    # 3. faster paths
    m2v = run_worker("model2vec", kafka, fit("model2vec"), stop_after=n_events)
    sampled = run_worker(
        "minilm-sample",
        kafka,
        minilm,
        stop_after=min(n_events, int(n_embed / sample_rate)),
        sample_rate=sample_rate,
        max_seconds=max_seconds,
    )
    rep_kafka = kafka_settings(bootstrap, partitions)
    rep_events = repeating_events(int(n_embed / (1 - repeat_rate)), repeat_rate, seed)
    measured_repeats = repeat_share(rep_events)
    produce(rep_kafka, Topics(rep_kafka.topic_prefix).inference_logs, rep_events)
    cached = run_worker(
        "minilm-cache", rep_kafka, minilm, stop_after=len(rep_events), max_seconds=max_seconds
    )

    cpu_ratio = None if full.cpu_s_per_event is None else round(raw_cpu / full.cpu_s_per_event, 3)
    vs_minilm = "worker, MiniLM (PyTorch), every event embedded"
    rows = [
        Row(
            name="worker.no_embedding_vs_aiokafka",
            title="Worker events/s, embedding disabled, vs bare aiokafka consumer",
            ours=round(plain.rate),
            reference=round(bare_aio),
            unit="events/s",
            better="higher",
            n=plain.events,
            ours_label="ingest agent: validate, redact, text stats, raw rows to ClickHouse",
            reference_label="aiokafka getmany() over all partitions, same topic",
            note=(
                "single-threaded µs/event: decode+validate "
                f"{stages['decode_validate_us']}, redact {stages['redact_us']}, text stats "
                f"{stages['text_stats_us']}"
            ),
            extra={**plain.extra(), "stages": stages},
        ),
        Row(
            name="worker.no_embedding_vs_confluent",
            title="Worker events/s, embedding disabled, vs bare confluent-kafka consumer",
            ours=round(plain.rate),
            reference=round(bare_ck),
            unit="events/s",
            better="higher",
            n=plain.events,
            ours_label="as above",
            reference_label="confluent-kafka consume(1000) over all partitions",
            extra=plain.extra(),
        ),
        Row(
            name="worker.minilm_vs_raw_encode",
            title="Worker events/s, MiniLM embedding, vs raw SentenceTransformer.encode",
            ours=round(full.rate, 1),
            reference=round(raw_rate, 1),
            unit="events/s",
            better="higher",
            n=full.events,
            ours_label="ingest agent end to end, every event embedded",
            reference_label=f"encode(batch_size=64) on the same {len(texts):,} prompts",
            target_ratio=OVERHEAD_TARGET,
            target="overhead <= 10 % (ratio >= 0.9)",
            note=(
                f"by CPU time instead of wall time (less sensitive to other load): ratio "
                f"{cpu_ratio}"
                if cpu_ratio is not None
                else ""
            ),
            extra={
                **full.extra(),
                "reference_cpu_ms_per_prompt": round(raw_cpu * 1000, 3),
                "cpu_time_ratio": cpu_ratio,
            },
        ),
        Row(
            name="worker.model2vec_vs_minilm",
            title="Worker events/s, model2vec backend, vs MiniLM worker",
            ours=round(m2v.rate, 1),
            reference=round(full.rate, 1),
            unit="events/s",
            better="higher",
            n=m2v.events,
            ours_label="model2vec static embeddings distilled from the packaged MiniLM",
            reference_label=vs_minilm,
            extra=m2v.extra(),
        ),
        Row(
            name="worker.prompt_cache_vs_minilm",
            title=(
                f"Worker events/s, prompt cache, {measured_repeats:.0%} repeated prompts, "
                "vs MiniLM worker"
            ),
            ours=round(cached.rate, 1),
            reference=round(full.rate, 1),
            unit="events/s",
            better="higher",
            n=cached.events,
            ours_label=f"MiniLM + LRU cache; {measured_repeats:.0%} of requests repeat an "
            "earlier prompt",
            reference_label=f"{vs_minilm} ({natural_repeats:.1%} repeats)",
            note=(
                "the repeat share is an assumption (templates, suggested questions, "
                "retries); measure yours: SELECT 1 - uniqExact(prompt) / count() FROM "
                "inference_logs"
            ),
            extra={**cached.extra(), "repeat_share": round(measured_repeats, 4)},
        ),
        Row(
            name="worker.sampling_vs_minilm",
            title=f"Worker events/s, embedding a {sample_rate:.0%} sample, vs MiniLM worker",
            ours=round(sampled.rate, 1),
            reference=round(full.rate, 1),
            unit="events/s",
            better="higher",
            n=sampled.events,
            ours_label=f"MiniLM on a deterministic {sample_rate:.0%} of requests",
            reference_label=vs_minilm,
            extra=sampled.extra(),
        ),
    ]
    for r in (plain, full, m2v, sampled, cached):
        r.store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--embed-events", type=int, default=1_500)
    parser.add_argument("--max-seconds", type=float, default=45.0)
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        rows = run(
            bootstrap,
            n_events=args.events,
            n_embed=args.embed_events,
            max_seconds=args.max_seconds,
        )
        for row in rows:
            print(row.to_dict())


if __name__ == "__main__":
    main()
