"""Share one embedded chDB store between processes: a ClickHouse-HTTP endpoint over chDB.

chDB lets only one process open a data folder, yet on one machine the worker, the trainer
and ``sentryml sql`` are separate processes. ``sentryml store serve`` opens the folder once
and speaks enough of ClickHouse's HTTP interface for clickhouse-connect, curl and Grafana's
ClickHouse data source; the other processes use ``SENTRYML_STORE_URL=http://127.0.0.1:8123``
exactly as they would use a ClickHouse server. For real deployments, run a ClickHouse server.

What it speaks (ClickHouse's HTTP interface, the parts clients use):

- ``GET /ping`` → ``Ok.``; ``GET /?query=...`` (read-only, as on ClickHouse) and
  ``POST /`` with the query in the ``query`` parameter, the body, or both (the body is
  appended after a newline, as ClickHouse does). ``INSERT ... FORMAT <fmt>`` streams the
  rest of the body into the table in that format (Native from clickhouse-connect).
- Bound parameters ``param_<name>``, ``database``, ``default_format``, ``query_id``,
  ``session_id`` / ``session_timeout`` / ``session_check``, and any other parameter as a
  query-level setting (``insert_deduplication_token`` ...). Form-encoded (multipart)
  queries and parameters. ``Content-Encoding`` gzip, deflate, lz4, zstd on request bodies.
- Users through HTTP basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or the
  ``user``/``password`` parameters; every request needs them (no anonymous user, no user
  without a password), checked before the request is parsed. Read-only users and GET
  requests run with ``readonly = 1`` (no writes, no DDL, no settings changes). Requests
  with an ``Origin`` header (a web page) are refused unless that origin is allowed.
- What reaches the host or the network (``file()``, ``url()``, ``INTO OUTFILE``, the
  ``default`` database's file overlay, ...) is refused for every user:
  :mod:`workers.store` has the allow and deny lists.
- Responses carry ``X-ClickHouse-Query-Id``, ``-Format``, ``-Timezone``, ``-Summary``;
  errors use ClickHouse's text (``Code: N. DB::Exception: ... (NAME)``), its
  ``X-ClickHouse-Exception-Code`` header and HTTP status, so clients raise their usual
  errors.

Not a ClickHouse server: statements run one at a time (chDB calls are serialized), results
are buffered before they are sent, there is no TLS, response compression, progress headers,
external data or cluster DDL.

>>> users = [ServeUser("writer", "s3cret")]                             # doctest: +SKIP
>>> server = ChdbHTTPServer("/tmp/sentryml-serve", port=0, users=users).start()  # doctest: +SKIP
>>> import clickhouse_connect                                          # doctest: +SKIP
>>> clickhouse_connect.get_client(port=server.port, username="writer",
...                               password="s3cret").command("SELECT 1")  # doctest: +SKIP
1
>>> server.close()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import base64
import functools
import gzip
import hmac
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb.session

from workers.store._sql_guard import ast_lines, extra_statement, refusal, skip_quoted
from workers.store.chdb_backend import chdb_folder, open_error
from workers.store.exceptions import StoreUnavailable

log = logging.getLogger(__name__)

__all__ = ["ChdbEngine", "ChdbHTTPServer", "Reply", "ServeUser", "parse_user", "serve"]

DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]*$")
_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# HTTP-interface parameters that are not query settings (ClickHouse consumes these itself),
# and settings about HTTP streaming that have no meaning for a buffered reply.
_TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout",
        "session_check", "query_id", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "client_protocol_version", "quota_key", "role", "user",
        "password", "stacktrace", "close_session", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "enable_http_compression",
        "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
        "http_response_buffer_size", "http_wait_end_of_query",
    }
)  # fmt: skip
# Statements whose effect outlives the query in ClickHouse's session model.
_STATEFUL = re.compile(r"^\s*(SET|USE)\b|\bTEMPORARY\s+TABLE\b", re.IGNORECASE)
_READ_VERBS = ("SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK")
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
# ClickHouse's HTTP status for an error, by error name (src/Server/HTTPHandler.cpp).
_STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    "AUTHENTICATION_FAILED": 403,
    "UNKNOWN_USER": 403,
    "WRONG_PASSWORD": 403,
    "READONLY": 403,
    "ACCESS_DENIED": 403,
    "UNKNOWN_QUERY_PARAMETER": 400,
    "UNKNOWN_TYPE_OF_QUERY": 400,
    "SESSION_NOT_FOUND": 404,
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_OPEN_FILE": 503,
    "NOT_ENOUGH_SPACE": 503,
}
_BAD_REQUEST = frozenset(
    {
        "SYNTAX_ERROR", "BAD_ARGUMENTS", "BAD_QUERY_PARAMETER", "TYPE_MISMATCH",
        "INCORRECT_DATA", "INCORRECT_QUERY", "CANNOT_READ_ALL_DATA", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
        "THERE_IS_NO_COLUMN", "NO_SUCH_COLUMN_IN_TABLE", "EMPTY_QUERY",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "ILLEGAL_TYPE_OF_ARGUMENT",
        "NUMBER_OF_ARGUMENTS_DOESNT_MATCH", "UNKNOWN_COMPRESSION_METHOD",
    }
)  # fmt: skip
_CODE = re.compile(r"Code: (\d+)\. ")
_VERDICT_CACHE = 1024  # statements whose guard verdict is remembered (the worker repeats its own)
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")


@dataclass(frozen=True)
class ServeUser:
    """A user of the endpoint: a writer, or a reader limited to ClickHouse ``readonly = 1``.

    Every user has a password: the endpoint has no anonymous or passwordless access.
    """

    name: str
    password: str = field(repr=False)
    readonly: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"user name {self.name!r} must start with a letter or _ and hold only "
                "letters, digits, '_', '.', '@', '-'"
            )
        if not self.password:
            raise ValueError(
                f"user {self.name!r} has no password: give NAME:PASSWORD (every user of the "
                "endpoint needs one)"
            )


def parse_user(spec: str, readonly: bool = False) -> ServeUser:
    """``"NAME:PASSWORD"`` as a :class:`ServeUser` (a missing password is an error).

    >>> parse_user("reader:s3cret", readonly=True)
    ServeUser(name='reader', readonly=True)
    """
    name, _, password = spec.partition(":")
    return ServeUser(name.strip(), password, readonly)


class ClickHouseError(Exception):
    """An error to answer in ClickHouse's format (code, name, message)."""

    def __init__(self, code: int, name: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.status = status or _status(name)


def _status(name: str) -> int:
    if name in _STATUS_BY_NAME:
        return _STATUS_BY_NAME[name]
    if name in _BAD_REQUEST or name.startswith("CANNOT_PARSE"):
        return 400
    if name.startswith("UNKNOWN_"):
        return 404
    return 500


def _from_chdb(exc: Exception) -> ClickHouseError:
    """Translate a chDB error (its text is ClickHouse's ``Code: N. DB::Exception: ...``)."""
    text = str(exc).strip()
    code_match = _CODE.search(text)
    if code_match is None:
        return ClickHouseError(1001, "STD_EXCEPTION", f"DB::Exception: {text}")
    message = text[code_match.end() :]
    name_match = _ERROR_NAME.search(message)
    return ClickHouseError(
        int(code_match.group(1)), name_match.group(1) if name_match else "", message
    )


@dataclass
class Reply:
    """An HTTP response: status, body, headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Statement:
    sql: str
    insert_format: str | None = None  # set for ``INSERT ... FORMAT x`` followed by data
    data: bytes = b""


def _word_at(text: bytes, i: int) -> bytes:
    j = i
    while j < len(text) and (chr(text[j]).isalnum() or text[j] == 0x5F):
        j += 1
    return text[i:j]


def _split_insert(full: bytes) -> _Statement | None:
    """Split ``INSERT ... FORMAT fmt\\n<data>`` into statement, format and data.

    Scans the statement head (skipping quotes and comments) for the first top-level FORMAT,
    stopping at VALUES/SELECT/WITH, whose data is part of the SQL. Data starts after spaces
    and one newline following the format name, exactly as ClickHouse's parser does, so a
    binary body that begins with whitespace bytes is kept intact.
    """
    head = full.lstrip()
    if _word_at(head, 0).upper() != b"INSERT":
        return None
    offset = len(full) - len(head)
    i, n = 0, len(head)
    while i < n:
        c = head[i]
        if c in b"'\"`":
            i = skip_quoted(head, i)
        elif head.startswith(b"--", i) or c == 0x23:  # -- and # comments
            end = head.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif head.startswith(b"/*", i):
            end = head.find(b"*/", i + 2)
            i = n if end < 0 else end + 2
        elif chr(c).isalpha() or c == 0x5F:
            word = _word_at(head, i)
            upper = word.upper()
            if upper in (b"VALUES", b"SELECT", b"WITH"):
                return None
            if upper == b"FORMAT":
                j = i + len(word)
                while j < n and head[j] in b" \t\r\n\f":
                    j += 1
                fmt = _word_at(head, j)
                if not fmt:
                    return None
                k = j + len(fmt)
                while k < n and head[k] in b" \t\f":
                    k += 1
                if k < n and head[k] == 0x0D:
                    k += 1
                if k < n and head[k] == 0x0A:
                    k += 1
                sql = head[:i].decode("utf-8").rstrip().rstrip(";")
                return _Statement(sql, fmt.decode(), full[offset + k :])
            i += len(word)
        else:
            i += 1
    return None


_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)


def _result_format(sql: str, default: str) -> str:
    match = _TRAILING_FORMAT.search(sql[-300:])
    return match.group(1) if match else default


def _is_read(sql: str) -> bool:
    stripped = re.sub(r"^(\s+|--[^\n]*\n|/\*.*?\*/)+", "", sql, flags=re.DOTALL)
    return stripped[:12].upper().startswith(_READ_VERBS)


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _decompress(encoding: str, body: bytes) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "lz4":
            import lz4.frame

            return bytes(lz4.frame.decompress(body))
        if encoding == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]
            except ImportError:
                from backports import zstd  # type: ignore[no-redef]
            return bytes(zstd.decompress(body))
    except ImportError as exc:
        raise ClickHouseError(
            336, "UNKNOWN_COMPRESSION_METHOD", f"Content-Encoding {encoding} needs {exc.name}"
        ) from exc
    except Exception as exc:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"cannot decompress the {encoding} body: {exc}", 400
        ) from exc
    raise ClickHouseError(
        336, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}"
    )


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (ClickHouse reads query + params)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        if part.get_filename() is not None:
            raise ClickHouseError(
                48, "NOT_IMPLEMENTED", "external data (file form fields) is not supported here"
            )
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload.decode("utf-8") if isinstance(payload, bytes) else ""
    return fields


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
            self._check_origin(hdrs)
            user = self._authenticate(hdrs, params)
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
            return self._error_reply(err, base)
        except Exception as exc:  # a bug here must still answer, as a server error
            log.exception("chDB endpoint: unexpected error on %s %s", method, target[:200])
            return self._error_reply(ClickHouseError(1001, "STD_EXCEPTION", repr(exc)), base)

    def _error_reply(self, err: ClickHouseError, base: dict[str, str]) -> Reply:
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

    def _check_origin(self, hdrs: Mapping[str, str]) -> None:
        origin = hdrs.get("origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins:
            raise ClickHouseError(
                497,
                "ACCESS_DENIED",
                f"requests from the web origin {origin[:100]!r} are refused; allow it with "
                "`sentryml store serve --allow-origin ORIGIN`",
            )

    def _authenticate(self, hdrs: Mapping[str, str], params: Mapping[str, str]) -> ServeUser:
        name, password = "", ""
        auth = hdrs.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError as exc:
                raise ClickHouseError(
                    516, "AUTHENTICATION_FAILED", "malformed basic auth header"
                ) from exc
        elif auth:
            raise ClickHouseError(
                516, "AUTHENTICATION_FAILED", "only basic auth and X-ClickHouse-User are supported"
            )
        elif "x-clickhouse-user" in hdrs:
            name, password = hdrs["x-clickhouse-user"], hdrs.get("x-clickhouse-key", "")
        elif "user" in params:
            name, password = params["user"], params.get("password", "")
        if not name:
            raise ClickHouseError(
                194,
                "REQUIRED_PASSWORD",
                "this endpoint needs credentials: HTTP basic auth or the X-ClickHouse-User / "
                "X-ClickHouse-Key headers (SENTRYML_STORE_USERNAME / SENTRYML_STORE_PASSWORD)",
            )
        user = self.users.get(name)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            raise ClickHouseError(
                516,
                "AUTHENTICATION_FAILED",
                f"{name}: Authentication failed: password is incorrect, or "
                "there is no user with such name",
            )
        return user

    def _settings(self, params: Mapping[str, str]) -> dict[str, str]:
        settings = {}
        for key, value in params.items():
            if key in _TRANSPORT_PARAMS or key.startswith("param_"):
                continue
            if not _SETTING.match(key):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting {key!r}")
            settings[key] = value
        return settings

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
        settings = self._settings(params)
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


class _Conn:
    """A chDB connection and what is known of its state, so a request changes only the
    database and settings that differ from the previous one (usually none).

    ``own_db`` and the session's own settings are what SET/USE statements chose;
    ``overrides`` are per-query settings from URL parameters now in effect on top, each
    with the expression that restores the session's own value.
    """

    def __init__(self, path: Path, readonly: bool) -> None:
        self.session = chdb.session.Session(str(path))
        self.readonly = readonly
        if readonly:
            # As a ClickHouse server runs GET requests: no writes, no settings changes.
            self.session.query("SET readonly = 1")
        self.own_db = self.db = "default"
        self.overrides: dict[str, tuple[str, str]] = {}
        self.own_settings_default = True  # no SET statement has run here
        self.broken = False  # its state is unknown: close it, never reuse it
        self.timeout_s = 60.0
        self.last_used = time.monotonic()

    def _q(self, sql: str) -> None:
        self.session.query(sql, "TabSeparated")

    def _own_values(self, names: list[str]) -> dict[str, str]:
        if not names or self.own_settings_default:
            return dict.fromkeys(names, "DEFAULT")
        result = self.session.query(
            "SELECT name, value, changed FROM system.settings WHERE has({names:Array(String)}, name)",
            "JSONCompact",
            params={"names": "[" + ",".join(map(_literal, names)) + "]"},
        )
        found = {
            n: _literal(v) if c else "DEFAULT" for n, v, c in json.loads(result.bytes())["data"]
        }
        return {n: found.get(n, "DEFAULT") for n in names}

    def prepare(self, database: str, settings: Mapping[str, str]) -> None:
        """Select the request's database and settings (per query, as ClickHouse does)."""
        try:
            target = database or self.own_db
            if target != self.db:
                self.db = ""  # unknown until USE succeeds
                self._q(f"USE {_ident(target)}")
                self.db = target
            changes = [
                f"{name} = {restore}"
                for name, (_, restore) in self.overrides.items()
                if name not in settings
            ]
            restores = self._own_values([n for n in settings if n not in self.overrides])
            wanted: dict[str, tuple[str, str]] = {}
            for name, value in settings.items():
                current = self.overrides.get(name)
                wanted[name] = (value, current[1] if current else restores[name])
                if current is None or current[0] != value:
                    changes.append(f"{name} = {_literal(value)}")
            if changes:
                self._q("SET " + ", ".join(changes))
            self.overrides = wanted
        except RuntimeError:
            self._recover()
            raise

    def revert(self) -> None:
        """Back to the session's own database and settings."""
        self.prepare("", {})

    def absorb(self, sql: str) -> None:
        """Learn what a SET/USE statement changed in the session."""
        if re.match(r"\s*USE\b", sql, re.IGNORECASE):
            current = self.session.query("SELECT currentDatabase()", "TabSeparated")
            self.own_db = self.db = current.bytes().decode().strip()
        if re.match(r"\s*SET\b", sql, re.IGNORECASE):
            self.own_settings_default = False

    def _recover(self) -> None:
        """After a failed USE/SET: undo overrides one by one, or give the connection up."""
        try:
            for name, (_, restore) in self.overrides.items():
                self._q(f"SET {name} = {restore}")
            self.overrides = {}
            self._q(f"USE {_ident(self.own_db)}")
            self.db = self.own_db
        except RuntimeError:
            log.warning("a chDB connection's state could not be reset; closing it")
            self.broken = True

    def insert(self, sql: str, fmt: str, data: bytes) -> tuple[int, int]:
        """Insert ``data`` (in format ``fmt``); ``(rows, bytes)`` written.

        Not through chDB's streaming ``send_insert``: it reports success for rows the engine
        refuses (a CHECK constraint, TOO_MANY_PARTS ...), and they vanish with a 200. The
        body goes through an owner-only spool file read with ``FROM INFILE`` instead, so
        the engine's error reaches the client, which can retry or bisect.
        """
        with tempfile.NamedTemporaryFile(dir=_spool_dir(), prefix="insert-") as spool:
            spool.write(data)
            spool.flush()
            result = self.session.query(
                f"{sql} FROM INFILE {_literal(spool.name)} COMPRESSION 'none' FORMAT {fmt}",
                "TabSeparated",
            )
        return result.rows_written(), result.bytes_written()

    def close(self) -> None:
        self.session.close()


@functools.cache
def _spool_dir() -> str:
    """A private folder (mode 0700) for insert bodies, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="sentryml-chdb-spool-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sentryml-chdb"
    engine: ChdbEngine
    max_body_bytes: int

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every reply.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                total += size
                if total > self.max_body_bytes:
                    raise ClickHouseError(202, "QUERY_IS_TOO_LARGE", "request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body_bytes:
            raise ClickHouseError(202, "QUERY_IS_TOO_LARGE", "request body too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ClickHouseError, ValueError) as exc:
            self.close_connection = True  # the rest of the body is unread
            err = (
                exc
                if isinstance(exc, ClickHouseError)
                else ClickHouseError(0, "", f"malformed request body: {exc}", status=400)
            )
            reply = self.engine._error_reply(err, {})
        else:
            reply = self.engine.handle(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class ChdbHTTPServer:
    """A threaded HTTP server around :class:`ChdbEngine` (see the module docs)."""

    def __init__(
        self,
        path: str | Path,
        host: str = "127.0.0.1",
        port: int = 8123,
        *,
        users: Iterable[ServeUser],
        allowed_origins: Iterable[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_sessions: int = 256,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self.engine = ChdbEngine(
            path, users, allowed_origins=allowed_origins, max_sessions=max_sessions
        )
        handler = type(
            "Handler", (_Handler,), {"engine": self.engine, "max_body_bytes": max_body_bytes}
        )
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError:
            self.engine.close()
            raise
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`close` (or an exception) stops it."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ChdbHTTPServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="chdb-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the chDB connections."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self.engine.close()

    def __enter__(self) -> ChdbHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8123,
    users: Iterable[ServeUser] = (),
    on_ready: Callable[[ChdbHTTPServer], None] | None = None,
    allowed_origins: Iterable[str] = (),
) -> None:
    """Serve ``path`` until interrupted (Ctrl-C or SIGTERM); what ``sentryml store serve`` runs."""
    import signal

    server = ChdbHTTPServer(path, host, port, users=users, allowed_origins=allowed_origins)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping the chDB HTTP endpoint")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
