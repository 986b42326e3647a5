"""The store on both backends: chDB in-process, and clickhouse-connect over ClickHouse's HTTP
protocol (served by ``workers/store/server.py``, since no ClickHouse server installs here).

Every test that takes ``store`` runs once per backend: idempotent migrations, every table of
every migration, parameterised queries, batched deduplicated inserts (with the flush_log →
window_counts view), and the errors each backend raises.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.events import Alert
from tests.conftest import HTTP_READER, http_writer_settings
from workers.store import (
    InvalidStoreURL,
    QueryFailed,
    Store,
    StoreSettings,
    StoreUnavailable,
    migrations,
    open_store,
)
from workers.store.params import format_datetime, placeholder_types, to_text

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# Rows the TTLs keep: "now" to the millisecond, as DateTime64(3) stores it.
_now = datetime.now(UTC)
RECENT = _now.replace(microsecond=_now.microsecond // 1000 * 1000)
NASTY = "it's a \\ back\tslash\nnewline {x:String} ünï 🙂 '; DROP TABLE alerts; --"


@pytest.fixture(params=["chdb", "clickhouse"])
def backend_settings(
    request: pytest.FixtureRequest, store_settings: StoreSettings
) -> StoreSettings:
    """Store settings for one backend, with a fresh database name."""
    if request.param == "chdb":
        return store_settings
    url = request.getfixturevalue("clickhouse_http_url")
    return http_writer_settings(url, store_settings.database)


@pytest.fixture
def store(backend_settings: StoreSettings) -> Iterator[Store]:
    """A migrated, empty database on each backend (overrides the chDB-only conftest one)."""
    s = open_store(backend_settings)
    s.migrate()
    try:
        yield s
    finally:
        s.command(f"DROP DATABASE IF EXISTS {backend_settings.database}")
        s.close()


def test_migrations_are_idempotent(store: Store, backend_settings: StoreSettings) -> None:
    assert store.migrate() == []  # the fixture already applied them
    with open_store(backend_settings) as again:  # a second process, say
        assert again.migrate() == []
    tables = {r[0] for r in store.query("SHOW TABLES").rows}
    expected = {
        "inference_logs", "window_counts", "drift_stats", "judge_scores", "alerts",
        "golden_runs", "baselines", "retrain_jobs", "adapters", "feedback",
    }  # fmt: skip
    assert expected <= tables
    assert store.query("SELECT count() FROM schema_migrations").scalar() == len(migrations())
    applied = store.query("SELECT version, name FROM schema_migrations ORDER BY version").rows
    assert applied == [(v, n) for v, n, _ in migrations()]


def test_insert_and_select_with_bound_parameters(store: Store) -> None:
    alert = Alert(
        alert_id="a1", ts=NOW, base_model="m'; DROP TABLE alerts; --", kind="embedding_drift",
        severity="warn", value=0.15, threshold=0.1, sample_size=42, message="psi 0.15",
    )  # fmt: skip
    assert store.insert("alerts", [alert.to_row()]) == 1
    result = store.query(
        "SELECT alert_id, ts, value, sample_size, p_value FROM alerts WHERE base_model = {m:String}",
        {"m": alert.base_model},
    )
    assert result.rows == [("a1", NOW, 0.15, 42, None)]
    assert result.columns == ["alert_id", "ts", "value", "sample_size", "p_value"]
    assert result.types == [
        "String",
        "DateTime64(3, 'UTC')",
        "Float64",
        "UInt64",
        "Nullable(Float64)",
    ]
    assert result.dicts()[0]["alert_id"] == "a1"


def test_dedup_token_makes_a_retried_insert_count_once(store: Store) -> None:
    row = {"base_model": "m", "adapter_version": "v", "baseline_id": "b", "feature": "f",
           "bucket": NOW, "bin": 1, "count": 5}  # fmt: skip
    store.insert("window_counts", [row], dedup_token="w1:p0:0-99")
    store.insert("window_counts", [row], dedup_token="w1:p0:0-99")  # the retry
    store.insert("window_counts", [row], dedup_token="w1:p0:100-199")
    assert store.query("SELECT sum(count) FROM window_counts").scalar() == 10
    # A token never sticks to the next insert (that would silently drop its rows).
    store.insert("window_counts", [row])
    store.insert("window_counts", [{**row, "count": 1}])
    assert store.query("SELECT sum(count) FROM window_counts").scalar() == 16


def test_flush_log_feeds_window_counts_atomically(store: Store) -> None:
    flush = {
        "consumer_group": "g", "topic": "logs", "partition": 2, "first_offset": 10,
        "last_offset": 19, "worker_id": "w", "events": 10,
        "counts.base_model": ["m", "m"], "counts.adapter_version": ["v", "v"],
        "counts.baseline_id": ["b", "b"], "counts.feature": ["embedding", "embedding"],
        "counts.bucket": [NOW, NOW], "counts.bin": [0, 3], "counts.count": [4, 6],
    }  # fmt: skip
    store.insert("flush_log", [flush], dedup_token="g:logs:2:10-19")
    store.insert("flush_log", [flush], dedup_token="g:logs:2:10-19")
    rows = store.query("SELECT bin, sum(count) FROM window_counts GROUP BY bin ORDER BY bin").rows
    assert rows == [(0, 4), (3, 6)]
    # The worker's resume query: the last offset flushed per partition.
    resume = store.query(
        "SELECT partition, max(last_offset) FROM flush_log WHERE consumer_group = {g:String} "
        "AND topic = {t:String} AND partition IN {ps:Array(UInt32)} GROUP BY partition",
        {"g": "g", "t": "logs", "ps": [1, 2]},
    )
    assert resume.rows == [(2, 19)]


def _sample(ch_type: str, salt: str, i: int) -> Any:
    """A value of ``ch_type`` that survives a round trip exactly (distinct per table)."""
    if ch_type.startswith("Nullable("):
        return None if i % 2 else _sample(ch_type[9:-1], salt, i)
    if ch_type.startswith("LowCardinality("):
        return _sample(ch_type[15:-1], salt, i)
    if ch_type.startswith("Array("):
        inner = ch_type[6:-1]
        return [_sample(inner, salt, i), _sample(inner, salt, i + 1)]
    if ch_type == "String":
        return f"{salt}-{i} {NASTY}"
    if re.fullmatch(r"U?Int\d+", ch_type):
        return (i + 1) * (3 if ch_type.startswith("U") else -3) % 200
    if ch_type.startswith("Float"):
        return 0.25 * (i + 1)
    if ch_type.startswith("DateTime64"):
        return RECENT - timedelta(milliseconds=i)
    if ch_type.startswith("DateTime"):
        return RECENT.replace(microsecond=0) - timedelta(seconds=i)
    if ch_type == "Date":
        return RECENT.date()
    raise AssertionError(f"no sample value for {ch_type}: extend _sample")


def test_every_table_round_trips_every_column(store: Store) -> None:
    """Insert one row of distinct values into every table of every migration, read it back."""
    tables = store.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name"
    ).rows
    assert len(tables) >= 12
    for (table,) in tables:
        columns = [
            (name, ch_type)
            for name, ch_type, default_kind in store.query(
                "SELECT name, type, default_kind FROM system.columns "
                "WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
                {"t": table},
            ).rows
            if default_kind not in ("MATERIALIZED", "ALIAS")
        ]
        row = {name: _sample(ch_type, table, i) for i, (name, ch_type) in enumerate(columns)}
        store.insert(table, [row], dedup_token=f"round-trip-{table}")
        names = ", ".join(f"`{name}`" for name, _ in columns)
        first = columns[0][0]
        got = store.query(
            f"SELECT {names} FROM {table} WHERE `{first}` = {{v:{columns[0][1]}}}",
            {"v": row[first]},
        ).dicts()
        assert got == [row], table


def test_parameters_bind_exactly(store: Store) -> None:
    """Strings, arrays, datetimes and NULLs bind the same on both backends (never as SQL)."""
    fine = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    result = store.query(
        "SELECT {s:String} AS s, {a:Array(String)} AS a, {n:Array(UInt32)} AS n, "
        "{t:DateTime('UTC')} AS t, {t64:DateTime64(3, 'UTC')} AS t64, "
        "{ts:Array(DateTime('UTC'))} AS ts, {d:Date} AS d, {x:Nullable(String)} AS x, "
        "{f:Float64} AS f, {b:Bool} AS b, {i:Int64} AS i",
        {
            "s": NASTY,
            "a": [NASTY, "", "'"],
            "n": [1, 2, 3],
            "t": fine,
            "t64": fine.replace(tzinfo=None),  # naive datetimes are UTC
            "ts": [fine, NOW],
            "d": date(2026, 11, 1),
            "x": None,
            "f": -0.5,
            "b": True,
            "i": -(2**40),
        },
    )
    assert result.dicts() == [
        {
            "s": NASTY,
            "a": [NASTY, "", "'"],
            "n": [1, 2, 3],
            "t": fine.replace(microsecond=0),  # DateTime holds whole seconds
            "t64": fine.replace(microsecond=123000),
            "ts": [fine.replace(microsecond=0), NOW],
            "d": date(2026, 11, 1),
            "x": None,
            "f": -0.5,
            "b": True,
            "i": -(2**40),
        }
    ]


def test_command_binds_parameters_and_settings(store: Store) -> None:
    store.command(
        "INSERT INTO retrain_jobs (ts, job_id, base_model, adapter_version, decision, reason, "
        "details) VALUES ({ts:DateTime64(3, 'UTC')}, {j:String}, 'm', 'v', 'started', {r:String}, '')",
        {"ts": NOW, "j": "job-1", "r": NASTY},
        settings={"insert_deduplication_token": "cmd-1"},
    )
    rows = store.query("SELECT job_id, reason, ts FROM retrain_jobs").rows
    assert rows == [("job-1", NASTY, NOW)]


def test_bad_sql_raises_query_failed(store: Store) -> None:
    with pytest.raises(QueryFailed, match="no_such_table"):
        store.query("SELECT * FROM no_such_table")
    with pytest.raises(QueryFailed, match=r"SYNTAX_ERROR|Syntax error"):
        store.command("CREATE TABLE (")
    with pytest.raises(QueryFailed, match=r"BAD_QUERY_PARAMETER|cannot be parsed"):
        store.query("SELECT {n:UInt8}", {"n": "not a number"})
    with pytest.raises(QueryFailed):
        store.insert("no_such_table", [{"a": 1}])


def test_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidStoreURL, match="chdb:///path"):
        open_store(StoreSettings(url="postgres://x"))


def test_identifiers_are_validated(store: Store) -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        store.insert("alerts; DROP TABLE x", [{"a": 1}])


def test_unreachable_server_raises_store_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnavailable, match="unreachable"):
        open_store(StoreSettings(url=f"http://127.0.0.1:{port}"))


def test_both_backends_share_one_folder(
    store_settings: StoreSettings, clickhouse_http_url: str
) -> None:
    """What the worker writes in-process, `sentryml sql` reads over HTTP, and back."""
    with (
        open_store(store_settings) as embedded,
        open_store(http_writer_settings(clickhouse_http_url, store_settings.database)) as http,
    ):
        try:
            assert embedded.migrate() != []
            assert http.migrate() == []
            row = {"base_model": "m", "adapter_version": "v", "baseline_id": "b",
                   "feature": "f", "bucket": NOW, "bin": 1, "count": 5}  # fmt: skip
            embedded.insert("window_counts", [row], dedup_token="t1")
            http.insert("window_counts", [row], dedup_token="t1")  # same token: deduplicated
            http.insert("window_counts", [{**row, "count": 2}], dedup_token="t2")
            sql = "SELECT sum(count) FROM window_counts"
            assert embedded.query(sql).scalar() == http.query(sql).scalar() == 7
        finally:
            embedded.command(f"DROP DATABASE IF EXISTS {store_settings.database}")


def test_read_only_user_reads_but_cannot_write(
    store_settings: StoreSettings, clickhouse_http_url: str
) -> None:
    writer_settings = http_writer_settings(clickhouse_http_url, store_settings.database)
    name, password = HTTP_READER
    reader_settings = writer_settings.model_copy(
        update={"username": name, "password": SecretStr(password)}
    )
    with open_store(writer_settings) as writer:
        try:
            writer.migrate()
            with open_store(reader_settings) as reader:
                assert reader.query("SELECT count() FROM alerts").scalar() == 0
                assert reader.migrate() == []  # nothing to do, so nothing refused
                with pytest.raises(QueryFailed, match=r"READONLY|readonly"):
                    reader.insert("alerts", [{"alert_id": "x"}])
                with pytest.raises(QueryFailed, match=r"READONLY|readonly"):
                    reader.command("DROP TABLE alerts")
        finally:
            writer.command(f"DROP DATABASE IF EXISTS {store_settings.database}")
    wrong = reader_settings.model_copy(update={"password": SecretStr("nope")})
    with pytest.raises(QueryFailed, match="SENTRYML_STORE_PASSWORD"):
        open_store(wrong)


def test_a_second_chdb_folder_in_one_process_is_a_clear_error(
    store_settings: StoreSettings, tmp_path: Path
) -> None:
    """chDB allows one folder per process; the error says what to do instead."""
    with open_store(store_settings) as first:  # this process now holds the session folder
        first.command(f"DROP DATABASE IF EXISTS {store_settings.database}")
        with pytest.raises(StoreUnavailable, match="one data folder per process") as info:
            open_store(StoreSettings(url=f"chdb://{tmp_path / 'other'}"))
    assert "sentryml store serve" in str(info.value)


def test_param_text_forms() -> None:
    assert placeholder_types("a = {a:String} AND t > {t:DateTime64(3, 'UTC')}") == {
        "a": "String",
        "t": "DateTime64(3, 'UTC')",
    }
    assert to_text("a\tb\\c'") == "a\\tb\\\\c\\'"
    assert to_text(["x'", None], "Array(Nullable(String))") == "['x\\'',NULL]"
    assert to_text(None) == "\\N"
    moment = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert format_datetime(moment, "DateTime('UTC')") == "2026-01-02 03:04:05"
    assert format_datetime(moment, "Nullable(DateTime64(3))") == "2026-01-02 03:04:05.600000"
    with pytest.raises(TypeError, match="cannot bind"):
        to_text(object())


def test_store_errors_are_told_transient_or_deterministic() -> None:
    """Only errors that say "not now" are retried; a rejection of the data is not."""
    from workers.store.exceptions import (
        QueryFailed,
        StoreMisconfigured,
        StoreUnavailable,
        translate,
    )

    transient = [
        "Code: 252. DB::Exception: Too many parts (3000). (TOO_MANY_PARTS)",
        "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)",
        "Code: 159. DB::Exception: Timeout exceeded: elapsed 30 s. (TIMEOUT_EXCEEDED)",
        "HTTPDriver for http://ch:8123 received ClickHouse error code 202",
        "HTTP driver received HTTP status 502, server response: Bad Gateway",
    ]
    deterministic = [
        "Code: 469. DB::Exception: Constraint `c` for table t is violated. (VIOLATED_CONSTRAINT)",
        "Code: 27. DB::Exception: Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
        "Unable to create native array for column `counts.bucket`: error",
    ]
    assert [type(translate(m)) for m in transient] == [StoreUnavailable] * len(transient)
    assert [type(translate(m)) for m in deterministic] == [QueryFailed] * len(deterministic)
    assert type(translate("server said no", code=241)) is StoreUnavailable
    # No write can succeed until an operator acts: retried like an outage, never bisected.
    missing = translate("Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE)")
    assert isinstance(missing, StoreMisconfigured)
    assert isinstance(missing, StoreUnavailable) and isinstance(missing, QueryFailed)
