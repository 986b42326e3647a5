"""Worker resident memory at steady state and after a soak: ``python -m bench.soak --minutes N``.

The worker runs as its own process, exactly as deployed (``sentryml worker``: ingest,
drift evaluator every 60 s, golden off, judge off), with its own chDB folder and a MiniLM
baseline fitted by ``sentryml baseline fit``. This process logs support-assistant
traffic at a steady rate (a share of requests repeat an earlier prompt, every request id
is new), and samples the worker's RSS every few seconds.

- steady state: median RSS over the 30 s after the warm-up (a fifth of the run, at least
  30 s: model loaded, caches filling, first evaluations done);
- after the soak: median RSS over the last 30 s;
- growth = after / steady − 1 (target: under 10 %).

The worker must keep up for the number to mean anything: the row records events logged
vs events the worker reports processed (``sentryml_events_total`` on its /metrics page).
``make soak`` runs 30 minutes (not in CI) and writes ``bench/results/soak.json``;
``make bench`` runs a 2-minute version, labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    Row,
    free_port,
    kafka_broker,
    kafka_settings,
    log,
    machine_info,
    wait_until,
    write_results,
)

MODEL, ADAPTER = "support-bot", "v1"
GROWTH_TARGET = 0.10
SAMPLE_EVERY_S = 5.0


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(folder: Path, lines: int = 20) -> str:
    """The end of the worker's log (the folder is removed afterwards)."""
    try:
        return "\n".join((folder / "worker.log").read_text().splitlines()[-lines:])
    except OSError:
        return "(no worker log)"


