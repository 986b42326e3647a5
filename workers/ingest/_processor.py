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
before counting, records inside an offset range already flushed for their partition are
skipped, so a batch replayed after a crash (flushed, not yet committed) is not counted
twice either, whatever its new boundaries. Only the ranges actually flushed are skipped:
an offset in a gap between two flushes (a batch that was never flushed) is counted. Offsets are acked by the agent only
after :meth:`flush` returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from schemas.events import InferenceLog, decode_event, utcnow
from schemas.exceptions import InvalidEvent
from workers.baseline import Baseline, load_baseline
from workers.dlq import RawRecord, Rejected, redact_rejected
from workers.embedding import Embedder, load_embedder, sample_for_embedding
from workers.redact import Redactor
from workers.stats import text_stats
from workers.store import Store
from workers.store.exceptions import QueryFailed, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

CountKey = tuple[
    str, str, str, str, datetime, int
]  # model, adapter, baseline, feature, bucket, bin


#: How old an event may be and still be stored: the shortest TTL on event time among the
#: tables an event is written to (``inference_logs``: ``ts`` + 30 days; ``window_counts``:
#: ``bucket`` + 90 days, schemas/migrations/0001_init.sql). An older event would be counted
#: in ``flush_log`` and then dropped by the TTL, so it goes to the DLQ as ``expired``.
EVENT_RETENTION = timedelta(days=30)

#: The earliest time ``window_counts.bucket`` (``DateTime``, seconds since 1970) can hold;
#: an earlier one makes the whole insert fail, so it is rejected whatever the retention.
EARLIEST_STORABLE = datetime(1970, 1, 1, tzinfo=UTC)


class PartitionSpan(NamedTuple):
    """One partition's part of a batch: its ``flush_log`` row (offsets, events, counts)."""

    first: int  # first offset
    last: int  # last offset
    events: int
    counts: Counter[CountKey]


#: (topic, partition) -> that partition's span of the batch
PartitionCounts = dict[tuple[str, int], PartitionSpan]


@dataclass(frozen=True)
class Counted:
    """One counted event: where it came from, its ``inference_logs`` row, its count keys."""

    record: RawRecord
    row: dict[str, Any]
    keys: tuple[CountKey, ...]


@dataclass
class BatchResult:
    """What one batch produced: DLQ entries, judge candidates, rows and counts to flush."""

    rejected: list[Rejected] = field(default_factory=list)
    accepted: list[InferenceLog] = field(default_factory=list)
    skipped: int = 0
    expired: int = 0  # rejected as older than the retention (also in ``rejected``)
    embed_seconds: float = 0.0  # embedding and binning the batch's prompts
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    partitions: PartitionCounts = field(default_factory=dict)
    counted: list[Counted] = field(default_factory=list)  # what log_rows and counts hold
    epochs: dict[str, str] = field(default_factory=dict)  # topic -> its Kafka topic id


