"""Store errors. Third-party errors (chDB, clickhouse-connect) are translated at the boundary."""

from __future__ import annotations

import re

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
    """ClickHouse rejected a statement for what it says or carries (deterministic: retrying
    the same statement fails the same way). The ingest agent bisects a refused batch down
    to the rows the store refuses and sends those to the DLQ as ``store_rejected``."""


class StoreMisconfigured(QueryFailed, StoreUnavailable):
    """The store refuses every write of this kind until an operator acts: a table, column
    or database missing (a migration not applied), a read-only, unknown or refused user.

    It is the statement that is wrong for this store, not the data, so splitting the batch
    would not help: the worker retries it like an outage (and alerts as one,
    ``SentryMLNotFlushing``). Run ``sentryml store migrate`` or fix the credentials.
    """


class InvalidStoreURL(StoreError, ValueError):
    """The store URL is neither ``chdb://PATH`` nor ``http(s)://HOST:PORT``."""


#: ClickHouse error codes that say "not now" rather than "not this data": the server is
#: overloaded, out of memory or space, timed out, or lost a replica or its keeper.
TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        173,  # CANNOT_ALLOCATE_MEMORY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)

#: Codes that refuse any write until an operator acts (:class:`StoreMisconfigured`).
MISCONFIGURED_CODES = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE (a migration not applied)
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        164,  # READONLY
        192,  # UNKNOWN_USER
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)

_CODE = re.compile(r"(?:Code: |error code |exception, code: )(\d+)")
_HTTP_5XX = re.compile(r"\b(?:HTTP|status)[^0-9]{0,12}(5\d\d)\b", re.IGNORECASE)


def error_code(message: str) -> int | None:
    """The ClickHouse error code quoted in an error message, if any.

    >>> error_code("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)")
    252
    """
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


def is_transient(message: str, code: int | None = None) -> bool:
    """Whether a store error is worth retrying: a transient ClickHouse code, or an HTTP 5xx
    with no ClickHouse code (a proxy or load balancer answering for a server that is away).

    >>> is_transient("Code: 241. DB::Exception: Memory limit (total) exceeded")
    True
    >>> is_transient("Code: 469. DB::Exception: Constraint `c` for table t is violated")
    False
    """
    code = code if code is not None else error_code(message)
    if code is not None and code != 0:
        return code in TRANSIENT_CODES
    return bool(_HTTP_5XX.search(message))


def translate(message: str, code: int | None = None) -> StoreError:
    """The store error a backend raises for a ClickHouse failure (``raise ... from exc``):
    :class:`StoreUnavailable` when it is transient, :class:`StoreMisconfigured` when no
    write can succeed until an operator acts, else :class:`QueryFailed` (this statement,
    with this data, is refused)."""
    if is_transient(message, code):
        return StoreUnavailable(message)
    if (code if code is not None else error_code(message)) in MISCONFIGURED_CODES:
        return StoreMisconfigured(message)
    return QueryFailed(message)
