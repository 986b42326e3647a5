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
) -> str:
    """The capacity plan as Markdown (every number's source named)."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    avg = requests_per_day / 86_400
    peak = avg * peak_factor
    out = [
        f"Inputs: {requests_per_day:,.0f} requests/day, peak {peak_factor:g}× the average, "
        f"workers run at ≤ {headroom:.0%} of their measured rate. Measured on "
        f"{machine.get('cores')} cores ({machine.get('cpu_model')}), load average at start "
        f"{machine.get('load_avg_1_5_15')} — one worker process per 2-core host below.",
        "",
        f"- average = {requests_per_day:,.0f} / 86,400 s = **{avg:,.1f} events/s**",
        f"- peak = {avg:,.1f} × {peak_factor:g} = **{peak:,.1f} events/s**",
        "",
        "| embedding path | measured rate per worker (row) | workers at peak | partitions |",
        "|---|---|---|---|",
    ]
    paths = [
        ("MiniLM, every event", "worker.minilm_vs_raw_encode"),
        ("MiniLM, 25 % sample", "worker.sampling_vs_minilm"),
        ("MiniLM + prompt cache (30 % repeats)", "worker.prompt_cache_vs_minilm"),
        ("model2vec, every event", "worker.model2vec_vs_minilm"),
        ("no embedding (ceiling)", "worker.no_embedding_vs_aiokafka"),
    ]
    workers_by_path: dict[str, int] = {}
    for label, name in paths:
        if name not in rows or rows[name].get("ours") is None:
            continue
        rate = float(rows[name]["ours"])
        workers = max(1, math.ceil(peak / (rate * headroom)))
        partitions = max(6, _round_up(2 * workers, 6))
        workers_by_path[label] = workers
        out.append(
            f"| {label} | {rate:,.1f} events/s (`{name}`) | ⌈{peak:,.1f} / ({rate:,.1f} × "
            f"{headroom:g})⌉ = **{workers}** | **{partitions}** |"
        )
    out += [
        "",
        "Partitions = 2 × workers rounded up to a multiple of 6, so the group can double "
        "without repartitioning (a partition is consumed by one worker at a time; keys are "
        "request ids, so partitions stay balanced).",
    ]
    producer = rows.get("producer.throughput")
    if producer and producer.get("ours"):
        calls = float(producer["ours"])
        size = float(producer.get("extra", {}).get("mean_event_bytes") or 0)
        out += [
            "",
            f"- Kafka: peak {peak:,.1f} events/s × {size:,.0f} B (mean event, "
            f"`producer.throughput`) = {peak * size / 1e6:,.2f} MB/s before lz4 — far "
            "below one broker's capacity; 3 brokers for replication factor 3.",
            f"- Inference services: `log()` sustains {calls:,.0f} calls/s per process "
            f"(`producer.throughput`), so logging the peak costs {peak / calls:.2%} of one "
            "core across the fleet.",
        ]
    drift = rows.get("drift.psi_jsd_7d_window_10m") or rows.get("drift.psi_jsd_7d_window_1m")
    raw_bytes = float((producer or {}).get("extra", {}).get("mean_event_bytes") or 600)
    per_day_gb = requests_per_day * raw_bytes / 1e9
    out += [
        "",
        "ClickHouse:",
        f"- raw rows: {requests_per_day:,.0f} rows/day × ~{raw_bytes:,.0f} B = "
        f"{per_day_gb:,.1f} GB/day uncompressed, × {raw_ttl_days} days TTL = "
        f"{per_day_gb * raw_ttl_days:,.0f} GB before compression",
        f"- inserts: at peak each worker flushes every min(2 s, 500 events) — "
        f"{peak:,.1f} raw rows/s in total, plus one flush_log row per partition per flush",
    ]
    if drift:
        ms = float(drift["ours"])
        out.append(
            f"- drift evaluation: one 7-day window over {int(drift['n']):,} events costs "
            f"{ms:,.0f} ms (`{drift['name']}`), independent of traffic beyond that: "
            "window_counts holds at most minutes × bins rows per model and worker; "
            f"3 windows per model every 60 s = {3 * ms / 60_000:.2%} of one core per model"
        )
    mem = next((r for n, r in rows.items() if n.startswith("memory.worker_rss")), None)
    if mem and mem.get("ours") and workers_by_path:
        most = max(workers_by_path.values())
        out.append(
            f"- memory: a MiniLM worker holds {float(mem['ours']):,.0f} MiB resident "
            f"(`{mem['name']}`); {most} workers × that = "
            f"{most * float(mem['ours']) / 1024:,.1f} GiB across the worker hosts"
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
