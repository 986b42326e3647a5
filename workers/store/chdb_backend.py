"""The embedded backend: ClickHouse's engine in-process through chDB."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import chdb.session

from workers.store import QueryResult, Store
from workers.store.exceptions import StoreUnavailable, translate
from workers.store.params import text_params

# Session settings that make JSON output lossless for Python (set once per session, so
# queries keep their own SETTINGS and FORMAT clauses).
_OUTPUT_SETTINGS = (
    "SET output_format_json_quote_64bit_integers = 0,"
    " output_format_json_quote_denormals = 1, output_format_json_named_tuples_as_objects = 0"
)


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__}")


def _literal(value: Any) -> str:
    """A setting value as a ClickHouse literal (settings cannot be bound as parameters)."""
    if isinstance(value, bool | int | float):
        return str(int(value) if isinstance(value, bool) else value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _setting_name(name: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise ValueError(f"setting name {name!r} must be a plain identifier")
    return name


def _settings_clause(settings: Mapping[str, Any]) -> str:
    return " SETTINGS " + ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items())


def _unwrap(ch_type: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        while ch_type.startswith(wrapper):
            ch_type = ch_type[len(wrapper) : -1]
    return ch_type


def convert_value(ch_type: str, value: Any) -> Any:
    """Turn a JSON-decoded ClickHouse value into the Python value clickhouse-connect gives."""
    if value is None:
        return None
    base = _unwrap(ch_type)
    if base.startswith("DateTime"):
        text = str(value)
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
        return datetime.strptime(text, fmt).replace(tzinfo=UTC)
    if base.startswith("Date"):
        return date.fromisoformat(str(value))
    if base.startswith("Array("):
        inner = base[len("Array(") : -1]
        return [convert_value(inner, v) for v in value]
    if base.startswith(("Float", "Decimal")):
        return float(value)  # nan / inf arrive quoted
    return value


def chdb_folder(target: str | Path) -> tuple[Path, str]:
    """``"DIR?opt=v&..."`` as (normalised folder, chDB startup options).

    chDB compares folder paths as strings, so every opener in this process (this store,
    ``sentryml store serve``) normalises alike. Options such as
    ``backups.allowed_path=/backups`` configure chDB's embedded server; the first opener's
    options hold for the whole process.

    >>> chdb_folder("/data/chdb/?backups.allowed_path=/backups")
    (PosixPath('/data/chdb'), 'backups.allowed_path=/backups')
    """
    folder, _, options = str(target).partition("?")
    return Path(os.path.abspath(Path(folder).expanduser())), options


_OTHER_FOLDER = re.compile(r"already initialized with path '([^']*)'")


def open_error(path: Path, message: str) -> str:
    """What to tell the operator when chDB refuses to open ``path``."""
    other = _OTHER_FOLDER.search(message)
    if other:
        return (
            f"cannot open the chDB folder {path}: this process already uses the chDB folder "
            f"{other.group(1)}, and chDB allows one data folder per process. Use one folder "
            "per process, or share one store between processes with `sentryml store serve` "
            "and SENTRYML_STORE_URL=http://127.0.0.1:8123."
        )
    if "initializing EmbeddedServer" in message or "Cannot lock file" in message:
        return (
            f"cannot open the chDB folder {path}: another process probably holds it (chDB "
            "locks the folder's `status` file for the life of the process). Stop that "
            "process, or run `sentryml store serve --path "
            f"{path}` once and point every process at it with "
            f"SENTRYML_STORE_URL=http://127.0.0.1:8123. chDB said: {message}"
        )
    return f"cannot open the chDB folder {path}: {message}"


class ChdbStore(Store):
    """A folder of ClickHouse data opened in this process.

    chDB allows one process per folder; a second process gets :class:`StoreUnavailable`
    telling it to use ``sentryml store serve``. Calls are serialized with a lock so the
    store can be shared by the worker's threads.
    """

    def __init__(self, path: str | Path, database: str = "sentryml") -> None:
        super().__init__(database)
        self.path, options = chdb_folder(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._session = chdb.session.Session(
                f"{self.path}?{options}" if options else str(self.path)
            )
        except RuntimeError as exc:
            raise StoreUnavailable(open_error(self.path, str(exc))) from exc
        self._run(_OUTPUT_SETTINGS)
        self._run(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._run(f"USE {self.database}")

    def _run(
        self,
        sql: str,
        fmt: str = "CSV",
        params: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Any:
        with self._lock:
            try:
                bound = text_params(sql, params) if params else None
                if not settings:
                    return self._session.query(sql, fmt, params=bound)
                # Query-level settings, as a server applies URL settings: a SETTINGS clause
                # would mean table settings in DDL and data in INSERT ... VALUES.
                names = [_setting_name(k) for k in settings]
                self._session.query(
                    "SET " + ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items())
                )
                try:
                    return self._session.query(sql, fmt, params=bound)
                finally:
                    self._session.query("SET " + ", ".join(f"{k} = DEFAULT" for k in names))
            except (RuntimeError, ValueError) as exc:
                message = str(exc)
                if (
                    "Cannot open file" in message
                    or "Permission denied" in message
                    or ("Readonly" in message or "NOT_ENOUGH_SPACE" in message)
                ):
                    raise StoreUnavailable(f"chDB at {self.path}: {message}") from exc
                raise translate(f"{message[:2000]}\n  in: {sql[:500]}") from exc

    def command(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._run(sql, params=params, settings=settings)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        text = self._run(sql, "JSONCompact", params)
        raw = str(text)
        if not raw.strip():
            return QueryResult([], [], [])
        payload = json.loads(raw)
        meta = payload["meta"]
        types = [m["type"] for m in meta]
        rows = [
            tuple(convert_value(t, v) for t, v in zip(types, row, strict=True))
            for row in payload["data"]
        ]
        return QueryResult([m["name"] for m in meta], rows, types)

    def _insert(
        self, table: str, columns: list[str], rows: list[list[Any]], settings: dict[str, Any]
    ) -> None:
        settings = {"date_time_input_format": "best_effort", **settings}
        cols = ", ".join(f"`{c}`" for c in columns)
        body = "\n".join(
            json.dumps(dict(zip(columns, row, strict=True)), default=_to_json) for row in rows
        )
        self._run(
            f"INSERT INTO {table} ({cols}){_settings_clause(settings)} FORMAT JSONEachRow\n{body}"
        )

    def close(self) -> None:
        with self._lock:
            self._session.close()
