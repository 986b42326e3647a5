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

This module serves HTTP; the rest lives beside it: :mod:`workers.store._server_engine`
answers a request (:class:`ChdbEngine`), :mod:`workers.store._server_auth` has the users
and the credential and ``Origin`` checks, :mod:`workers.store._server_request` reads the
request (body, form fields, settings, ``INSERT ... FORMAT`` data),
:mod:`workers.store._server_conn` keeps one chDB connection's state and spools inserts,
and :mod:`workers.store._server_errors` speaks ClickHouse's errors.

>>> users = [ServeUser("writer", "s3cret")]                             # doctest: +SKIP
>>> server = ChdbHTTPServer("/tmp/sentryml-serve", port=0, users=users).start()  # doctest: +SKIP
>>> import clickhouse_connect                                          # doctest: +SKIP
>>> clickhouse_connect.get_client(port=server.port, username="writer",
...                               password="s3cret").command("SELECT 1")  # doctest: +SKIP
1
>>> server.close()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from workers.store._server_auth import ServeUser, parse_user
from workers.store._server_engine import ChdbEngine
from workers.store._server_errors import (
    ClickHouseError,
    Reply,
)

log = logging.getLogger(__name__)

__all__ = ["ChdbEngine", "ChdbHTTPServer", "Reply", "ServeUser", "parse_user", "serve"]

DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024


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
            reply = self.engine.error_reply(err, {})
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
