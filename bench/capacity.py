"""Capacity plan from measured rates: ``python -m bench.capacity [--requests-per-day 1e7]``.

Reads ``bench/results/results.json`` (``make bench``) and prints, with the arithmetic shown,
how many worker processes, partitions and ClickHouse nodes a deployment needs for a daily
request volume with a peak factor. Every input is a measured number from that file (cited
by row name) except the load itself, the peak factor and the headroom, which are
arguments. docs/capacity.md explains the reasoning; rerun both on your own hardware.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR


def _rows(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    payload = json.loads(path.read_text(encoding="utf-8"))
    return {r["name"]: r for r in payload["rows"]}, payload.get("machine", {})


def _need(rows: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in rows or rows[name].get("ours") is None:
        raise SystemExit(f"results.json has no measured row {name!r}: run `make bench` first")
    return rows[name]


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def plan(
    rows: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    *,
    requests_per_day: float = 10_000_000,
    peak_factor: float = 5.0,
    headroom: float = 0.7,
    raw_ttl_days: int = 30,
    min_workers: int = 2,
) -> str:
    """The capacity plan as Markdown (every measured number's row named)."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    avg = requests_per_day / 86_400
    peak = avg * peak_factor
    out = [
        f"Inputs: {requests_per_day:,.0f} requests/day, peak {peak_factor:g}× the average, "
        f"workers planned at ≤ {headroom:.0%} of their measured rate, at least "
        f"{min_workers} for availability. Rates measured on {machine.get('cores')} cores "
        f"({machine.get('cpu_model')}), load average at start "
        f"{machine.get('load_avg_1_5_15')}: one worker process per 2-core host below.",
        "",
        f"- average = {requests_per_day:,.0f} / 86,400 s = **{avg:,.1f} events/s**",
        f"- peak = {avg:,.1f} × {peak_factor:g} = **{peak:,.1f} events/s**",
        "",
        "| embedding path | measured events/s per worker (row) | workers at peak | "
        "partitions | flush every | INSERTs/s (2 tables) |",
        "|---|---|---|---|---|---|",
    ]
    paths = [
        ("MiniLM, every event", "worker.minilm_vs_raw_encode"),
        ("MiniLM, 25 % sample", "worker.sampling_vs_minilm"),
        ("MiniLM + prompt cache (~30 % repeats)", "worker.prompt_cache_vs_minilm"),
        ("model2vec, every event", "worker.model2vec_vs_minilm"),
    ]
    for label, name in paths:
        if name not in rows or rows[name].get("ours") is None:
            continue
        rate = float(rows[name]["ours"])
        workers = max(min_workers, math.ceil(peak / (rate * headroom)))
        partitions = max(6, _round_up(2 * workers, 6))
        # A worker flushes when its batch has 500 events or after 2 s (IngestSettings).
        per_worker = peak / workers
        every = min(2.0, 500 / per_worker)
        inserts = 2 * workers / every
        out.append(
            f"| {label} | {rate:,.1f} (`{name}`) | max({min_workers}, ⌈{peak:,.1f} / "
            f"({rate:,.1f} × {headroom:g})⌉) = **{workers}** | **{partitions}** | "
            f"{every:.1f} s | 2 × {workers} / {every:.1f} s = **{inserts:.1f}** |"
        )
    out += [
        "",
        "Partitions = 2 × workers rounded up to a multiple of 6, so the group can double "
        "without repartitioning (one worker per partition at a time; keys are request ids, "
        "so partitions stay balanced). A worker flushes every min(2 s, 500 events / its "
        "share of the peak); each flush is two INSERTs (inference_logs, flush_log).",
    ]
    plain = rows.get("worker.no_embedding_vs_aiokafka")
    if plain and plain.get("ours"):
        out.append(
            f"Ceiling without embedding: {float(plain['ours']):,.0f} events/s per worker "
            f"(`{plain['name']}`; validation, redaction, text stats and raw rows) — the "
            "embedding path, not Kafka or ClickHouse, sets the worker count."
        )
    producer = rows.get("producer.throughput")
    size = 0.0
    if producer and producer.get("ours"):
        calls = float(producer["ours"])
        size = float(producer.get("extra", {}).get("mean_event_bytes") or 0)
        out += [
            "",
            "Kafka and the inference services:",
            f"- peak {peak:,.1f} events/s × {size:,.0f} B (mean event, `producer.throughput`) "
            f"= {peak * size / 1e6:,.2f} MB/s before lz4; 7 days' retention = "
            f"{requests_per_day * size * 7 / 1e9:,.0f} GB per replica before compression",
            f"- `log()` sustains {calls:,.0f} calls/s per process (`producer.throughput`): "
            f"logging the peak takes {peak / calls:.2%} of one core across the whole fleet",
        ]
    storage = ((plain or {}).get("extra") or {}).get("inference_logs_storage") or {}
    per_row = float(storage.get("compressed_bytes_per_row") or 0)
    out += ["", "ClickHouse:"]
    if per_row:
        gb = requests_per_day * per_row * raw_ttl_days / 1e9
        out.append(
            f"- raw rows: {requests_per_day:,.0f} rows/day × {per_row:,.0f} B compressed "
            f"(measured on the benchmark's synthetic rows, `{plain['name']}` → "  # type: ignore[index]
            f"inference_logs_storage) × {raw_ttl_days} days TTL = **{gb:,.0f} GB** per replica"
        )
    out.append(
        "- window_counts: at most 1,440 minutes × ~49 bins per model and adapter per day "
        "once merged (partials from every worker sum up): megabytes, whatever the traffic"
    )
    drift = rows.get("drift.psi_jsd_7d_window_10m") or rows.get("drift.psi_jsd_7d_window_1m")
    if drift:
        ms = float(drift["ours"])
        out.append(
            f"- drift evaluation: a 7-day window over {int(drift['n']):,} events costs "
            f"{ms:,.0f} ms (`{drift['name']}`), flat in traffic; 3 windows per model every "
            f"60 s = {3 * ms / 60_000:.2%} of one core per model"
        )
    mem = next((r for n, r in rows.items() if n.startswith("memory.worker_rss")), None)
    if mem and mem.get("ours"):
        out.append(
            f"- worker memory: {float(mem['ours']):,.0f} MiB resident with MiniLM (`{mem['name']}`)"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "results.json")
    parser.add_argument("--requests-per-day", type=float, default=10_000_000)
    parser.add_argument("--peak-factor", type=float, default=5.0)
    parser.add_argument("--headroom", type=float, default=0.7)
    args = parser.parse_args()
    rows, machine = _rows(args.results)
    print(
        plan(
            rows,
            machine,
            requests_per_day=args.requests_per_day,
            peak_factor=args.peak_factor,
            headroom=args.headroom,
        )
    )


if __name__ == "__main__":
    main()
