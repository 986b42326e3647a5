"""The adapter registry: every adapter ever trained, in the ``adapters`` table.

A row per adapter version with its parent (the incumbent it was compared with), base
model, method, dataset hash, metrics, SHA-256 of its weights, path and status. The table is
a ``ReplacingMergeTree(updated_at)`` keyed by ``(base_model, version)``: a status change is
an upsert of the whole row with a newer ``updated_at``, and reads use ``FINAL``, so a job
that is retried after a crash updates its row instead of adding a second one.

Status life cycle: ``trained`` → ``promoted`` | ``rejected`` (or ``failed``); a promoted
adapter can later be ``rolled_back``. The *current* adapter of a base model is the promoted
one with the newest ``updated_at``; :meth:`Registry.rollback` marks it ``rolled_back`` and
re-promotes the one before it (or falls back to the base model alone).

Every change is also an :class:`~schemas.events.AdapterEvent` on the adapter-events topic
(:class:`AdapterEventPublisher`), for serving and the golden runner.

>>> weights_sha256(Path("adapter_dir"))    # doctest: +SKIP
'9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.events import AdapterEvent, utcnow
from trainer.exceptions import AdapterNotFound, TrainerError
from workers.adapters import LIVE_STATUSES, live_adapter_row
from workers.kafka import KafkaSettings, NotDelivered, SyncPublisher
from workers.store import Store

log = logging.getLogger(__name__)

#: Files that hold adapter weights (PEFT writes ``adapter_model.safetensors``).
WEIGHT_SUFFIXES = (".safetensors", ".bin")

#: Statuses of an adapter that serves (or is about to serve) traffic.

_COLUMNS = (
    "updated_at",
    "version",
    "base_model",
    "parent_version",
    "method",
    "dataset_hash",
    "metrics",
    "sha256",
    "path",
    "status",
    "job_id",
)


def adapter_version_for(job_id: str) -> str:
    """The adapter version a job produces: derived from the job id, so a retried job
    (after a crash) writes the same registry row and the same folder.

    >>> adapter_version_for("m-20260301T000000-abc123")
    'ft-20260301-f2f148b8d8'
    """
    stamp = re.search(r"(\d{8})T\d{6}", job_id)
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"ft-{stamp.group(1)}-{digest}" if stamp else f"ft-{digest}"


def weights_files(folder: Path) -> list[Path]:
    """The weight files of a saved adapter, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_sha256(folder: Path) -> str:
    """SHA-256 of the adapter's weights.

    With one weight file (the usual ``adapter_model.safetensors``) this is that file's
    digest, the same as ``sha256sum adapter_model.safetensors``. With several, it is the
    digest of the lines ``<name>  <file digest>`` in name order.
    """
    files = weights_files(folder)
    if not files:
        raise TrainerError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
    digests = [(p.name, _file_sha256(p)) for p in files]
    if len(digests) == 1:
        return digests[0][1]
    listing = "".join(f"{name}  {digest}\n" for name, digest in digests)
    return hashlib.sha256(listing.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class AdapterRecord:
    """One adapter as the registry knows it."""

    version: str
    base_model: str
    parent_version: str = "none"
    method: str = "lora"
    dataset_hash: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""
    status: str = "trained"
    job_id: str = ""
    updated_at: datetime | None = None

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["metrics"] = json.dumps(self.metrics, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AdapterRecord:
        values = dict(row)
        values["metrics"] = json.loads(values.get("metrics") or "{}")
        return cls(**{k: values[k] for k in _COLUMNS if k in values})

    def event(self, status: str | None = None, message: str = "") -> AdapterEvent:
        """The adapter-events message for this record (``status`` overrides its own)."""
        return AdapterEvent(
            ts=self.updated_at or utcnow(),
            base_model=self.base_model,
            adapter_version=self.version,
            parent_version=self.parent_version,
            status=status or self.status,  # type: ignore[arg-type]
            job_id=self.job_id,
            metrics={k: float(v) for k, v in self.metrics.items() if _is_number(v)},
            path=self.path or None,
            sha256=self.sha256 or None,
            message=message,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM adapters FINAL"


class Registry:
    """Read and upsert adapters in the store; ``now`` is injected for tests."""

    def __init__(self, store: Store, now: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.now = now

    def get(self, base_model: str, version: str) -> AdapterRecord | None:
        rows = self.store.query(
            _SELECT + " WHERE base_model = {m:String} AND version = {v:String}",
            {"m": base_model, "v": version},
        ).dicts()
        return AdapterRecord.from_row(rows[0]) if rows else None

    def list_adapters(self, base_model: str | None = None) -> list[AdapterRecord]:
        """Every adapter (one row each), newest change first."""
        where = " WHERE base_model = {m:String}" if base_model else ""
        rows = self.store.query(
            _SELECT + where + " ORDER BY updated_at DESC, version",
            {"m": base_model} if base_model else None,
        ).dicts()
        return [AdapterRecord.from_row(r) for r in rows]

    def current(self, base_model: str) -> AdapterRecord | None:
        """The promoted adapter with the newest change, or None (base model alone)."""
        return current_adapter(self.store, base_model)

    def upsert(self, record: AdapterRecord) -> AdapterRecord:
        """Write the record with a fresh ``updated_at`` (strictly after the stored one, so
        the newest write always wins the merge). Returns what was written."""
        stamp = self.now()
        existing = self.get(record.base_model, record.version)
        if existing and existing.updated_at and stamp <= existing.updated_at:
            stamp = existing.updated_at + timedelta(milliseconds=1)
        written = replace(record, updated_at=stamp)
        self.store.insert("adapters", [written.to_row()])
        return written

    def set_status(
        self, base_model: str, version: str, status: str, **changes: Any
    ) -> AdapterRecord:
        record = self.get(base_model, version)
        if record is None:
            raise AdapterNotFound(f"no adapter {version!r} of {base_model!r} in the registry")
        return self.upsert(replace(record, status=status, **changes))

    def rollback(self, base_model: str) -> tuple[AdapterRecord, AdapterRecord | None]:
        """Mark the current adapter ``rolled_back`` and re-promote the previous promoted
        one. Returns ``(rolled_back, restored)``; ``restored`` is None when no earlier
        adapter was ever promoted (serving falls back to the base model alone)."""
        current = self.current(base_model)
        if current is None:
            raise AdapterNotFound(
                f"{base_model!r} has no promoted adapter to roll back "
                "(see `sentryml adapters list`)"
            )
        previous = [
            r
            for r in self.list_adapters(base_model)
            if r.status in LIVE_STATUSES and r.version != current.version
        ]
        rolled = self.upsert(replace(current, status="rolled_back"))
        restored = self.upsert(replace(previous[0], status="promoted")) if previous else None
        return rolled, restored


def current_adapter(store: Store, base_model: str) -> AdapterRecord | None:
    """The promoted (or deployed) adapter of ``base_model`` changed last, or None."""
    row = live_adapter_row(store, base_model, _COLUMNS)
    return AdapterRecord.from_row(row) if row else None


class AdapterEventPublisher:
    """Publish :class:`AdapterEvent` s to the adapter-events topic (key = base model) and
    wait for delivery; a failed delivery raises (the caller records it)."""

    def __init__(self, kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._publisher = SyncPublisher(kafka, timeout_s=timeout, config={"linger.ms": 0})

    def publish(self, event: AdapterEvent) -> None:
        try:
            self._publisher.publish(self.topic, event.base_model, event.to_bytes())
        except NotDelivered as exc:
            raise TrainerError(
                f"adapter event {event.status} for {event.base_model}/{event.adapter_version} "
                f"was not delivered to {self.topic}: {exc.errors or 'timed out'}; check the broker"
            ) from exc
        log.info(
            "adapter event %s %s/%s sent to %s",
            event.status,
            event.base_model,
            event.adapter_version,
            self.topic,
        )
