"""The main job end to end on one machine: drift → alert → gated retrain → promotion.

:func:`run_demo` starts every real part as its own process — the local Kafka broker, the
local OpenAI-compatible server (llama.cpp + SmolLM2), the shared embedded store
(``sentryml store serve`` over chDB), the stream worker and the trainer — then plays the
story and stops everything it started, also on Ctrl-C or failure.

The story (a customer-support assistant that must answer in JSON):

1. a training set is generated, a baseline fitted on it, and the live model is checked
   against the starter golden set;
2. phase 1: in-distribution traffic — no drift alerts; judge scores recorded;
3. phase 2: users ask about other domains and the answers degrade (rambling, broken
   format) — embedding and output drift alerts arrive live;
4. reviewers correct the bad answers (feedback); the retrain gate fires; the trainer
   fine-tunes a LoRA adapter on CPU, evaluates it against the incumbent on the golden set
   and promotes or rejects it with the numbers;
5. a summary from SQL and the HTML report.

Traffic completions: SmolLM2 serves a slice of the requests for real (``live_requests``);
on two CPU cores it writes ~15 tokens/s, so the bulk of the traffic is played from the
deterministic synthetic generator (``workers.synthetic``), which stands in for the
fine-tuned model's outputs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.events import Feedback, InferenceLog
from schemas.exceptions import SentryMLError
from streams.console import console
from workers.retry import poll_until

if TYPE_CHECKING:
    from streams.config import ProducerSettings
    from workers.kafka import KafkaSettings

REPO = Path(__file__).resolve().parent.parent
BASE_MODEL = "smollm2-135m-instruct"
SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer only with JSON: "
    '{"intent": "<intent>", "answer": "<one short sentence>"}.'
)
OUT_OF_SCOPE = (
    '{"intent": "out_of_scope", "answer": "I can only help with orders, billing, '
    'shipping and your account."}'
)


class DemoFailed(SentryMLError):
    """A stage of the demo did not happen; the message says which and where to look."""


@dataclass
class DemoConfig:
    """Sizes of the story; the CI smoke test uses a reduced one."""

    out_dir: Path = field(default_factory=lambda: REPO / "demo-out")
    train_examples: int = 600
    k: int = 8
    phase1_events: int = 600
    phase2_events: int = 400
    live_requests: int = 6
    feedback_examples: int = 60
    train_steps: int = 30
    train_batch_size: int = 4
    eval_examples: int = 20
    max_new_tokens: int = 64
    timeout_s: float = 900.0
    report: bool = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``); SIGKILL
    it if it has not exited after ``grace_s`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class Services:
    """Processes the demo started; all stopped (reverse order) on exit."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.stops: list[Callable[[], None]] = []
        self.env: dict[str, str] = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def script(self, name: str, *args: str, port: int) -> None:
        """Start a service script (kafka_local / llm_local) and register its stop."""
        data = self.out_dir / name
        cmd = [sys.executable, str(REPO / "scripts" / f"{name}.py")]
        subprocess.run([*cmd, "start", "--port", str(port), "--dir", str(data), *args], check=True)

        def stop() -> None:
            subprocess.run([*cmd, "stop", "--dir", str(data)], check=False, capture_output=True)

        self.stops.append(stop)

    def process(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.out_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **env},
            start_new_session=True,
        )

        def stop() -> None:
            stop_process_group(proc, grace_s=30)
            log.close()

        self.stops.append(stop)
        return proc

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()
        self.stops.clear()


