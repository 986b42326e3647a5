"""The store on chDB: idempotent migrations, parameterised queries, batched deduplicated inserts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.events import Alert
from streams.config import StoreSettings
from workers.store import InvalidStoreURL, QueryFailed, migrations, open_store

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_migrations_are_idempotent(store) -> None:
    assert store.migrate() == []  # the fixture already applied them
    tables = {r[0] for r in store.query("SHOW TABLES").rows}
    expected = {
        "inference_logs", "window_counts", "drift_stats", "judge_scores", "alerts",
        "golden_runs", "baselines", "retrain_jobs", "adapters", "feedback",
    }  # fmt: skip
    assert expected <= tables
    assert store.query("SELECT count() FROM schema_migrations").scalar() == len(migrations())


def test_insert_and_select_with_bound_parameters(store) -> None:
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


def test_dedup_token_makes_a_retried_insert_count_once(store) -> None:
    row = {"base_model": "m", "adapter_version": "v", "baseline_id": "b", "feature": "f",
           "bucket": NOW, "bin": 1, "count": 5}  # fmt: skip
    store.insert("window_counts", [row], dedup_token="w1:p0:0-99")
    store.insert("window_counts", [row], dedup_token="w1:p0:0-99")  # the retry
    store.insert("window_counts", [row], dedup_token="w1:p0:100-199")
    assert store.query("SELECT sum(count) FROM window_counts").scalar() == 10


def test_flush_log_feeds_window_counts_atomically(store) -> None:
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


def test_bad_sql_raises_query_failed(store) -> None:
    with pytest.raises(QueryFailed):
        store.query("SELECT * FROM no_such_table")


def test_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidStoreURL, match="chdb:///path"):
        open_store(StoreSettings(url="postgres://x"))


def test_identifiers_are_validated(store) -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        store.insert("alerts; DROP TABLE x", [{"a": 1}])
