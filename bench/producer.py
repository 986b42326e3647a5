"""Producer SDK ``InferenceLogger.log()`` vs raw confluent-kafka ``produce`` of the same bytes.

Both sides use the same librdkafka settings the SDK uses (idempotent, acks=all, lz4,
``linger.ms`` 50) against the same real local broker and topic, and send the same events:
realistic support-assistant requests (:mod:`workers.synthetic`).

- ours, ``log(**fields)``: what an inference service calls — checks the fields and encodes
  them as an :class:`~schemas.events.InferenceLog` (:mod:`schemas.wire`), checks the size,
  enqueues it;
- ours, ``log(event)``: the same with an event the caller already built;
- reference: ``Producer.produce(topic, payload, key)`` + ``poll(0)`` with the payload
  bytes serialized beforehand — the least any Python producer can do per event;
- ceiling: a ``(**fields)`` function that only looks up the bytes encoded beforehand and
  produces them — what the call shape alone costs, so the best ratio any checked encoder
  behind ``log(**fields)`` could reach.

Throughput is calls per second while enqueuing (the call is all the service pays; the
broker's delivery rate is the same for both and is checked, not timed). Call latency is
measured per call with ``perf_counter_ns``. The sides alternate in rounds so that load
changes on a shared machine hit both.

Run alone: ``python -m bench.producer [--events 50000]`` (starts a local broker).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import Row, kafka_broker, kafka_settings, log, percentile

P99_TARGET_US = 50.0
RATIO_TARGET = 0.5


def _events(n: int, seed: int) -> list[Any]:
    from workers.synthetic import support_records, to_inference_logs

    records = support_records(n, seed=seed)
    return to_inference_logs(records, base_model="support-bot", adapter_version="v1", seed=seed)


def _time_calls(calls: Callable[[int], object], indices: range) -> np.ndarray:
    """Nanoseconds of each call ``calls(i)`` for ``i`` in ``indices``."""
    out = np.empty(len(indices), dtype=np.int64)
    clock = time.perf_counter_ns
    for j, i in enumerate(indices):
        t0 = clock()
        calls(i)
        out[j] = clock() - t0
    return out


def run(bootstrap: str, n_events: int = 50_000, rounds: int = 4, seed: int = 0) -> list[Row]:
    """Measure both sides on ``n_events`` events each; return throughput and latency rows."""
    from confluent_kafka import Producer

    from schemas.topics import Topics
    from streams.config import ProducerSettings
    from streams.producer import InferenceLogger

    if n_events < rounds:
        raise ValueError(f"n_events must be >= rounds ({rounds}), got {n_events}")
    kafka = kafka_settings(bootstrap, partitions=6)
    settings = ProducerSettings(kafka=kafka)
    topic = Topics(kafka.topic_prefix).inference_logs
    events = _events(n_events, seed)
    fields = [e.model_dump(exclude={"type"}) for e in events]
    payloads = [e.to_bytes() for e in events]
    keys = [e.request_id.encode() for e in events]
    mean_bytes = float(np.mean([len(p) for p in payloads]))

    logger = InferenceLogger(settings, strict=True)
    # The same librdkafka settings as InferenceLogger (streams/producer.py).
    raw = Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": settings.linger_ms,
            "queue.buffering.max.messages": settings.queue_max_messages,
            "message.max.bytes": max(settings.max_event_bytes + 4096, 1_000_000),
        }
    )

    def raw_call(i: int) -> None:
        raw.produce(topic, payloads[i], keys[i])
        raw.poll(0)

    def sdk_fields(i: int) -> None:
        logger.log(**fields[i])

    def sdk_event(i: int) -> None:
        logger.log(events[i])

    encoded = dict(zip([e.request_id for e in events], payloads, strict=True))

    def no_checks(**kw: Any) -> None:
        raw.produce(topic, encoded[kw["request_id"]], kw["request_id"])
        raw.poll(0)

    def ceiling(i: int) -> None:
        no_checks(**fields[i])

    sides: dict[str, Callable[[int], None]] = {
        "raw": raw_call,
        "fields": sdk_fields,
        "event": sdk_event,
        "ceiling": ceiling,
    }
    for call in sides.values():  # warm-up: connections, metadata, code paths
        for i in range(min(500, n_events)):
            call(i)
    raw.flush(30)
    logger.flush(30)
    timings: dict[str, list[np.ndarray]] = {k: [] for k in sides}
    wall: dict[str, float] = dict.fromkeys(sides, 0.0)
    chunk = n_events // rounds
    # The inputs above are several hundred thousand live objects that a service would not
    # hold; freeze them so the collector's passes over them do not land in the SDK's calls.
    gc.collect()
    gc.freeze()
    for r in range(rounds):
        indices = range(r * chunk, (r + 1) * chunk)
        for name, call in sides.items():
            t0 = time.perf_counter()
            timings[name].append(_time_calls(call, indices))
            wall[name] += time.perf_counter() - t0
            # drain between sides so one side's deliveries do not load the other's calls
            if name in ("raw", "ceiling"):
                raw.flush(30)
            else:
                logger.flush(30)
    # Where the SDK's time goes: its checked encoding of the fields (schemas/wire.py),
    # and what building the pydantic model and dumping it would cost instead.
    from schemas.events import InferenceLog
    from schemas.wire import encode_inference_log

    part_ns = {
        "encode": _time_calls(lambda i: encode_inference_log(fields[i]), range(chunk)),
        "build": _time_calls(lambda i: InferenceLog(**fields[i]), range(chunk)),
        "serialize": _time_calls(lambda i: events[i].to_bytes(), range(chunk)),
    }
    parts = {k: percentile(v / 1000.0, 50) for k, v in part_ns.items()}
    gc.unfreeze()
    left_raw = raw.flush(30)
    left_sdk = logger.flush(30)
    stats = logger.stats
    n_each = chunk * rounds
    if left_raw or left_sdk or stats.dropped or stats.failed or stats.invalid:
        raise RuntimeError(
            f"producer benchmark lost events: raw left {left_raw}, sdk left {left_sdk}, "
            f"sdk stats {stats}"
        )
    rate = {k: n_each / wall[k] for k in sides}
    us = {k: np.concatenate(v) / 1000.0 for k, v in timings.items()}
    p50 = {k: percentile(v, 50) for k, v in us.items()}
    p99 = {k: percentile(v, 99) for k, v in us.items()}
    log(
        "producer: "
        + ", ".join(f"{k} {rate[k]:,.0f}/s p50 {p50[k]:.1f}µs p99 {p99[k]:.1f}µs" for k in sides)
    )
    ref_label = "confluent-kafka produce() + poll(0), same bytes and settings"
    common: dict[str, Any] = {
        "n": n_each,
        "reference_label": ref_label,
        "extra": {
            "mean_event_bytes": round(mean_bytes, 1),
            "rounds": rounds,
            "p50_us_encode_fields": round(parts["encode"], 2),
            "p50_us_pydantic_build_event": round(parts["build"], 2),
            "p50_us_pydantic_serialize_event": round(parts["serialize"], 2),
            "p50_us_log_event": round(p50["event"], 2),
            "p99_us_log_event": round(p99["event"], 2),
        },
    }
    return [
        Row(
            name="producer.throughput",
            title="Producer SDK log(**fields) throughput",
            ours=round(rate["fields"]),
            reference=round(rate["raw"]),
            unit="calls/s",
            better="higher",
            ours_label="InferenceLogger.log(**fields): validate, serialize, enqueue",
            target_ratio=RATIO_TARGET,
            note=(
                f"p50 per call: checked encoding of the fields {parts['encode']:.1f} µs "
                f"(pydantic would take {parts['build']:.1f} µs to build the model + "
                f"{parts['serialize']:.1f} µs to dump it), produce+poll {p50['raw']:.1f} µs"
            ),
            **common,
        ),
        Row(
            name="producer.throughput_prebuilt_event",
            title="Producer SDK log(event) throughput (event built by the caller)",
            ours=round(rate["event"]),
            reference=round(rate["raw"]),
            unit="calls/s",
            better="higher",
            ours_label="InferenceLogger.log(event): serialize, enqueue",
            target_ratio=RATIO_TARGET,
            **common,
        ),
        Row(
            name="producer.throughput_ceiling",
            title="log(**fields) call shape with no checks or encoding (the ceiling)",
            ours=round(rate["ceiling"]),
            reference=round(rate["raw"]),
            unit="calls/s",
            better="higher",
            ours_label="f(**fields): look up bytes encoded beforehand, produce + poll(0)",
            note=(
                "no checked encoder behind log(**fields) can beat this ratio: it is the "
                "keyword call alone on top of produce()"
            ),
            **common,
        ),
        Row(
            name="producer.call_p50",
            title="Producer SDK log(**fields) call latency p50",
            ours=round(p50["fields"], 2),
            reference=round(p50["raw"], 2),
            unit="µs",
            better="lower",
            ours_label="log(**fields)",
            **common,
        ),
        Row(
            name="producer.call_p99",
            title="Producer SDK log(**fields) call latency p99",
            ours=round(p99["fields"], 2),
            reference=round(p99["raw"], 2),
            unit="µs",
            better="lower",
            ours_label="log(**fields)",
            target=f"ours < {P99_TARGET_US:g} µs",
            meets_target=p99["fields"] < P99_TARGET_US,
            note=f"log(event) p99 {p99['event']:.1f} µs, p50 {p50['event']:.1f} µs",
            **common,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        for row in run(bootstrap, args.events):
            print(row.to_dict())


if __name__ == "__main__":
    main()
