"""Store errors. Third-party errors (chDB, clickhouse-connect) are translated at the boundary."""

from __future__ import annotations

from schemas.exceptions import SentryMLError


class StoreError(SentryMLError):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written right now (transient).

    The worker keeps the data, stops committing offsets and retries with backoff; check
    that the ClickHouse server is up (or that the chDB folder is writable and not opened by
    another process — use ``sentryml store serve`` to share one embedded store).
    """


class QueryFailed(StoreError):
    """ClickHouse rejected a statement (a bug or a schema mismatch; not retried)."""


class InvalidStoreURL(StoreError, ValueError):
    """The store URL is neither ``chdb://PATH`` nor ``http(s)://HOST:PORT``."""