def _rss_mib(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def run(
    bootstrap: str,
    *,
    minutes: float = 30.0,
    rate: float = 10.0,
    repeat_rate: float = 0.3,
    backend: str = "minilm",
    workdir: Path | None = None,
) -> list[Row]:
    """Soak one worker process for ``minutes`` at ``rate`` events/s; return the RSS row."""
    from streams.config import ProducerSettings
    from streams.demo import stop_process_group
    from streams.producer import InferenceLogger
    from workers.synthetic import support_records, write_jsonl

    if minutes <= 0 or rate <= 0:
        raise ValueError(f"minutes and rate must be > 0, got {minutes}, {rate}")
    tmp = Path(workdir or tempfile.mkdtemp(prefix="sentryml-soak-"))
    kafka = kafka_settings(bootstrap, partitions=6)
    port = free_port()
    env = {
        **os.environ,
        "SENTRYML_KAFKA_BOOTSTRAP": bootstrap,
        "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SENTRYML_KAFKA_PARTITIONS": str(kafka.partitions),
        "SENTRYML_STORE_URL": f"chdb://{tmp / 'chdb'}",
        "SENTRYML_CONSUMER_GROUP": f"soak-{uuid.uuid4().hex[:6]}",
        "SENTRYML_WORKER_ID": "soak-worker",
        "SENTRYML_METRICS_PORT": str(port),
        "SENTRYML_JUDGE_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    train = tmp / "train.jsonl"
    write_jsonl(support_records(300, seed=1), str(train))  # enough bins for a memory soak
    cli = [sys.executable, "-m", "streams.cli"]
    log(f"soak: fitting a {backend} baseline (sentryml baseline fit)")
    subprocess.run(
        [*cli, "baseline", "fit", "--base-model", MODEL, "--adapter", ADAPTER, "--data",
         str(train), "--embedder", backend, "--no-progress"],
        env=env, check=True, stdout=subprocess.DEVNULL, timeout=900,
    )  # fmt: skip
    worker_log = open(tmp / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [*cli, "worker", "--loglevel", "warn"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    logger = InferenceLogger(ProducerSettings(kafka=kafka), strict=True)
    samples: list[tuple[float, float, float]] = []  # (seconds since start, RSS MiB, processed)
    produced = 0
    try:
        wait_until(lambda: _healthy(port) or worker.poll() is not None, 600,
                   "the worker's /health page", 0.5)  # fmt: skip
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}: {_tail(tmp)}")
        log(f"soak: worker pid {worker.pid} up; {minutes:g} min at {rate:g} events/s")
        pool = support_records(5000, seed=3)
        history: list[Any] = []
        rng = random.Random(7)
        start = time.monotonic()
        duration = minutes * 60
        next_sample = 0.0
        i = 0
        while (elapsed := time.monotonic() - start) < duration:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker died ({worker.returncode}): {_tail(tmp)}")
            # a share `repeat_rate` of requests repeats one of the last 2,000 prompts
            if history and rng.random() < repeat_rate:
                record = rng.choice(history[-2000:])
            else:
                record = pool[i % len(pool)]
                history.append(record)
            logger.log(
                request_id=f"soak-{uuid.uuid4().hex}",
                ts=datetime.now(UTC),
                base_model=MODEL,
                adapter_version=ADAPTER,
                prompt=record.prompt,
                completion=record.completion,
            )
            produced += 1
            i += 1
            if elapsed >= next_sample:
                processed = _metrics(port).get("sentryml_events_total", float("nan"))
                samples.append((elapsed, _rss_mib(worker.pid), processed))
                next_sample += SAMPLE_EVERY_S
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        logger.flush(30)
        # let the worker drain what it has, then read its counter one last time
        with contextlib.suppress(TimeoutError):  # not keeping up is reported, not fatal
            wait_until(
                lambda: _metrics(port).get("sentryml_events_total", 0) >= produced,
                120,
                "the worker to catch up",
                1.0,
            )
        processed_final = _metrics(port).get("sentryml_events_total", float("nan"))
        samples.append((time.monotonic() - start, _rss_mib(worker.pid), processed_final))
    finally:
        stop_process_group(worker, grace_s=60)
        worker_log.close()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    warmup = max(30.0, 0.2 * minutes * 60)
    steady = [rss for t, rss, _ in samples if warmup <= t < warmup + 30] or [samples[0][1]]
    end_t = samples[-1][0]
    final = [rss for t, rss, _ in samples if t >= end_t - 30]
    steady_mib, final_mib = statistics.median(steady), statistics.median(final)
    growth = final_mib / steady_mib - 1
    short = minutes < 30
    log(
        f"soak: RSS steady {steady_mib:.0f} MiB, after {minutes:g} min {final_mib:.0f} MiB "
        f"({growth:+.1%}); processed {processed_final:.0f}/{produced}"
    )
    title = f"Worker RSS after a {minutes:g}-minute soak vs steady state"
    if short:
        title += " (short run; `make soak` runs 30 min)"
    return [
        Row(
            name=f"memory.worker_rss_soak_{minutes:g}min",
            title=title,
            ours=round(final_mib, 1),
            reference=round(steady_mib, 1),
            unit="MiB",
            n=produced,
            better="lower",
            ours_label=f"median RSS over the last 30 s of {minutes:g} min",
            reference_label=f"median RSS from {warmup:.0f} s to {warmup + 30:.0f} s",
            target_ratio=1 + GROWTH_TARGET,
            target="growth < 10 % (ratio <= 1.1)",
            note=(
                f"growth {growth:+.1%}; {rate:g} events/s, {backend} embedding, "
                f"{repeat_rate:.0%} repeated prompts; worker processed "
                f"{processed_final:.0f} of {produced} events logged; peak "
                f"{max(s[1] for s in samples):.0f} MiB"
            ),
            extra={
                "minutes": minutes,
                "rate_per_s": rate,
                "embedder": backend,
                "growth": round(growth, 4),
                "processed": processed_final,
                "produced": produced,
                "samples": [[round(t, 1), round(r, 1), p] for t, r, p in samples],
            },
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s logged")
    parser.add_argument("--embedder", default="minilm", choices=["minilm", "model2vec"])
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for soak.json / soak.md"
    )
    args = parser.parse_args()
    machine = machine_info()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    with kafka_broker() as bootstrap:
        rows = run(bootstrap, minutes=args.minutes, rate=args.rate, backend=args.embedder)
    for row in rows:
        row.machine = machine
    paths = write_results(
        rows,
        machine=machine,
        out_dir=args.out,
        started_at=started,
        duration_s=time.monotonic() - t0,
        stem="soak",
    )
    print(json.dumps([r.to_dict() for r in rows], indent=2, default=str))
    log(f"soak: wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