def minute_bucket(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def inference_log_row(
    event: InferenceLog, *, embed_bin: int, refusal: bool, novelty_bin: int = -1
) -> dict[str, Any]:
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
        "metadata": json.dumps(event.metadata, sort_keys=True),  # as Event.to_row writes it
        "embed_bin": embed_bin,
        "novelty_bin": novelty_bin,
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


#: Maps one record of a non-native topic to its events and its rejections (never raises
#: for bad input): e.g. ``workers.otlp.decode_otlp`` for the Collector's OTLP topics.
RecordDecoder = Callable[[RawRecord], tuple[list[InferenceLog], list[Rejected]]]


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
        now: Callable[[], datetime] = utcnow,
        max_event_age: timedelta = EVENT_RETENTION,
        topic_epoch: Callable[[str], str] | None = None,
        decoders: Mapping[str, RecordDecoder] | None = None,
    ) -> None:
        if not 0.0 < embed_sample_rate <= 1.0:
            raise ValueError(f"embed_sample_rate must be in (0, 1], got {embed_sample_rate}")
        if max_event_age <= timedelta(0):
            raise ValueError(f"max_event_age must be positive, got {max_event_age}")
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
        self.max_event_age = max_event_age
        # The id Kafka gave a topic at creation ("": unknown), so that a re-created topic's
        # offsets are not taken for the old one's (streams.topics.TopicEpochs).
        self.topic_epoch = topic_epoch or (lambda topic: "")
        # Topics whose records are not one InferenceLog each (OTLP from the Collector):
        # their decoder maps a record to its events; offsets, replay and counting stay ours.
        self.decoders = dict(decoders or {})

    # -- processing -------------------------------------------------------------------
    def flushed_ranges(
        self, topic: str, records: Sequence[RawRecord], epoch: str = ""
    ) -> dict[int, list[tuple[int, int]]]:
        """Offset ranges already counted (``flush_log``) per partition, among those that
        overlap the offsets of ``records`` (of ``topic``, in its incarnation ``epoch``;
        rows written before topic ids were recorded match any)."""
        if not records:
            return {}
        result = self.store.query(
            "SELECT partition, first_offset, last_offset FROM flush_log "
            "WHERE consumer_group = {g:String} AND topic = {t:String} "
            "AND topic_id IN ({e:String}, '') AND partition IN {ps:Array(UInt32)} "
            "AND last_offset >= {lo:UInt64} AND first_offset <= {hi:UInt64}",
            {
                "g": self.consumer_group,
                "t": topic,
                "e": epoch,
                "ps": sorted({r.partition for r in records}),
                "lo": min(r.offset for r in records),
                "hi": max(r.offset for r in records),
            },
        )
        ranges: dict[int, list[tuple[int, int]]] = {}
        for p, first, last in result.rows:
            ranges.setdefault(int(p), []).append((int(first), int(last)))
        return ranges

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Validate, featurize and count one batch (CPU work; run it off the event loop).

        Bad input and bugs (an exception while handling one event) become DLQ entries with
        PII masked; only :class:`~workers.store.exceptions.StoreError` propagates, so that
        the caller retries the whole batch instead of sending good events to the DLQ.
        """
        result = BatchResult()
        done: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for topic in {r.topic for r in records}:
            of_topic = [r for r in records if r.topic == topic]
            result.epochs[topic] = epoch = self.topic_epoch(topic)
            for p, ranges in self.flushed_ranges(topic, of_topic, epoch).items():
                done[(topic, p)] = ranges
        fresh: list[tuple[RawRecord, InferenceLog]] = []
        now = self._now()
        for record in records:
            self._touch_partition(result, record)
            ranges = done.get((record.topic, record.partition), [])
            if any(first <= record.offset <= last for first, last in ranges):
                result.skipped += 1  # counted by an earlier flush (replay after a crash)
                continue
            decoder = self.decoders.get(record.topic)
            try:
                if decoder is None:
                    events = [
                        decode_event(
                            record.value, InferenceLog, max_bytes=self.max_event_bytes, now=now
                        )
                    ]
                else:
                    events, rejected = decoder(record)
                    result.rejected.extend(rejected)
            except StoreError:
                raise
            except InvalidEvent as exc:
                result.expired += exc.reason == "expired"
                result.rejected.append(Rejected(record, exc.reason, str(exc)))
                continue
            except Exception as exc:  # a bug must not lose the event: it goes to the DLQ
                result.rejected.append(self._failed(record, "processing_error", exc))
                continue
            for event in events:
                try:
                    self._check_storable(event, now)
                    fresh.append((record, self.redactor.redact_event(event)))
                except InvalidEvent as exc:
                    result.expired += exc.reason == "expired"
                    result.rejected.append(Rejected(record, exc.reason, str(exc)))
        started = time.perf_counter()
        bins = self._embedding_bins_each(fresh, result)
        result.embed_seconds = time.perf_counter() - started
        for (record, event), embed_bin in zip(fresh, bins, strict=True):
            if embed_bin is None:
                continue  # rejected by the embedder
            try:
                self._count(result, record, event, *embed_bin)
            except StoreError:
                raise
            except Exception as exc:
                result.rejected.append(self._failed(record, "processing_error", exc))
        result.rejected = [redact_rejected(r, self.redactor) for r in result.rejected]
        return result

    def _check_storable(self, event: InferenceLog, now: datetime) -> None:
        """Raise :class:`InvalidEvent` for a timestamp the tables would drop or refuse."""
        if event.ts < now - self.max_event_age:
            raise InvalidEvent(
                f"timestamp {event.ts.isoformat()} is older than the retention of "
                f"{self.max_event_age.days} days (the TTL of inference_logs): it would be "
                "dropped on arrival",
                reason="expired",
            )
        if event.ts < EARLIEST_STORABLE:
            raise InvalidEvent(
                f"timestamp {event.ts.isoformat()} is before {EARLIEST_STORABLE.date()}, the "
                "earliest time window_counts can hold",
                reason="timestamp",
            )

    def _failed(self, record: RawRecord, reason: str, exc: Exception) -> Rejected:
        # The traceback is what fixes the bug; it may quote the event, so mask it first.
        log.error(
            "%s at %s, event sent to the DLQ: %s",
            reason,
            record.coordinates,
            self.redactor.redact(traceback.format_exc()),
        )
        return Rejected(record, reason, repr(exc))

    def _embedding_bins_each(
        self, fresh: Sequence[tuple[RawRecord, InferenceLog]], result: BatchResult
    ) -> list[tuple[int, int] | None]:
        """Bins for the batch; when the batch fails, event by event (None: rejected).

        One event the embedder cannot handle must not send its whole batch to the DLQ.
        """
        try:
            return list(self._embedding_bins([e for _, e in fresh]))
        except StoreError:
            raise
        except Exception:
            log.warning("embedding a batch of %d events failed; retrying one by one", len(fresh))
        bins: list[tuple[int, int] | None] = []
        for record, event in fresh:
            try:
                bins.append(self._embedding_bins([event])[0])
            except StoreError:
                raise
            except Exception as exc:
                result.rejected.append(self._failed(record, "embedding_error", exc))
                bins.append(None)
        return bins

    def _touch_partition(self, result: BatchResult, record: RawRecord) -> None:
        key = (record.topic, record.partition)
        first, last, n, counts = result.partitions.get(
            key, PartitionSpan(record.offset, record.offset, 0, Counter())
        )
        result.partitions[key] = PartitionSpan(
            min(first, record.offset), max(last, record.offset), n, counts
        )

    def _embedder(self, name: str) -> Embedder:
        if name not in self._embedders:
            self._embedders[name] = self._embedder_factory(name)
        return self._embedders[name]

    def _embedding_bins(self, events: Sequence[InferenceLog]) -> list[tuple[int, int]]:
        """``(nearest-centroid bin, novelty bin)`` per event (-1: no baseline, not in the
        embedding sample, or a baseline without the novelty feature)."""
        bins = [(-1, -1)] * len(events)
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
            clusters, novelty = baseline.bin_embeddings(vectors)
            for j, (i, b) in enumerate(zip(indices, clusters, strict=True)):
                bins[i] = (int(b), -1 if novelty is None else int(novelty[j]))
        return bins

    def _count(
        self,
        result: BatchResult,
        record: RawRecord,
        event: InferenceLog,
        embed_bin: int,
        novelty_bin: int = -1,
    ) -> None:
        # Baselines measure length in simple tokens; model token counts would read as drift.
        stats = text_stats(event.completion)
        baseline = self.baselines.get(event.base_model, event.adapter_version)
        key = (record.topic, record.partition)
        first, last, n, counts = result.partitions[key]
        keys: list[CountKey] = []
        if baseline is not None:
            bucket = minute_bucket(event.ts)
            prefix = (event.base_model, event.adapter_version, baseline.baseline_id)
            if embed_bin >= 0:
                keys.append((*prefix, "embedding", bucket, embed_bin))
            if novelty_bin >= 0:
                keys.append((*prefix, "novelty", bucket, novelty_bin))
            values = {
                "output_length": float(stats.length),
                "ttr": stats.ttr,
                "distinct2": stats.distinct2,
                "refusal": float(stats.refusal),
            }
            for feature, value in values.items():
                fb = baseline.features.get(feature)
                if fb is not None:
                    keys.append((*prefix, feature, bucket, fb.assign_one(value)))
        counts.update(keys)
        row = inference_log_row(
            event, embed_bin=embed_bin, refusal=stats.refusal, novelty_bin=novelty_bin
        )
        result.partitions[key] = PartitionSpan(first, last, n + 1, counts)
        result.accepted.append(event)
        result.log_rows.append(row)
        result.counted.append(Counted(record, row, tuple(keys)))

    # -- flushing ---------------------------------------------------------------------
    def flush(self, result: BatchResult) -> list[Rejected]:
        """Write the batch's raw rows and counts; safe to call again with the same batch.

        Returns the events the store refused. A deterministic rejection
        (:class:`~workers.store.exceptions.QueryFailed`) of the batch is bisected: halves
        are written on their own (each with its own offsets and dedup token) until the
        refused events are single; those come back as ``store_rejected`` for the DLQ, with
        the store's error. Transient errors (``StoreUnavailable``) propagate: the caller
        retries, and the same batch bisects the same way, so the retry is deduplicated.
        """
        if not result.partitions:
            return []
        try:
            self._write(result.partitions, result.log_rows, result.epochs)
            return []
        except StoreUnavailable:
            raise  # StoreMisconfigured too: no part of the batch could be written either
        except QueryFailed as exc:
            if not result.counted:
                raise  # no event's rows in it: not something the DLQ can hold
            log.warning(
                "the store refused a batch of %d events; writing it in halves to find the "
                "events it refuses: %s",
                len(result.counted),
                self.redactor.redact(str(exc))[:500],
            )
            refused = self._bisect(sorted(result.counted, key=_position), exc, result.epochs)
        return [redact_rejected(r, self.redactor) for r in refused]

    def _bisect(
        self, items: Sequence[Counted], error: QueryFailed, epochs: dict[str, str]
    ) -> list[Rejected]:
        if len(items) == 1:
            log.error(
                "store_rejected at %s, event sent to the DLQ: %s",
                items[0].record.coordinates,
                self.redactor.redact(str(error))[:500],
            )
            return [Rejected(items[0].record, "store_rejected", str(error))]
        refused: list[Rejected] = []
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            try:
                self._write(_partition_counts(half), [item.row for item in half], epochs)
            except StoreUnavailable:
                raise
            except QueryFailed as exc:
                refused += self._bisect(half, exc, epochs)
        return refused

    def _write(
        self,
        partitions: PartitionCounts,
        log_rows: list[dict[str, Any]],
        epochs: dict[str, str],
    ) -> None:
        token_base = "|".join(
            f"{t}{'@' + epochs[t] if epochs.get(t) else ''}:{p}:{first}-{last}"
            for (t, p), (first, last, _, _) in sorted(partitions.items())
        )
        digest = hashlib.sha256(f"{self.consumer_group}|{token_base}".encode()).hexdigest()[:32]
        if log_rows:
            self.store.insert("inference_logs", log_rows, dedup_token=f"logs-{digest}")
        rows = []
        for (topic, partition), (first, last, n, counts) in sorted(partitions.items()):
            keys = sorted(counts)
            rows.append(
                {
                    "consumer_group": self.consumer_group,
                    "topic": topic,
                    "topic_id": epochs.get(topic, ""),
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


def _position(item: Counted) -> tuple[str, int, int]:
    return item.record.topic, item.record.partition, item.record.offset


def _partition_counts(items: Sequence[Counted]) -> PartitionCounts:
    """The flush_log rows' contents for some counted events (a part of a batch)."""
    out: PartitionCounts = {}
    for item in items:
        record = item.record
        key = (record.topic, record.partition)
        first, last, n, counts = out.get(
            key, PartitionSpan(record.offset, record.offset, 0, Counter())
        )
        counts.update(item.keys)
        out[key] = PartitionSpan(min(first, record.offset), max(last, record.offset), n + 1, counts)
    return out
