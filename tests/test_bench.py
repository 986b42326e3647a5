"""Smoke test of the performance benchmarks (bench/): the cheapest pairs with tiny n.

Checks the shape of the result rows and that our PSI/JSD equal the reference library's on
the same bins. No timing assertions: the benchmarks report numbers, tests do not judge them.
"""

from __future__ import annotations

import json
import math

import pytest

from bench import drift_cost, producer
from bench.common import Row, markdown_table, write_results


def _check_row(row: Row) -> None:
    data = row.to_dict()
    for key in ("name", "ours", "reference", "ratio", "unit", "n", "machine", "better"):
        assert key in data, key
    assert row.n > 0
    assert row.ours is not None and math.isfinite(row.ours) and row.ours > 0
    assert row.reference is not None and row.reference > 0
    assert data["ratio"] == pytest.approx(row.ours / row.reference, rel=1e-3)


def test_drift_cost_matches_the_reference_on_the_same_bins(store) -> None:
    [row] = drift_cost.run((10_000,), n_reference=3_000, repeats=1, store=store)
    _check_row(row)
    assert row.unit == "ms" and row.better == "lower"
    assert row.n == 10_000
    extra = row.extra
    assert extra["abs_diff_psi"] <= 1e-9 and extra["abs_diff_jsd"] <= 1e-9
    assert extra["psi"] == pytest.approx(extra["reference_psi"], abs=1e-9)
    assert extra["psi"] > 0.2  # the planted shift (an emptied bin, novelty traffic) shows
    assert 0 < extra["window_counts_rows"] <= drift_cost.DAYS * 1440 * drift_cost.K_BINS


def test_drift_cost_data_is_deterministic() -> None:
    a = drift_cost.make_data(5_000, 1_000, seed=3)
    b = drift_cost.make_data(5_000, 1_000, seed=3)
    for x, y in zip(a, b, strict=True):
        assert (x == y).all()
    ref, raw, per_minute = a
    assert ref.sum() == 1_000 and raw.size == 5_000 and per_minute.sum() == 5_000
    assert (raw == 3).sum() == 0  # the emptied bin stays empty


@pytest.mark.kafka
def test_producer_pair_rows(kafka_bootstrap, tmp_path) -> None:
    rows = producer.run(kafka_bootstrap, n_events=1_000, rounds=2)
    assert [r.name for r in rows] == [
        "producer.throughput",
        "producer.throughput_prebuilt_event",
        "producer.throughput_ceiling",
        "producer.call_p50",
        "producer.call_p99",
    ]
    for row in rows:
        _check_row(row)
        assert row.n == 1_000
    assert rows[0].target_ratio == 0.5 and rows[0].meets_target is not None
    json_path, md_path = write_results(rows, machine={"cores": 2}, out_dir=tmp_path)
    payload = json.loads(json_path.read_text())
    assert [r["name"] for r in payload["rows"]] == [r.name for r in rows]
    assert payload["machine"] == {"cores": 2}
    table = markdown_table(rows)
    assert md_path.read_text().count("\n| ") == len(rows) + 1  # header + one line per row
    assert table.splitlines()[0].startswith("| benchmark | ours | reference | ratio")


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_round_robin_measures_both_sides_and_the_workers_own_split(
    kafka_bootstrap, chdb_dir, monkeypatch
) -> None:
    import bench.common
    from bench import worker

    # chDB allows one folder per process: the benchmark's stores go in the session's.
    monkeypatch.setattr(bench.common, "_CHDB_DIR", chdb_dir)
    events = worker.unique_events(400, seed=5)
    raw = worker.Side("raw-encode", events)
    full = worker.Side("minilm", events, worker.fit("minilm"))
    worker.round_robin(kafka_bootstrap, [raw, full], rounds=1, chunk=100, batches=3)
    assert len(raw.rates) == len(full.rates) == 1
    assert raw.rates[0] > 0 and full.rates[0] > 0
    assert raw.outside == [] and len(full.outside) == 1
    assert 0 < full.outside[0] < 1  # the worker's counters saw embedding and other work
    assert full.median_round(raw) == (full.rates[0], raw.rates[0])
