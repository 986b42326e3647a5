"""The chDB endpoint's request handling: answer ClickHouse HTTP requests from one folder.

:class:`ChdbEngine` knows nothing of sockets (:mod:`workers.store.server` serves it over
HTTP): it authenticates a request, reads it, guards its SQL (:mod:`workers.store._sql_guard`)
and runs it on a pooled, throwaway or session connection.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb.session

from workers.store._server_auth import ServeUser, authenticate, check_origin
from workers.store._server_conn import _Conn
from workers.store._server_errors import (
    ClickHouseError,
    Reply,
    _from_chdb,
)
from workers.store._server_request import (
    _STATEFUL,
    _decompress,
    _form_fields,
    _is_read,
    _result_format,
    _split_insert,
    _Statement,
    query_settings,
)
from workers.store._sql_guard import ast_lines, extra_statement, refusal
from workers.store.chdb_backend import chdb_folder, open_error
from workers.store.exceptions import StoreUnavailable

log = logging.getLogger(__name__)

_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "TSVWithNames": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}
_VERDICT_CACHE = 1024  # statements whose guard verdict is remembered (the worker repeats its own)


class ChdbEngine:
    """Answer ClickHouse HTTP requests from one chDB folder; knows nothing of sockets.

    Requests without a ``session_id`` share one pooled chDB connection per access level;
    it is switched to each request's database and settings (only what differs from the
    previous request, so usually nothing) and a ``SET``/``USE``/temporary table runs on a
    throwaway connection, so nothing one client does outlives its query. Requests with a
    ``session_id`` get their own connection, kept until ``session_timeout`` seconds of
    idleness. All chDB calls are serialized by one lock.
    """

    def __init__(
        self,
        path: str | Path,
        users: Iterable[ServeUser],
        *,
        allowed_origins: Iterable[str] = (),
        max_sessions: int = 256,
        max_session_timeout_s: float = 3600.0,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_session_timeout_s <= 0:
            raise ValueError(f"max_session_timeout_s must be > 0, got {max_session_timeout_s}")
        given = list(users)
        if not given:
            raise ValueError("at least one user (with a password) is needed")
        self.users = {u.name: u for u in given}
        if len(self.users) != len(given):
            raise ValueError("user names must be unique")
        self.path, options = chdb_folder(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self.max_sessions = max_sessions
        self.max_session_timeout_s = max_session_timeout_s
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], _Conn] = {}
        self._pool: dict[bool, _Conn | None] = {}
        self._verdicts: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
        self._hostname = socket.gethostname()
        try:
            # The anchor keeps chDB's embedded server (and the folder lock) up between requests.
            # Its options (e.g. backups.allowed_path) configure chDB for every connection.
            self._anchor = chdb.session.Session(
                f"{self.path}?{options}" if options else str(self.path)
            )
            row = self._anchor.query("SELECT version(), timezone()", "TabSeparated")
        except RuntimeError as exc:
            raise StoreUnavailable(open_error(self.path, str(exc))) from exc
        self.version, self.timezone = row.bytes().decode().strip().split("\t")

    # -- request handling --------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; never raises for a client or query error."""
        hdrs = {k.lower(): v for k, v in headers.items()}
        split = urlsplit(target)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        base = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Server-Display-Name": self._hostname,
        }
        try:
            path = split.path.rstrip("/") or "/"
            if path == "/ping":
                return Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            if path != "/":
                raise ClickHouseError(
                    0, "", f"There is no handle {split.path}. Use / or /ping.", status=404
                )
            if method not in ("GET", "POST", "HEAD"):
                raise ClickHouseError(0, "", f"method {method} is not allowed", status=405)
            if method in ("GET", "HEAD") and not body and "query" not in params:
                return Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            # Before anything of the request is parsed: a page in a browser can POST to a
            # local port without CORS, but it sends its Origin and knows no password.
            check_origin(hdrs, self.allowed_origins)
            user = authenticate(hdrs, params, self.users)
            body = _decompress(hdrs.get("content-encoding", ""), body)
            ctype = hdrs.get("content-type", "")
            if ctype.lower().startswith("multipart/form-data"):
                params.update(_form_fields(ctype, body))
                body = b""
            query = params.get("query", "").encode("utf-8")
            full = query + b"\n" + body if query and body else query or body
            if not full.strip():
                raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
            # A GET can only read, as on ClickHouse (readonly = 1 for the query).
            readonly = user.readonly or method != "POST"
            reply = self._execute(user, readonly, params, full)
            reply.headers = {**base, **reply.headers}
            return reply
        except ClickHouseError as err:
            return self.error_reply(err, base)
        except Exception as exc:  # a bug here must still answer, as a server error
            log.exception("chDB endpoint: unexpected error on %s %s", method, target[:200])
            return self.error_reply(ClickHouseError(1001, "STD_EXCEPTION", repr(exc)), base)

    def error_reply(self, err: ClickHouseError, base: dict[str, str]) -> Reply:
        """``err`` as ClickHouse answers it: its text, status and exception-code header."""
        text = err.message
        if err.code and not text.startswith("DB::Exception"):
            text = f"DB::Exception: {text}. ({err.name})"
        if err.code:
            text = f"Code: {err.code}. {text}"
            if "(version " not in text:
                text += f" (version {self.version})"
        headers = {**base, "Content-Type": "text/plain; charset=UTF-8"}
        if err.code:
            headers["X-ClickHouse-Exception-Code"] = str(err.code)
        return Reply(err.status, (text + "\n").encode("utf-8"), headers)

    def _execute(
        self, user: ServeUser, readonly: bool, params: Mapping[str, str], full: bytes
    ) -> Reply:
        statement = _split_insert(full)
        if statement is None:
            try:
                statement = _Statement(full.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ClickHouseError(
                    27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", f"query is not UTF-8: {exc}"
                ) from exc
        bound = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        settings = query_settings(params)
        if readonly and settings:
            raise ClickHouseError(
                164,
                "READONLY",
                f"{user.name}: Cannot modify '{next(iter(settings))}' setting in readonly mode",
            )
        database = params.get("database", "")
        default_format = params.get("default_format", "TabSeparated")
        session_id = params.get("session_id", "")
        stateful = bool(_STATEFUL.search(statement.sql[:4096]))
        with self._lock:
            self._expire_sessions()
            # A writer's GET runs read-only, so it cannot borrow the writer's session.
            if session_id and (user.readonly or not readonly):
                conn = self._named_session(user, session_id, params)
                if stateful:
                    # SET/USE change the session itself; per-query parameters do not apply.
                    self._call(conn.revert)
                    reply = self._run(conn, statement, bound, default_format)
                    self._call(conn.absorb, statement.sql)
                    return reply
                self._call(conn.prepare, database, settings)
                return self._run(conn, statement, bound, default_format)
            # Without a session nothing outlives the query: SET/USE/temporary tables run on
            # a throwaway connection, everything else on the pooled one.
            if stateful:
                conn = self._call(_Conn, self.path, readonly)
                try:
                    self._call(conn.prepare, database, settings)
                    return self._run(conn, statement, bound, default_format)
                finally:
                    conn.close()
            conn = self._pooled(readonly)
            try:
                conn.prepare(database, settings)
            except RuntimeError as exc:
                if not conn.broken:
                    raise _from_chdb(exc) from exc
                # The previous request left state that cannot be undone (readonly = 1):
                # start over on a fresh connection.
                conn = self._pooled(readonly)
                self._call(conn.prepare, database, settings)
            return self._run(conn, statement, bound, default_format)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except RuntimeError as exc:
            raise _from_chdb(exc) from exc

    def _pooled(self, readonly: bool) -> _Conn:
        """The idle connection for stateless requests, reset if its state went astray."""
        conn = self._pool.get(readonly)
        if conn is not None and conn.broken:
            conn.close()
            conn = None
        if conn is None:
            conn = self._call(_Conn, self.path, readonly)
            self._pool[readonly] = conn
        return conn

    def _guard(self, conn: _Conn, statement: _Statement, bound: dict[str, str]) -> None:
        """Refuse what reaches the host or the network (:mod:`workers.store`)."""
        sql = statement.sql
        if statement.insert_format is not None:
            sql = f"{sql} FORMAT {statement.insert_format}"
        if extra_statement(sql):
            raise ClickHouseError(62, "SYNTAX_ERROR", "Multi-statements are not allowed")
        key = (sql, conn.db, tuple(sorted(bound.items())))
        verdict = self._verdicts.get(key)
        if verdict is None:
            try:
                ast = conn.session.query("EXPLAIN AST " + sql, "TSVRaw", params=bound)
            except RuntimeError as exc:
                raise _from_chdb(exc) from exc
            verdict = refusal(ast_lines(ast.bytes().decode("utf-8", "replace")), conn.db) or ""
            if len(self._verdicts) >= _VERDICT_CACHE:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = verdict
        if verdict:
            raise ClickHouseError(497, "ACCESS_DENIED", verdict)

    def _run(self, conn: _Conn, statement: _Statement, bound: dict[str, str], fmt: str) -> Reply:
        self._guard(conn, statement, bound)
        started = time.perf_counter()
        try:
            if statement.insert_format is not None:
                rows, size = conn.insert(statement.sql, statement.insert_format, statement.data)
                summary = {
                    "read_rows": "0",
                    "read_bytes": "0",
                    "written_rows": str(rows),
                    "written_bytes": str(size),
                    "elapsed_ns": str(int((time.perf_counter() - started) * 1e9)),
                }
                return Reply(200, b"", {"X-ClickHouse-Summary": json.dumps(summary)})
            result = conn.session.query(statement.sql, fmt, params=bound)
        except RuntimeError as exc:
            raise _from_chdb(exc) from exc
        data = result.bytes() or b""
        out_format = _result_format(statement.sql, fmt)
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "result_bytes": str(len(data)),
            "elapsed_ns": str(int((time.perf_counter() - started) * 1e9)),
        }
        headers = {"X-ClickHouse-Summary": json.dumps(summary)}
        if data or _is_read(statement.sql):
            headers["X-ClickHouse-Format"] = out_format
            headers["Content-Type"] = _CONTENT_TYPES.get(out_format, "text/plain; charset=UTF-8")
        return Reply(200, data, headers)

    # -- sessions ----------------------------------------------------------------------

    def _named_session(self, user: ServeUser, session_id: str, params: Mapping[str, str]) -> _Conn:
        key = (user.name, session_id)
        try:
            timeout = float(params.get("session_timeout", "60"))
        except ValueError as exc:
            raise ClickHouseError(
                72, "CANNOT_PARSE_NUMBER", "session_timeout must be a number"
            ) from exc
        if not 0 < timeout <= self.max_session_timeout_s:
            raise ClickHouseError(
                69,
                "ARGUMENT_OUT_OF_BOUND",
                f"session_timeout must be in (0, {self.max_session_timeout_s:g}] seconds",
                status=400,
            )
        conn = self._sessions.get(key)
        if conn is not None and conn.broken:
            self._sessions.pop(key).close()
            raise ClickHouseError(
                372, "SESSION_NOT_FOUND", f"Session {session_id} was reset after an error"
            )
        if conn is None:
            if params.get("session_check") == "1":
                raise ClickHouseError(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
                self._sessions.pop(oldest).close()
            conn = self._call(_Conn, self.path, user.readonly)
            self._sessions[key] = conn
        conn.timeout_s = timeout
        conn.last_used = time.monotonic()
        return conn

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._sessions.items() if now - c.last_used > c.timeout_s]:
            self._sessions.pop(key).close()

    def close(self) -> None:
        """Close every session and connection, then the anchor."""
        with self._lock:
            for conn in [*self._sessions.values(), *self._pool.values()]:
                if conn is not None:
                    conn.close()
            self._sessions.clear()
            self._pool.clear()
            self._anchor.close()
