"""What the ingest agent does to one batch of raw inference-log messages, without Kafka.

A batch is a list of :class:`RawRecord` (bytes plus their topic/partition/offset). The
:class:`IngestProcessor` validates each record, redacts PII, embeds prompts (batched),
assigns every feature's bin against the model's baseline, and accumulates per-minute
partial counts *per source partition*. :meth:`IngestProcessor.flush` then writes

1. the redacted raw rows to ``inference_logs`` (ReplacingMergeTree by request_id), and
2. one ``flush_log`` row per source partition carrying that partition's counts and the
   offsets they cover; a materialized view moves the counts into ``window_counts`` within
   the same insert.

Exactly-once counting: the ``flush_log`` insert carries a deterministic dedup token
(group, topic, partition, first/last offset), so a retried flush is not counted twice; and
before counting, records at or below the highest offset already flushed for their
partition are skipped, so a batch replayed after a crash (flushed, not yet committed) is
not counted twice either, whatever its new boundaries. Offsets are acked by the agent only
after :meth:`flush` returned.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from schemas.events import InferenceLog, decode_event
from schemas.exceptions import InvalidEvent
from workers.baseline import Baseline, load_baseline
from workers.embedding import Embedder, load_embedder, sample_for_embedding
from workers.redact import Redactor
from workers.store import Store
from workers.textstats import text_stats

log = logging.getLogger(__name__)

CountKey = tuple[
    str, str, str, str, datetime, int
]  # model, adapter, baseline, feature, bucket, bin


@dataclass(frozen=True)
class RawRecord:
    """One Kafka message as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Rejected:
    """A record that goes to the DLQ, with the reason."""

    record: RawRecord
    reason: str
    error: str


@dataclass
class BatchResult:
    """What one batch produced: DLQ entries, judge candidates, rows and counts to flush."""

    rejected: list[Rejected] = field(default_factory=list)
    accepted: list[InferenceLog] = field(default_factory=list)
    skipped: int = 0
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    # (topic, partition) -> (first offset, last offset, events, Counter of CountKey)
    partitions: dict[tuple[str, int], tuple[int, int, int, Counter[CountKey]]] = field(
        default_factory=dict
    )


def minute_bucket(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def inference_log_row(event: InferenceLog, *, embed_bin: int, refusal: bool) -> dict[str, Any]:
    """The ``inference_logs`` row for an (already redacted) event."""
    return {
        "request_id": event.request_id,
        "ts": event.ts,
        "base_model": event.base_model,
        "adapter_version": event.adapter_version,
        "app": event.app or "",
        "tenant": event.tenant or "",
        "prompt": event.prompt_text,
        "completion": event.completion,
        "prompt_tokens": event.prompt_tokens or 0,
        "completion_tokens": event.completion_tokens or 0,
        "latency_ms": event.latency_ms or 0.0,
        "metadata": event.to_row()["metadata"],
        "embed_bin": embed_bin,
        "refusal": int(refusal),
    }


class BaselineCache:
    """The baseline for each (base_model, adapter), read from the store, refreshed periodically."""

    def __init__(
        self, store: Store, refresh_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Baseline | None]] = {}
        self._warned: set[tuple[str, str]] = set()

    def get(self, base_model: str, adapter_version: str) -> Baseline | None:
        key = (base_model, adapter_version)
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        baseline = load_baseline(self.store, base_model, adapter_version)
        self._cache[key] = (now, baseline)
        if baseline is None and key not in self._warned:
            self._warned.add(key)
            log.warning(
                "no baseline for base_model=%s adapter=%s: raw logs are stored but drift is "
                "not measured; run `sentryml baseline fit`",
                base_model,
                adapter_version,
            )
        return baseline


