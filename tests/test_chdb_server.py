"""The ClickHouse-HTTP endpoint over chDB (`sentryml store serve`), spoken to by real clients:
clickhouse-connect and plain HTTP requests, plus the CLI in its own process."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from tests.conftest import HTTP_READER, HTTP_WRITER, REPO, _free_port, wait_for
from workers.store import StoreSettings, open_store
from workers.store._server_request import _split_insert
from workers.store.server import ServeUser, parse_user


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _client(url: str, **options: object) -> Client:
    """clickhouse-connect logged in as the endpoint's writer."""
    user, password = HTTP_WRITER
    return clickhouse_connect.get_client(
        port=_port(url), username=user, password=password, **options
    )


def _http(
    url: str,
    sql: str | bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/",
    auth: tuple[str, str] | None = HTTP_WRITER,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request: POST when there is a body, else GET; as ``auth`` (basic auth)
    unless ``headers`` or ``params`` carry credentials of their own."""
    target = url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    body = sql.encode() if isinstance(sql, str) else sql
    headers = dict(headers or {})
    own = {"Authorization", "X-ClickHouse-User"} & set(headers) or "user" in (params or {})
    if auth is not None and not own:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(target, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


@pytest.fixture
def database(clickhouse_http_url: str) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:12]}"
    _http(clickhouse_http_url, f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _http(clickhouse_http_url, f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def client(clickhouse_http_url: str, database: str) -> Iterator[Client]:
    c = _client(clickhouse_http_url, database=database, autogenerate_session_id=False)
    try:
        yield c
    finally:
        c.close()


def test_plain_http_like_curl(clickhouse_http_url: str) -> None:
    assert _http(clickhouse_http_url, path="/ping")[::2] == (200, b"Ok.\n")
    status, headers, body = _http(clickhouse_http_url, params={"query": "SELECT 1 + 1"})
    assert (status, body) == (200, b"2\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"]
    # Query parameter and body together: the body is appended after a newline.
    status, headers, body = _http(
        clickhouse_http_url,
        "FORMAT JSONEachRow",
        params={"query": "SELECT {x:String} AS x", "param_x": "a\\tb"},
    )
    assert (status, body) == (200, b'{"x":"a\\tb"}\n')
    assert headers["Content-Type"].startswith("application/x-ndjson")
    assert _http(clickhouse_http_url, path="/nope")[0] == 404


def test_errors_use_clickhouse_codes_text_and_status(clickhouse_http_url: str) -> None:
    status, headers, body = _http(clickhouse_http_url, "SELECT * FROM system.no_such_table")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception: ")
    assert b"(UNKNOWN_TABLE)" in body and b"(version " in body
    status, headers, _ = _http(clickhouse_http_url, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    # A GET only reads, as on ClickHouse.
    status, headers, _ = _http(clickhouse_http_url, params={"query": "CREATE DATABASE nope"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    status, headers, body = _http(clickhouse_http_url, "SELECT 1", params={"user": "mallory"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    assert b"AUTHENTICATION_FAILED" in body
    # clickhouse-connect turns them into its DatabaseError, with the code.
    c = _client(clickhouse_http_url)
    with pytest.raises(DatabaseError) as info:
        c.query("SELECT * FROM system.no_such_table")
    assert info.value.code == 60  # type: ignore[attr-defined]


def test_every_way_to_authenticate(clickhouse_http_url: str) -> None:
    name, password = HTTP_READER
    basic = base64.b64encode(f"{name}:{password}".encode()).decode()
    ways: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"Authorization": f"Basic {basic}"}, {}),
        ({"X-ClickHouse-User": name, "X-ClickHouse-Key": password}, {}),
        ({}, {"user": name, "password": password}),
    ]
    for headers, params in ways:
        status, _, body = _http(clickhouse_http_url, "SELECT 1", params, headers)
        assert (status, body) == (200, b"1\n")
        status, hdrs, _ = _http(clickhouse_http_url, "CREATE DATABASE x", params, headers)
        assert (status, hdrs["X-ClickHouse-Exception-Code"]) == (403, "164")
    bad = {"X-ClickHouse-User": name, "X-ClickHouse-Key": "wrong"}
    assert _http(clickhouse_http_url, "SELECT 1", headers=bad)[0] == 403


@pytest.mark.parametrize("width", [9, 10, 32])  # first Native byte: tab, newline, space
def test_native_inserts_keep_a_binary_body_that_starts_with_whitespace(
    client: Client, width: int
) -> None:
    cols = ", ".join(f"c{i} UInt32" for i in range(width))
    client.command(f"CREATE TABLE t{width} ({cols}) ENGINE = MergeTree ORDER BY c0")
    rows = [[r * 100 + i for i in range(width)] for r in range(3)]
    client.insert(f"t{width}", rows, column_names=[f"c{i}" for i in range(width)])
    assert [
        list(r) for r in client.query(f"SELECT * FROM t{width} ORDER BY c0").result_rows
    ] == rows


def test_sessions_keep_state_and_nothing_leaks_without_one(
    clickhouse_http_url: str, database: str
) -> None:
    session = _client(clickhouse_http_url, session_id=f"s-{uuid.uuid4().hex}")
    stateless = _client(clickhouse_http_url, autogenerate_session_id=False)
    threads = "SELECT getSetting('max_threads')"
    default = stateless.command(threads)

    session.command("SET max_threads = 3")
    stateless.command("SET max_threads = 5")  # without a session: no lasting effect
    assert session.command(threads) == 3
    assert stateless.command(threads) == default
    # A per-query setting applies to that query only, then the session's own value is back.
    assert session.command(threads, settings={"max_threads": 1}) == 1
    assert session.command(threads) == 3

    session.command(f"USE {database}")
    assert session.command("SELECT currentDatabase()") == database
    assert stateless.command("SELECT currentDatabase()") == "default"
    session.command("CREATE TEMPORARY TABLE tmp (a UInt8)")
    session.command("INSERT INTO tmp VALUES (7)")
    assert session.command("SELECT sum(a) FROM tmp") == 7
    # (In the session's database: chDB's default database is refused, see test_security.py.)
    outside = _client(clickhouse_http_url, database=database, autogenerate_session_id=False)
    with pytest.raises(DatabaseError, match="tmp"):
        outside.command("SELECT sum(a) FROM tmp")
    outside.close()

    status, headers, _ = _http(
        clickhouse_http_url, "SELECT 1", {"session_id": "never-made", "session_check": "1"}
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "372")
    session.close()
    stateless.close()


def test_a_dedup_token_never_outlives_its_insert(client: Client) -> None:
    client.command(
        "CREATE TABLE d (a UInt32) ENGINE = MergeTree ORDER BY a "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    client.insert("d", [[1]], column_names=["a"], settings={"insert_deduplication_token": "t"})
    client.insert("d", [[2]], column_names=["a"], settings={"insert_deduplication_token": "t"})
    client.insert("d", [[3]], column_names=["a"])  # must not inherit token "t"
    assert client.command("SELECT groupArray(a) FROM (SELECT a FROM d ORDER BY a)") == "[1,3]"


@pytest.mark.parametrize("compress", ["gzip", "lz4", "zstd"])
def test_compressed_bodies_and_form_encoded_parameters(
    clickhouse_http_url: str, database: str, compress: str
) -> None:
    c = _client(
        clickhouse_http_url,
        database=database,
        compress=compress,
        form_encode_query_params=True,
        autogenerate_session_id=False,
    )
    c.command("CREATE TABLE c (k String, v Float64) ENGINE = MergeTree ORDER BY k")
    c.insert("c", [["a", 1.5], ["b\t'", 2.5]], column_names=["k", "v"])
    result = c.query("SELECT v FROM c WHERE k IN {ks:Array(String)}", parameters={"ks": ["b\t'"]})
    assert result.result_rows == [(2.5,)]
    c.close()


def test_insert_statement_splitting() -> None:
    data = b"\n\t binary"
    got = _split_insert(b" INSERT INTO `FORMAT` (`a b`) /* FORMAT x */ FORMAT Native\n" + data)
    assert got is not None
    assert (got.sql, got.insert_format, got.data) == (
        "INSERT INTO `FORMAT` (`a b`) /* FORMAT x */",
        "Native",
        data,
    )
    assert _split_insert(b"INSERT INTO t VALUES ('FORMAT Native')") is None
    assert _split_insert(b"INSERT INTO t SELECT 1 FORMAT Native") is None
    assert _split_insert(b"SELECT 1 FORMAT Native") is None


def test_users_are_validated() -> None:
    assert parse_user("w:p:q") == ServeUser("w", "p:q")
    assert parse_user("r:x", readonly=True) == ServeUser("r", "x", readonly=True)
    with pytest.raises(ValueError, match="user name"):
        parse_user("bad name:x")
    with pytest.raises(ValueError, match="has no password"):
        parse_user("r", readonly=True)


@pytest.mark.slow
def test_serve_command_shares_one_folder_between_processes(tmp_path: Path) -> None:
    """`sentryml store serve` holds the folder; other processes use it over HTTP."""
    folder, backups, port = tmp_path / "chdb", tmp_path / "backups", _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    target = f"{folder}?backups.allowed_path={backups}"
    server = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "store", "serve", "--path", target,
         "--port", str(port), "--user", "writer:w-pw", "--readonly-user", "reader:r-pw"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert server.poll() is None, server.communicate()[0]
            try:
                return _http(url, path="/ping")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=90, what="sentryml store serve")
        writer = StoreSettings(url=url, username="writer", password=SecretStr("w-pw"))
        with open_store(writer) as store:
            assert store.migrate() != []
            store.insert("alerts", [{"alert_id": "a1", "message": "m"}])
            # The backup procedure of docs/operations.md, on the embedded store.
            store.command(f"BACKUP DATABASE sentryml TO File('{backups}/full')")
            store.command(f"RESTORE DATABASE sentryml AS restored FROM File('{backups}/full')")
        reader = StoreSettings(url=url, username="reader", password=SecretStr("r-pw"))
        with open_store(reader) as store:
            assert store.query("SELECT alert_id FROM alerts").rows == [("a1",)]
            assert store.query("SELECT alert_id FROM restored.alerts").rows == [("a1",)]
        # A process that opens the folder itself is told to use the endpoint instead.
        other = subprocess.run(
            [sys.executable, "-c",
             f"from workers.store import open_store; open_store('chdb://{folder}')"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert other.returncode != 0
        assert "StoreUnavailable" in other.stderr
        assert "sentryml store serve" in other.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    assert f"SENTRYML_STORE_URL={url}" in output


def test_an_insert_the_engine_refuses_is_an_error_not_a_silent_loss(client: Client) -> None:
    """chDB's streaming insert answered 200 for rows a CHECK constraint refused, and they
    were gone; the client must see the refusal to retry or bisect."""
    client.command(
        "CREATE TABLE checked (a UInt32, CONSTRAINT small CHECK a < 10) "
        "ENGINE = MergeTree ORDER BY a"
    )
    with pytest.raises(DatabaseError, match=r"VIOLATED_CONSTRAINT|small"):
        client.insert("checked", [[1], [50]], column_names=["a"])
    assert client.command("SELECT count() FROM checked") == 0  # all or nothing, and said so
    client.insert("checked", [[1], [2]], column_names=["a"])
    summary = client.command("SELECT groupArray(a) FROM (SELECT a FROM checked ORDER BY a)")
    assert summary == "[1,2]"