def _claim(out_dir: Path) -> Any:
    """Hold ``out_dir/demo.lock`` for this process (the kernel frees it however we exit), or
    refuse: a second demo in the same folder would overwrite the first's pid files, and
    the first could then not stop its own servers."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / "demo.lock", "a+")  # noqa: SIM115 - held until the demo ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise DemoFailed(
            f"another demo is running in {out_dir} (pid {holder}); wait for it to end or stop "
            "it (Ctrl-C), or give this one another folder (--out)"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


@contextmanager
def services(out_dir: Path) -> Iterator[Services]:
    lock = _claim(out_dir)
    svc = Services(out_dir)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        yield svc
    finally:
        console.print("[dim]stopping the demo's processes ...[/]")
        svc.close()
        signal.signal(signal.SIGTERM, previous)
        lock.close()


def wait_until(what: str, condition: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    with console.status(f"waiting: {what}"):
        try:
            return poll_until(condition, timeout=timeout, interval=every, what=what)
        except TimeoutError:
            raise DemoFailed(
                f"timed out after {timeout:.0f}s waiting for: {what} (see the demo's logs)"
            ) from None


def _stage(n: int, text: str) -> None:
    console.rule(f"[bold cyan]{n}. {text}")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Play the whole story; return the summary numbers. Raises :class:`DemoFailed`."""
    from confluent_kafka import Consumer

    from schemas.topics import Topics
    from streams.config import ProducerSettings
    from streams.topics import create_topics
    from workers.baseline import TrainingRecord, fit_baseline, save_baseline
    from workers.embedding import load_embedder
    from workers.golden import OpenAIChat, load_golden_set, run_golden
    from workers.kafka import KafkaSettings
    from workers.store import open_store
    from workers.synthetic import (
        degraded_records,
        domain_prompts,
        support_records,
        to_inference_logs,
        write_jsonl,
    )

    started = time.monotonic()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    for noisy in ("httpx", "httpx2", "clickhouse_connect", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    run_tag = uuid.uuid4().hex[:6]
    summary: dict[str, Any] = {}
    with services(cfg.out_dir) as svc:
        _stage(0, "set-up: Kafka broker, judge/model server, store, topics")
        kafka_port, llm_port, store_port = free_port(), free_port(), free_port()
        svc.script("kafka_local", port=kafka_port)
        svc.script("llm_local", port=llm_port)
        store_dir = cfg.out_dir / "store"
        # A password of this run's own: the endpoint admits no one without one.
        store_login = {
            "SENTRYML_STORE_USERNAME": "sentryml",
            "SENTRYML_STORE_PASSWORD": secrets.token_urlsafe(24),
        }
        svc.process(
            "store",
            [sys.executable, "-m", "streams.cli", "store", "serve", "--path", str(store_dir),
             "--port", str(store_port)],
            store_login,
        )  # fmt: skip
        kafka = KafkaSettings(
            bootstrap=f"127.0.0.1:{kafka_port}", topic_prefix=f"demo-{run_tag}.", partitions=3
        )
        store_url = f"http://127.0.0.1:{store_port}"
        base_url = f"http://127.0.0.1:{llm_port}/v1"
        store = wait_until(
            "store endpoint",
            lambda: _port_open(store_port) and _try_open(open_store, store_url, store_login),
            120,
            every=0.5,
        )
        store.migrate()
        create_topics(kafka)
        topics = Topics(kafka.topic_prefix)
        common_env = {
            "SENTRYML_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SENTRYML_STORE_URL": store_url,
            **store_login,
            "SENTRYML_JUDGE_SAMPLE_SALT": secrets.token_urlsafe(16),
            "SENTRYML_JUDGE_BASE_URL": base_url,
            "SENTRYML_JUDGE_MODEL": "smollm2-135m-instruct",
        }

        _stage(1, "training set, baseline, golden set on the live model")
        records = support_records(cfg.train_examples, seed=1)
        write_jsonl(records, str(cfg.out_dir / "train.jsonl"))
        embedder = load_embedder("minilm")
        baseline = fit_baseline(
            records, embedder, base_model=BASE_MODEL, adapter_version="none", k=cfg.k, seed=0,
            source="demo-out/train.jsonl",
        )  # fmt: skip
        save_baseline(store, baseline, json_path=cfg.out_dir / "baseline.json")
        console.print(f"baseline {baseline.baseline_id}: k={cfg.k}, n_fit={baseline.n_fit}")
        golden = load_golden_set(REPO / "workers" / "golden" / "sets" / "starter.yaml")
        chat = OpenAIChat(base_url, "smollm2-135m-instruct", max_tokens=96)
        result = _run(run_golden(golden, chat, base_model=BASE_MODEL, adapter_version="none",
                                 threshold=0.5, store=store, trigger="deploy", progress=True))  # fmt: skip
        console.print(
            f"golden pass rate of the incumbent: {result.run.pass_rate:.0%} "
            f"({result.run.passed}/{result.run.total})"
        )

        # Demo settings, explicit (not the defaults): short intervals, small minimums.
        worker_env = {
            **common_env,
            "SENTRYML_CONSUMER_GROUP": f"demo-worker-{run_tag}",
            "SENTRYML_INGEST_BATCH_SECONDS": "1.0",
            "SENTRYML_DRIFT_INTERVAL_S": "5",
            "SENTRYML_DRIFT_RENOTIFY_S": "600",
            "SENTRYML_JUDGE_SAMPLE_RATE": "0.03",
            "SENTRYML_JUDGE_MAX_CONCURRENCY": "2",
            "SENTRYML_JUDGE_DIMENSIONS": '["format"]',
            "SENTRYML_JUDGE_ROLLING_WINDOW_S": "120",
            "SENTRYML_JUDGE_DROP_MIN_SAMPLES": "3",
            "SENTRYML_JUDGE_ALERT_INTERVAL_S": "15",
            "SENTRYML_RETRAIN_INTERVAL_S": "10",
            "SENTRYML_RETRAIN_PERSIST_S": "15",  # production: hours
            "SENTRYML_RETRAIN_MAX_GAP_S": "30",
            "SENTRYML_RETRAIN_DRIFT_WINDOWS": '["1h"]',
            "SENTRYML_RETRAIN_MIN_EXAMPLES": json.dumps({"style": cfg.feedback_examples // 2}),
            "SENTRYML_RETRAIN_COOLDOWN_DAYS": "0",
            "SENTRYML_RETRAIN_ALLOW_SHORT_COOLDOWN": "true",
        }
        worker = svc.process(
            "worker", [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warn"],
            worker_env,
        )  # fmt: skip
        trainer_env = {
            **common_env,
            "SENTRYML_CONSUMER_GROUP": f"demo-trainer-{run_tag}",
            "SENTRYML_ADAPTERS_DIR": str(cfg.out_dir / "adapters"),
        }
        minimum = cfg.feedback_examples // 2
        trainer = svc.process(
            "trainer",
            [sys.executable, "-m", "streams.cli", "trainer",
             "--set", f"max_steps={cfg.train_steps}",
             "--set", f"batch_size={cfg.train_batch_size}",
             "--set", "gradient_accumulation_steps=1",
             "--set", "max_seq_length=192",
             "--set", f"min_examples={{style: {minimum}, vocabulary: {minimum}, "
                      f"task: {minimum}, instruction: {minimum}}}",
             "--set", f"system_prompt={json.dumps(SYSTEM_PROMPT)}",
             "--set", f"max_new_tokens={cfg.max_new_tokens}",
             "--set", f"max_eval_examples={cfg.eval_examples}"],
            trainer_env,
        )  # fmt: skip

        alerts_seen: list[dict[str, Any]] = []
        alerts_consumer = Consumer(
            {**kafka.client_config(), "group.id": f"demo-alerts-{run_tag}",
             "auto.offset.reset": "earliest"}
        )  # fmt: skip
        alerts_consumer.subscribe([topics.alerts, topics.adapter_events])
        svc.stops.append(alerts_consumer.close)  # closed before the broker stops
        adapter_events: list[dict[str, Any]] = []

        def poll_alerts() -> None:
            for msg in alerts_consumer.consume(100, timeout=0.2):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                body = json.loads(value)
                if msg.topic() == topics.adapter_events:
                    adapter_events.append(body)
                    console.print(
                        f"[bold magenta]ADAPTER[/] {body['adapter_version']} {body['status']}: "
                        f"{body.get('message', '')}"
                    )
                else:
                    alerts_seen.append(body)
                    console.print(
                        f"[bold red]ALERT[/] {body['severity']} {body['kind']} "
                        f"{body.get('feature', '')} [{body.get('window', '')}] {body['message']}"
                    )

        def counted() -> int:
            return int(store.query("SELECT sum(events) FROM flush_log").scalar() or 0)

        def check_alive() -> None:
            for name, proc in (("worker", worker), ("trainer", trainer)):
                if proc.poll() is not None:
                    raise DemoFailed(
                        f"the {name} exited ({proc.returncode}); see demo-out/{name}.log"
                    )

        def tick() -> bool:
            """Fail fast if a process died; print alerts as they arrive."""
            check_alive()
            poll_alerts()
            return False

        producer_settings = ProducerSettings(kafka=kafka)
        _stage(2, f"phase 1: {cfg.phase1_events} in-distribution requests")
        phase1 = to_inference_logs(
            support_records(cfg.phase1_events, seed=2), base_model=BASE_MODEL, seed=2
        )
        live = _live_completions(base_url, phase1[: cfg.live_requests])
        _publish(producer_settings, live + phase1[cfg.live_requests :])
        wait_until(
            "phase 1 counted by the worker",
            lambda: tick() or counted() >= cfg.phase1_events,
            cfg.timeout_s,
        )
        evaluated_after = time.time()
        wait_until(
            "a drift evaluation of phase 1",
            lambda: tick() or _evaluated_since(store, evaluated_after),
            120,
        )
        phase1_alerts = [a for a in alerts_seen if a["kind"].endswith("_drift")]
        _print_drift(store, "phase 1")
        summary["phase1_drift_alerts"] = len(phase1_alerts)

        _stage(3, f"phase 2: {cfg.phase2_events} requests from other domains, degraded answers")
        n_domain = cfg.phase2_events // 2
        prompts = [
            p for d in ("cooking", "legal") for p in domain_prompts(d, n_domain // 2, seed=4)
        ]
        rambling = degraded_records("rambling", cfg.phase2_events - len(prompts), seed=5)
        broken = degraded_records("broken_format", len(prompts), seed=6)
        phase2_records = [
            TrainingRecord(prompt=p, completion=b.completion)
            for p, b in zip(prompts, broken, strict=True)
        ] + list(rambling)
        phase2 = to_inference_logs(phase2_records, base_model=BASE_MODEL, seed=3)
        _publish(producer_settings, phase2)
        wait_until(
            "embedding and output drift alerts",
            lambda: (
                tick() or {"embedding_drift", "output_drift"} <= {a["kind"] for a in alerts_seen}
            ),
            cfg.timeout_s,
        )
        _print_drift(store, "phase 2")

        _stage(4, f"feedback: {cfg.feedback_examples} reviewer corrections → gated retrain")
        _send_feedback(
            kafka,
            topics.feedback,
            _corrections(phase1, phase2[: len(prompts)], cfg.feedback_examples),
        )
        wait_until(
            "the retrain gate to fire and the trainer to finish (promote or reject)",
            lambda: tick() or any(e["status"] in ("promoted", "rejected") for e in adapter_events),
            cfg.timeout_s,
            every=2.0,
        )

        _stage(5, "summary")
        summary.update(_summary(store))
        summary["alerts_received"] = len(alerts_seen)
        summary["adapter_events"] = [(e["adapter_version"], e["status"]) for e in adapter_events]
        summary["minutes"] = round((time.monotonic() - started) / 60, 1)
        if cfg.report:
            from workers.report import ReportConfig, build_report

            report = build_report(
                store, cfg.out_dir / "report", ReportConfig(base_model=BASE_MODEL, hero_window="1h")
            )
            console.print(f"report: {report.index}")
            summary["report"] = str(report.index)
            summary["hero"] = str(report.hero) if report.hero else None
        store.close()
    return summary


# Each client lives in its own function, so it is freed when it returns, while the broker
# is up: a client kept until run_demo returns prints connection errors once the broker stops.
def _publish(settings: ProducerSettings, events: list[InferenceLog]) -> None:
    from streams.producer import InferenceLogger

    with InferenceLogger(settings, strict=True) as logger:
        for event in events:
            logger.log(event)


def _send_feedback(kafka: KafkaSettings, topic: str, items: list[Feedback]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config())
    for fb in items:
        producer.produce(topic, fb.to_bytes(), fb.request_id.encode())
    if producer.flush(30):
        raise DemoFailed("feedback could not be delivered to the broker in 30 s")


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _try_open(open_store: Any, url: str, login: dict[str, str]) -> Any:
    from pydantic import SecretStr

    from workers.store import StoreSettings
    from workers.store.exceptions import StoreError

    try:
        return open_store(
            StoreSettings(
                url=url,
                username=login["SENTRYML_STORE_USERNAME"],
                password=SecretStr(login["SENTRYML_STORE_PASSWORD"]),
            )
        )
    except StoreError:
        return None


def _live_completions(base_url: str, events: list[InferenceLog]) -> list[InferenceLog]:
    """Serve a slice of the traffic with the real model (SmolLM2 through llama.cpp)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="sk-local")
    out = []
    for event in events:
        t0 = time.monotonic()
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": event.prompt_text}],
            max_tokens=64, temperature=0,
        )  # fmt: skip
        text = reply.choices[0].message.content or ""
        out.append(
            event.model_copy(
                update={
                    "completion": text,
                    "completion_tokens": reply.usage.completion_tokens if reply.usage else None,
                    "latency_ms": (time.monotonic() - t0) * 1000,
                    "app": "support-bot-live",
                }
            )
        )
    console.print(f"served {len(out)} requests with the live model")
    return out


def _corrections(
    in_scope: list[InferenceLog], out_of_scope: list[InferenceLog], n: int
) -> list[Feedback]:
    """Simulated reviewers: out-of-domain requests get the task's deflection template,
    in-domain ones are confirmed with the template answer (labelled good)."""
    out = []
    for event in out_of_scope[: n // 2]:
        out.append(
            Feedback(
                request_id=event.request_id, base_model=event.base_model, label="bad",
                correction=OUT_OF_SCOPE, prompt=event.prompt_text, reviewer="demo-reviewer",
            )
        )  # fmt: skip
    for event in in_scope[: n - len(out)]:
        out.append(
            Feedback(
                request_id=event.request_id, base_model=event.base_model, label="good",
                correction=event.completion, prompt=event.prompt_text, reviewer="demo-reviewer",
            )
        )  # fmt: skip
    return out


def _evaluated_since(store: Any, since: float) -> bool:
    from datetime import UTC, datetime

    ts = datetime.fromtimestamp(since, UTC)
    return bool(
        store.query(
            "SELECT count() FROM drift_stats WHERE ts > {t:DateTime64(3, 'UTC')}", {"t": ts}
        ).scalar()
    )


def _print_drift(store: Any, title: str) -> None:
    from streams.console import print_table

    result = store.query(
        "SELECT feature, window, round(argMax(psi, ts), 3) AS psi, "
        "round(argMax(p_value, ts), 4) AS p_value, argMax(sample_size, ts) AS n, "
        "argMax(status, ts) AS status FROM drift_stats "
        "WHERE window = '1h' GROUP BY feature, window ORDER BY feature"
    )
    print_table(result.columns, result.rows, title=f"drift after {title} (1h window)")


def _summary(store: Any) -> dict[str, Any]:
    from streams.console import print_table

    queries = {
        "alerts": "SELECT kind, severity, count() AS n FROM alerts GROUP BY kind, severity ORDER BY kind",
        "judge": "SELECT dimension, countIf(ok = 1) AS scored, round(avgIf(score, ok = 1), 2) AS mean "
        "FROM judge_scores FINAL GROUP BY dimension ORDER BY dimension",
        "golden": "SELECT adapter_version, trigger, total, passed, round(pass_rate, 3) AS pass_rate "
        "FROM golden_runs FINAL ORDER BY ts",
        "retrain": "SELECT decision, count() AS n, any(reason) AS example FROM retrain_jobs "
        "GROUP BY decision ORDER BY decision",
        "adapters": "SELECT version, parent_version, method, status, sha256 FROM adapters FINAL",
    }
    out: dict[str, Any] = {}
    for name, sql in queries.items():
        result = store.query(sql)
        print_table(result.columns, result.rows, title=name)
        out[name] = result.dicts()
    return out