class IngestProcessor:
    """Turns raw batches into DLQ entries, raw rows and partial counts; flushes them."""

    def __init__(
        self,
        store: Store,
        *,
        consumer_group: str,
        worker_id: str,
        redactor: Redactor | None = None,
        max_event_bytes: int = 1_048_576,
        embed_sample_rate: float = 1.0,
        embed_batch_size: int = 64,
        embedder_factory: Callable[[str], Embedder] = load_embedder,
        baselines: BaselineCache | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not 0.0 < embed_sample_rate <= 1.0:
            raise ValueError(f"embed_sample_rate must be in (0, 1], got {embed_sample_rate}")
        self.store = store
        self.consumer_group = consumer_group
        self.worker_id = worker_id
        self.redactor = redactor or Redactor()
        self.max_event_bytes = max_event_bytes
        self.embed_sample_rate = embed_sample_rate
        self.embed_batch_size = embed_batch_size
        self._embedder_factory = embedder_factory
        self._embedders: dict[str, Embedder] = {}
        self.baselines = baselines or BaselineCache(store)
        self._now = now

    # -- processing -------------------------------------------------------------------
    def flushed_upto(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Highest offset already counted per partition (from ``flush_log``)."""
        if not partitions:
            return {}
        result = self.store.query(
            "SELECT partition, max(last_offset) FROM flush_log "
            "WHERE consumer_group = {g:String} AND topic = {t:String} "
            "AND partition IN {ps:Array(UInt32)} GROUP BY partition",
            {"g": self.consumer_group, "t": topic, "ps": sorted(set(partitions))},
        )
        return {int(p): int(o) for p, o in result.rows}

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Validate, featurize and count one batch (CPU work; run it off the event loop)."""
        result = BatchResult()
        done: dict[tuple[str, int], int] = {}
        for topic in {r.topic for r in records}:
            parts = [r.partition for r in records if r.topic == topic]
            for p, off in self.flushed_upto(topic, parts).items():
                done[(topic, p)] = off
        fresh: list[tuple[RawRecord, InferenceLog]] = []
        for record in records:
            self._touch_partition(result, record)
            if record.offset <= done.get((record.topic, record.partition), -1):
                result.skipped += 1  # counted by an earlier flush (replay after a crash)
                continue
            try:
                event = decode_event(record.value, InferenceLog, max_bytes=self.max_event_bytes)
                fresh.append((record, self.redactor.redact_event(event)))
            except InvalidEvent as exc:
                result.rejected.append(Rejected(record, exc.reason, str(exc)))
            except Exception as exc:  # a bug must not lose the event: it goes to the DLQ
                log.exception("processing failed at %s", record.coordinates)
                result.rejected.append(Rejected(record, "processing_error", repr(exc)))
        try:
            bins = self._embedding_bins([e for _, e in fresh])
        except Exception as exc:
            log.exception("embedding failed for a batch of %d events", len(fresh))
            result.rejected.extend(Rejected(r, "embedding_error", repr(exc)) for r, _ in fresh)
            return result
        for (record, event), embed_bin in zip(fresh, bins, strict=True):
            try:
                self._count(result, record, event, embed_bin)
            except Exception as exc:
                log.exception("feature extraction failed at %s", record.coordinates)
                result.rejected.append(Rejected(record, "processing_error", repr(exc)))
        return result

    def _touch_partition(self, result: BatchResult, record: RawRecord) -> None:
        key = (record.topic, record.partition)
        first, last, n, counts = result.partitions.get(
            key, (record.offset, record.offset, 0, Counter())
        )
        result.partitions[key] = (min(first, record.offset), max(last, record.offset), n, counts)

    def _embedder(self, name: str) -> Embedder:
        if name not in self._embedders:
            self._embedders[name] = self._embedder_factory(name)
        return self._embedders[name]

    def _embedding_bins(self, events: Sequence[InferenceLog]) -> list[int]:
        """Nearest-centroid bin per event (-1: no baseline, or not in the embedding sample)."""
        bins = [-1] * len(events)
        groups: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            baseline = self.baselines.get(event.base_model, event.adapter_version)
            if baseline is None or not sample_for_embedding(
                event.request_id, self.embed_sample_rate
            ):
                continue
            groups.setdefault(baseline.baseline_id, []).append(i)
        for indices in groups.values():
            first = events[indices[0]]
            baseline = self.baselines.get(first.base_model, first.adapter_version)
            assert baseline is not None
            vectors = self._embedder(baseline.embedder).encode(
                [events[i].prompt_text for i in indices], batch_size=self.embed_batch_size
            )
            for i, b in zip(indices, baseline.assign_embeddings(vectors), strict=True):
                bins[i] = int(b)
        return bins

    def _count(
        self, result: BatchResult, record: RawRecord, event: InferenceLog, embed_bin: int
    ) -> None:
        # Baselines measure length in simple tokens; model token counts would read as drift.
        stats = text_stats(event.completion)
        baseline = self.baselines.get(event.base_model, event.adapter_version)
        key = (record.topic, record.partition)
        first, last, n, counts = result.partitions[key]
        if baseline is not None:
            bucket = minute_bucket(event.ts)
            prefix = (event.base_model, event.adapter_version, baseline.baseline_id)
            if embed_bin >= 0:
                counts[(*prefix, "embedding", bucket, embed_bin)] += 1
            values = {
                "output_length": float(stats.length),
                "ttr": stats.ttr,
                "distinct2": stats.distinct2,
                "refusal": float(stats.refusal),
            }
            for feature, value in values.items():
                fb = baseline.features.get(feature)
                if fb is not None:
                    b = int(fb.assign(np.asarray([value]))[0])
                    counts[(*prefix, feature, bucket, b)] += 1
        result.partitions[key] = (first, last, n + 1, counts)
        result.accepted.append(event)
        result.log_rows.append(inference_log_row(event, embed_bin=embed_bin, refusal=stats.refusal))

    # -- flushing ---------------------------------------------------------------------
    def flush(self, result: BatchResult) -> None:
        """Write the batch's raw rows and counts; safe to call again with the same batch."""
        if not result.partitions:
            return
        token_base = "|".join(
            f"{t}:{p}:{first}-{last}"
            for (t, p), (first, last, _, _) in sorted(result.partitions.items())
        )
        digest = hashlib.sha256(f"{self.consumer_group}|{token_base}".encode()).hexdigest()[:32]
        if result.log_rows:
            self.store.insert("inference_logs", result.log_rows, dedup_token=f"logs-{digest}")
        rows = []
        for (topic, partition), (first, last, n, counts) in sorted(result.partitions.items()):
            keys = sorted(counts)
            rows.append(
                {
                    "consumer_group": self.consumer_group,
                    "topic": topic,
                    "partition": partition,
                    "first_offset": first,
                    "last_offset": last,
                    "worker_id": self.worker_id,
                    "events": n,
                    "counts.base_model": [k[0] for k in keys],
                    "counts.adapter_version": [k[1] for k in keys],
                    "counts.baseline_id": [k[2] for k in keys],
                    "counts.feature": [k[3] for k in keys],
                    "counts.bucket": [k[4] for k in keys],
                    "counts.bin": [k[5] for k in keys],
                    "counts.count": [counts[k] for k in keys],
                }
            )
        self.store.insert("flush_log", rows, dedup_token=f"flush-{digest}")
