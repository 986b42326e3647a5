"""One store interface, two ClickHouse engines, selected by URL.

- ``chdb:///path/to/folder`` — ClickHouse in-process (chDB), the embedded default. One
  process owns the folder; share it with others through ``sentryml store serve``.
- ``http://host:8123`` (or ``https://``) — a ClickHouse server through clickhouse-connect.

Both run the same DDL (``schemas/migrations/*.sql``) and the same SQL. Values are always
bound as ClickHouse query parameters (``{name:Type}``), never pasted into SQL.

>>> store = open_store("chdb:///tmp/sentryml-doctest")      # doctest: +SKIP
>>> store.migrate()                                           # doctest: +SKIP
>>> store.query("SELECT count() AS n FROM alerts").rows       # doctest: +SKIP
[(0,)]
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from workers.store._settings import (
    LOOPBACK_HOSTS,
    StoreSettings,
    read_password_file,
    serve_password_file,
)
from workers.store.exceptions import (
    InvalidStoreURL,
    QueryFailed,
    StoreError,
    StoreMisconfigured,
    StoreUnavailable,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "InvalidStoreURL",
    "QueryFailed",
    "QueryResult",
    "Store",
    "StoreError",
    "StoreMisconfigured",
    "StoreSettings",
    "StoreUnavailable",
    "migrations",
    "open_store",
    "read_password_file",
    "serve_password_file",
]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query, with column names; datetimes are timezone-aware UTC."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    types: list[str] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


def migrations() -> list[tuple[int, str, list[str]]]:
    """The packaged migrations as ``(version, name, statements)``, in order."""
    out = []
    folder = resources.files("schemas") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".sql"):
            continue
        version = int(entry.name.split("_", 1)[0])
        text = "\n".join(
            line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        statements = [s.strip() for s in text.split(";") if s.strip()]
        out.append((version, entry.name, statements))
    return out


class Store(ABC):
    """A ClickHouse database: run DDL, query with bound parameters, insert row batches."""

    def __init__(self, database: str) -> None:
        if not _IDENT.match(database):
            raise ValueError(f"database name {database!r} must be a plain identifier")
        self.database = database

    @abstractmethod
    def command(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Run a statement that returns no rows (DDL, ALTER, SYSTEM ...)."""

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT; ``params`` fill ``{name:Type}`` placeholders server-side."""

    @abstractmethod
    def _insert(
        self, table: str, columns: list[str], rows: list[list[Any]], settings: dict[str, Any]
    ) -> None: ...

    def insert(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
        """Insert a batch as one INSERT; a repeated ``dedup_token`` is not counted twice.

        Rows are dicts keyed by column; columns missing from a row take their default.
        Returns the number of rows sent.
        """
        if not rows:
            return 0
        if not _IDENT.match(table):
            raise ValueError(f"table name {table!r} must be a plain identifier")
        # Every key of every row: a column present only in later rows must not be dropped.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        for col in columns:
            if not _IDENT.match(col.replace(".", "_")):
                raise ValueError(f"column name {col!r} must be a plain identifier")
        matrix = [[row.get(c) for c in columns] for row in rows]
        settings: dict[str, Any] = {}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        self._insert(table, columns, matrix, settings)
        return len(matrix)

    def migrate(self) -> list[str]:
        """Apply packaged migrations not yet applied; idempotent. Returns the applied names."""
        # Checked first so that a read-only user (which may not even run CREATE ... IF NOT
        # EXISTS) can call migrate() on an up-to-date store.
        if not self.query("EXISTS TABLE schema_migrations").scalar():
            self.command(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                "ENGINE = ReplacingMergeTree ORDER BY version"
            )
        done = {row[0] for row in self.query("SELECT version FROM schema_migrations").rows}
        applied = []
        for version, name, statements in migrations():
            if version in done:
                continue
            for statement in statements:
                self.command(statement)
            self.insert("schema_migrations", [{"version": version, "name": name}])
            applied.append(name)
        return applied

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(target: StoreSettings | str | None = None) -> Store:
    """Open the store a URL or :class:`StoreSettings` names (default: the embedded chDB)."""
    settings = (
        target
        if isinstance(target, StoreSettings)
        else StoreSettings(**({"url": target} if target else {}))
    )
    url = settings.url
    if url.startswith("chdb://"):
        from workers.store.chdb_backend import ChdbStore

        return ChdbStore(url.removeprefix("chdb://"), settings.database)
    if url.startswith(("http://", "https://")):
        from workers.store.clickhouse_backend import ClickHouseStore

        return ClickHouseStore(
            url,
            settings.database,
            username=settings.username,
            password=settings.secret(),
        )
    raise InvalidStoreURL(
        f"store URL {url!r} not understood: use chdb:///path/to/folder or http://host:8123"
    )
