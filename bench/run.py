"""``make bench``: every hot path measured side by side against its limit, as ratios.

Runs each pair in this one process on the same data (see each module's docstring for the
method), against one real local Kafka broker and an in-process chDB folder:

- ``producer``  — :mod:`bench.producer`: SDK ``log()`` vs raw confluent-kafka ``produce``;
- ``drift``     — :mod:`bench.drift_cost`: PSI/JSD from ``window_counts`` vs Evidently on
  raw events (1M and 10M events in a 7-day window; the values must agree to 1e-9);
- ``worker``    — :mod:`bench.worker`: worker vs bare consumers, vs raw
  ``SentenceTransformer.encode``, and the faster embedding paths;
- ``latency``   — :mod:`bench.latency`: produce → counted in ClickHouse, drift → alert;
- ``soak``      — :mod:`bench.soak`: worker RSS growth over a short soak (2 minutes here;
  ``make soak`` runs 30).

Rows written by other benchmarks are included when their files exist:
``bench/results/trainer.json`` (``python -m bench.trainer_bench``) and a 30-minute
``bench/results/soak.json`` (``make soak``). Writes ``bench/results/results.json`` and
``bench/results/results.md``; prints the table. A pair that fails is reported and makes
the exit status 1, the others still run.

    python -m bench.run [--only producer,drift] [--quick] [--soak-minutes 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Row, kafka_broker, log, machine_info, markdown_table
from bench.common import write_results as _write

PAIRS = ("producer", "drift", "worker", "latency", "soak")

#: Sizes of a full run and of ``--quick`` (a smoke run of the whole harness, minutes).
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "producer": {"n_events": 50_000},
        "drift": {"sizes": (1_000_000, 10_000_000)},
        "worker": {"n_events": 10_000, "rounds": 9},
        "latency": {"rate": 50.0, "seconds": 60.0},
    },
    "quick": {
        "producer": {"n_events": 4_000},
        "drift": {"sizes": (100_000,), "repeats": 3},
        "worker": {"n_events": 3_000, "rounds": 1, "chunk": 200},
        "latency": {"rate": 20.0, "seconds": 10.0, "alert_timeout": 60.0},
    },
}


def external_rows(out_dir: Path) -> tuple[list[Row], list[str]]:
    """Rows of the trainer benchmark and of a full (30-minute) soak, when their files exist."""
    rows: list[Row] = []
    notes: list[str] = []
    for stem, keep in (
        ("trainer", lambda r: True),
        ("soak", lambda r: float(r.extra.get("minutes", 0)) >= 30),
    ):
        path = out_dir / f"{stem}.json"
        if not path.is_file():
            continue
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            found = [Row.from_dict(r) for r in payload.get("rows", [])]
        except (ValueError, TypeError, KeyError) as exc:
            notes.append(f"{path.name} could not be read ({exc}); its rows are left out")
            continue
        found = [r for r in found if keep(r)]
        for r in found:
            r.machine = r.machine or payload.get("machine", {})
        if found:
            when = str(payload.get("created_at", "?"))[:16].replace("T", " ")
            notes.append(f"{len(found)} row(s) from bench/results/{path.name} (measured {when})")
        rows += found
    return rows, notes


def _pairs(
    bootstrap: str, sizes: dict[str, Any], soak_minutes: float
) -> dict[str, Callable[[], list[Row]]]:
    from bench import drift_cost, latency, producer, soak, worker

    return {
        "producer": lambda: producer.run(bootstrap, **sizes["producer"]),
        "drift": lambda: drift_cost.run(**sizes["drift"]),
        "worker": lambda: worker.run(bootstrap, **sizes["worker"]),
        "latency": lambda: latency.run(bootstrap, **sizes["latency"]),
        "soak": lambda: soak.run(bootstrap, minutes=soak_minutes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(PAIRS), help=f"comma list of {PAIRS}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--soak-minutes", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PAIRS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(PAIRS)}")
    sizes = SIZES["quick" if args.quick else "full"]
    soak_minutes = min(args.soak_minutes, 1.0) if args.quick else args.soak_minutes

    machine = machine_info()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    log(f"machine: {machine['cores']} cores, {machine['cpu_model']}, "
        f"load {machine['load_avg_1_5_15']}")  # fmt: skip
    rows: list[Row] = []
    failures: list[str] = []
    with kafka_broker() as bootstrap:
        pairs = _pairs(bootstrap, sizes, soak_minutes)
        for name in chosen:
            t_pair = time.monotonic()
            log(f"== {name}")
            try:
                rows += pairs[name]()
            except Exception as exc:  # one broken pair must not hide the others' results
                traceback.print_exc()
                failures.append(f"{name} failed: {type(exc).__name__}: {exc}")
            log(f"== {name} done in {time.monotonic() - t_pair:.0f}s")
    for row in rows:
        row.machine = machine
    extra, notes = external_rows(args.out)
    rows += extra
    notes = [
        *failures,
        *notes,
        "ratio = ours / reference; for times (ms, µs, s, MiB) lower is better, for rates "
        "higher. Method of each pair: the docstrings of bench/*.py.",
    ]
    if args.quick:
        notes.insert(0, "QUICK RUN (--quick): tiny sizes, for checking the harness only")
    paths = _write(
        rows,
        machine=machine,
        out_dir=args.out,
        started_at=started,
        duration_s=time.monotonic() - t0,
        notes=notes,
    )
    print(markdown_table(rows))
    for note in notes:
        print(f"- {note}")
    log(f"wrote {', '.join(str(p) for p in paths)} in {time.monotonic() - t0:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
