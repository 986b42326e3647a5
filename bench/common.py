"""What every performance benchmark shares: result rows, machine info, a broker, a store.

A benchmark is a *pair*: our code path and its reference (the physical limit, or the
library a user would otherwise reach for), measured in one process on the same data, so
that the ratio holds even on a noisy shared machine where absolute numbers do not.

>>> r = Row("producer.throughput", "log() calls/s", ours=60_000, reference=100_000,
...         unit="events/s", n=1000, better="higher", target_ratio=0.5)
>>> r.ratio, r.meets_target
(0.6, True)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workers.retry import poll_until

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Better = Literal["higher", "lower"]
TIME_UNITS = frozenset({"s", "ms", "µs", "us", "ns", "min"})


@dataclass
class Row:
    """One measured pair. ``ratio`` is always ``ours / reference``; ``better`` says which way
    is good (throughput: higher, so 0.9 = 10 % below the limit; time: lower, so 0.25 = 4x
    faster than the reference)."""

    name: str
    title: str
    ours: float | None
    reference: float | None
    unit: str
    n: int
    better: Better
    ours_label: str = ""
    reference_label: str = ""
    target_ratio: float | None = None
    target: str = ""
    meets_target: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', got {self.better!r}")
        if self.target_ratio is not None and self.meets_target is None and self.ratio is not None:
            ok = self.ratio >= self.target_ratio
            if self.better == "lower":
                ok = self.ratio <= self.target_ratio
            self.meets_target = ok
            if not self.target:
                sign = ">=" if self.better == "higher" else "<="
                self.target = f"ratio {sign} {self.target_ratio:g}"

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference is None or self.reference == 0:
            return None
        return round(self.ours / self.reference, 4)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------------------
# machine and timing
# --------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    """The short commit, with ``-dirty`` when tracked files (other than earlier results)
    differ from it: numbers must name the code that produced them."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return f"{commit}-dirty" if changed else commit


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, load average and library versions, taken now (at a run's start)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cores": usable,
        "cpu_model": _cpu_model(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "versions": {
            name: _version(name)
            for name in (
                "confluent-kafka",
                "aiokafka",
                "faust-streaming",
                "torch",
                "sentence-transformers",
                "model2vec",
                "chdb",
                "evidently",
            )
        },
    }


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentile of an empty sample")
    return float(np.percentile(arr, q))


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until truthy; raise ``TimeoutError`` naming ``what`` at the deadline."""
    return poll_until(condition, timeout=timeout, interval=interval, what=f"benchmark: {what}")


def log(message: str) -> None:
    """Progress on stderr (the results go to files and stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# broker and store
# --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """A real local Kafka broker: ``SENTRYML_BENCH_KAFKA_BOOTSTRAP`` if set, else one started
    by ``scripts/kafka_local.py`` on a free port (and stopped afterwards)."""
    given = os.environ.get("SENTRYML_BENCH_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    data = Path(tempfile.mkdtemp(prefix="sentryml-bench-kafka-"))
    port = free_port()
    script = REPO / "scripts" / "kafka_local.py"
    env = {k: v for k, v in os.environ.items() if k != "SENTRYML_KAFKA_BOOTSTRAP"}
    log(f"starting a local Kafka broker on 127.0.0.1:{port}")
    subprocess.run(
        [sys.executable, str(script), "start", "--port", str(port), "--dir", str(data)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [sys.executable, str(script), "stop", "--dir", str(data)],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(data, ignore_errors=True)


def kafka_settings(bootstrap: str, partitions: int = 6) -> Any:
    """Kafka settings with a topic prefix of this benchmark's own (topics created)."""
    from streams.topics import create_topics
    from workers.kafka import KafkaSettings

    kafka = KafkaSettings(
        bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", partitions=partitions
    )
    create_topics(kafka)
    return kafka


_CHDB_DIR: Path | None = None


def store_settings(database: str | None = None) -> Any:
    """A fresh database in this process's chDB folder (chDB allows one folder per process)."""
    global _CHDB_DIR
    from workers.store import StoreSettings

    if _CHDB_DIR is None:
        _CHDB_DIR = Path(tempfile.mkdtemp(prefix="sentryml-bench-chdb-"))
        atexit.register(shutil.rmtree, _CHDB_DIR, True)  # benchmark data is throwaway
    return StoreSettings(
        url=f"chdb://{_CHDB_DIR}", database=database or f"bench_{uuid.uuid4().hex[:10]}"
    )


def open_bench_store(database: str | None = None) -> Any:
    """A migrated, empty store (see :func:`store_settings`)."""
    from workers.store import open_store

    store = open_store(store_settings(database))
    store.migrate()
    return store


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------
def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.01:
        text = f"{value:.3g}"
    else:
        text = f"{value:.2e}"
    return f"{text} {unit}".strip()


def _ratio_text(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "—"
    text = f"{ratio:.3g}"
    if row.better == "lower" and 0 < ratio < 1:
        word = "faster" if row.unit in TIME_UNITS else "smaller"
        text += f" ({1 / ratio:.3g}× {word})"
    elif row.better == "higher" and ratio > 1:
        text += f" ({ratio:.3g}× more)"
    return text


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as one Markdown table (what the README includes)."""
    lines = [
        "| benchmark | ours | reference | ratio (ours/ref) | target | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = _fmt(r.ours, r.unit)
        ref = _fmt(r.reference, r.unit)
        if r.ours_label:
            ours += f"<br><sub>{r.ours_label}</sub>"
        if r.reference_label:
            ref += f"<br><sub>{r.reference_label}</sub>"
        target = r.target or ""
        if r.meets_target is not None and target:
            target = f"{target} {'✅' if r.meets_target else '❌'}"
        lines.append(
            f"| {r.title} | {ours} | {ref} | {_ratio_text(r)} | {target} | {r.n:,} |".replace(
                "\n", " "
            )
        )
    return "\n".join(lines)


def write_results(
    rows: Sequence[Row],
    *,
    machine: dict[str, Any],
    out_dir: Path = RESULTS_DIR,
    started_at: datetime | None = None,
    duration_s: float | None = None,
    notes: Sequence[str] = (),
    stem: str = "results",
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    created = (started_at or datetime.now(UTC)).isoformat()
    payload: dict[str, Any] = {
        "benchmark": "performance",
        "created_at": created,
        "duration_s": None if duration_s is None else round(duration_s, 1),
        "machine": machine,
        "rows": [r.to_dict() for r in rows],
        "notes": list(notes),
    }
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    md = [
        "<!-- written by `make bench` (python -m bench.run); do not edit by hand -->",
        "",
        f"Measured {created[:16].replace('T', ' ')} UTC on "
        f"{machine.get('cores')} cores ({machine.get('cpu_model')}), load average at start "
        f"{machine.get('load_avg_1_5_15')}, commit {machine.get('git_commit')}. "
        "Ratios compare two paths measured in the same run on the same data; absolute "
        "numbers on a shared machine are noisy.",
        "",
        markdown_table(rows),
    ]
    if notes:
        md += ["", *[f"- {n}" for n in notes]]
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return json_path, md_path
