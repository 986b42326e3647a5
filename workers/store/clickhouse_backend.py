"""The server backend: a ClickHouse server (or cluster) through clickhouse-connect."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from workers.store import QueryResult, Store
from workers.store.exceptions import QueryFailed, StoreUnavailable, translate
from workers.store.params import utc_params

_AUTHENTICATION_FAILED = 516


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, list):
        return [_utc(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_utc(v) for v in value)
    return value


class ClickHouseStore(Store):
    """A database on a ClickHouse server, reached over HTTP(S)."""

    def __init__(
        self, url: str, database: str = "sentryml", *, username: str = "default", password: str = ""
    ) -> None:
        super().__init__(database)
        parsed = urlparse(url)
        self.url = url
        try:
            admin = clickhouse_connect.get_client(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                secure=parsed.scheme == "https",
                username=username,
                password=password,
                compress=False,
                autogenerate_session_id=False,
            )
            # A read-only user may open an existing database; only a writer creates it.
            if not admin.command(f"EXISTS DATABASE {database}"):
                admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            admin.close()
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                secure=parsed.scheme == "https",
                username=username,
                password=password,
                database=database,
                compress=False,
                autogenerate_session_id=False,
            )
        except OperationalError as exc:
            raise StoreUnavailable(f"ClickHouse at {url} is unreachable: {exc}") from exc
        except DatabaseError as exc:
            hint = (
                " (check SENTRYML_STORE_USERNAME / SENTRYML_STORE_PASSWORD)"
                if getattr(exc, "code", None) == _AUTHENTICATION_FAILED
                else ""
            )
            raise QueryFailed(f"ClickHouse at {url} refused the connection{hint}: {exc}") from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OperationalError as exc:
            raise StoreUnavailable(f"ClickHouse at {self.url}: {exc}") from exc
        except DatabaseError as exc:  # DataError too: a value the client cannot encode
            raise translate(f"ClickHouse at {self.url}: {exc}", exc.code) from exc

    def command(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._call(
            self._client.command,
            sql,
            parameters=utc_params(sql, params) if params else None,
            settings=dict(settings) if settings else None,
        )

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        result = self._call(
            self._client.query, sql, parameters=utc_params(sql, params) if params else None
        )
        rows = [tuple(_utc(v) for v in row) for row in result.result_rows]
        types = [t.name for t in result.column_types]
        return QueryResult(list(result.column_names), rows, types)

    def _insert(
        self, table: str, columns: list[str], rows: list[list[Any]], settings: dict[str, Any]
    ) -> None:
        self._call(
            self._client.insert, table, rows, column_names=columns, settings=settings or None
        )

    def close(self) -> None:
        self._client.close()
