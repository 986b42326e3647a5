"""The main job end to end on one machine: drift → alert → gated retrain → promotion.

:func:`run_demo` starts every real part as its own process — the local Kafka broker, the
local OpenAI-compatible server (llama.cpp + SmolLM2), the shared embedded store
(``sentryml store serve`` over chDB), the stream worker and the trainer — then plays the
story and stops everything it started, also on Ctrl-C or failure.

The story (a customer-support assistant that must answer in JSON):

1. a training set is generated, a baseline fitted on it, and the live model (its own
   llama.cpp server; the judge has another) is checked against the starter golden set;
2. phase 1: in-distribution traffic — no drift alerts; judge scores recorded;
3. phase 2: users ask about other domains and the answers degrade (rambling, broken
   format) — embedding and output drift alerts arrive live;
4. reviewers correct the bad answers (feedback); the retrain gate fires; the trainer
   fine-tunes a LoRA adapter on CPU, evaluates it against the incumbent on the golden set
   and promotes or rejects it with the numbers;
5. the deployer converts the promoted adapter to a GGUF LoRA and restarts the live
   server with it; the worker runs the golden set against the server now serving it;
6. phase 3: traffic to the new adapter; output drift is back to ``ok`` for it and the
   judge's format mean recovers;
7. a summary from SQL (with the whole timeline) and the HTML report.

Traffic completions: SmolLM2 serves a slice of the requests for real (``live_requests``);
on two CPU cores it writes ~15 tokens/s, so the bulk of the traffic is played from the
deterministic synthetic generator (``workers.synthetic``), which stands in for the
fine-tuned model's outputs.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.console import console
from streams.demo._services import (
    REPO,
    DemoFailed,
    _port_open,
    _run,
    _stage,
    _try_open,
    free_port,
    services,
    wait_until,
)
from streams.demo._summary import (
    _deployed,
    _evaluated_since,
    _golden_run,
    _print_drift,
    _recovered,
    _summary,
)
from streams.demo._traffic import (
    BASE_MODEL,
    GOLDEN_FILE,
    SYSTEM_PROMPT,
    _corrections,
    _live_completions,
    _publish,
    _send_feedback,
)

#: Generation cap of every golden run of the demo (the incumbent's and the worker's).
GOLDEN_MAX_TOKENS = 96


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
    train_steps: int = 40
    train_batch_size: int = 4
    learning_rate: float = 1e-3
    eval_examples: int = 20
    max_new_tokens: int = 64
    phase3_events: int = 300
    timeout_s: float = 900.0
    report: bool = True


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
        _stage(0, "set-up: Kafka broker, judge and live model servers, store, topics")
        kafka_port, llm_port, store_port = free_port(), free_port(), free_port()
        live_port = free_port()
        svc.script("kafka_local", port=kafka_port)
        svc.script("llm_local", port=llm_port)
        # The live model has a server of its own: the deployer restarts it with each new
        # adapter, and the judge must neither change model nor go offline then.
        live_dir = svc.script("llm_local", port=live_port, folder="llm_live")
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
        live_url = f"http://127.0.0.1:{live_port}/v1"
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
        golden = load_golden_set(GOLDEN_FILE)
        chat = OpenAIChat(live_url, "smollm2-135m-instruct", max_tokens=GOLDEN_MAX_TOKENS)
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
            # The deploy-triggered golden run, against the live server once it serves the
            # new adapter (not on `promoted`: the old model still answers then).
            "SENTRYML_GOLDEN_FILE": str(GOLDEN_FILE),
            "SENTRYML_GOLDEN_BASE_URL": live_url,
            "SENTRYML_GOLDEN_MODEL": "smollm2-135m-instruct",
            "SENTRYML_GOLDEN_BASE_MODEL": BASE_MODEL,
            "SENTRYML_GOLDEN_THRESHOLD": "0.5",
            "SENTRYML_GOLDEN_MAX_TOKENS": str(GOLDEN_MAX_TOKENS),
            "SENTRYML_GOLDEN_CONCURRENCY": "2",
            "SENTRYML_GOLDEN_RUN_ON": '["deployed"]',
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
             "--set", f"learning_rate={cfg.learning_rate}",
             # All projections, rank 16, lr 1e-3: the earlier attention-only rank 8 at
             # lr 2e-4 changed no golden answer in 30 steps.
             "--set", "lora_r=16",
             "--set", "lora_alpha=32",
             "--set", "target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
             # The golden set's system prompt is ~200 tokens; the reply must fit after it.
             "--set", "max_seq_length=384",
             "--set", f"min_examples={{style: {minimum}, vocabulary: {minimum}, "
                      f"task: {minimum}, instruction: {minimum}}}",
             "--set", f"system_prompt={json.dumps(SYSTEM_PROMPT)}",
             "--set", f"max_new_tokens={cfg.max_new_tokens}",
             "--set", f"max_eval_examples={cfg.eval_examples}"],
            trainer_env,
        )  # fmt: skip

        deployer = svc.process(
            "deployer",
            [sys.executable, "-m", "streams.cli", "deployer"],
            {
                **common_env,
                "SENTRYML_DEPLOY_TARGET": "llama_cpp",
                "SENTRYML_DEPLOY_LLAMA_DIR": str(live_dir),
                "SENTRYML_DEPLOY_CONSUMER_GROUP": f"demo-deployer-{run_tag}",
            },
        )

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
            for name, proc in (("worker", worker), ("trainer", trainer), ("deployer", deployer)):
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
        live = _live_completions(live_url, phase1[: cfg.live_requests])
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

        verdict = next(e for e in adapter_events if e["status"] in ("promoted", "rejected"))
        summary["verdict"] = {k: verdict.get(k) for k in ("adapter_version", "status", "message")}
        if verdict["status"] == "promoted":
            version = verdict["adapter_version"]
            _stage(5, f"deploy {version} to the live server; golden set on the live model")
            wait_until(
                f"the deployer to serve {version}",
                lambda: tick() or _deployed(adapter_events, version),
                cfg.timeout_s,
                every=2.0,
            )
            # The trainer refits a baseline from the retrain set (the reviewers' corrections,
            # half of them deflections); the adapter's intended traffic is the training set's.
            refit = fit_baseline(
                records, embedder, base_model=BASE_MODEL, adapter_version=version, k=cfg.k,
                seed=0, source="demo-out/train.jsonl",
            )  # fmt: skip
            save_baseline(store, refit)
            console.print(f"baseline {refit.baseline_id} refitted for {version}")
            live_golden = wait_until(
                f"the worker's golden run on the live server now serving {version}",
                lambda: tick() or _golden_run(store, version),
                cfg.timeout_s,
                every=2.0,
            )
            summary["live_golden"] = live_golden
            summary["incumbent_golden"] = {
                "adapter_version": "none", "passed": result.run.passed,
                "total": result.run.total, "pass_rate": result.run.pass_rate,
            }  # fmt: skip
            console.print(
                f"golden on the live model: {version} {live_golden['passed']}/"
                f"{live_golden['total']} vs the incumbent {result.run.passed}/{result.run.total}"
            )

            _stage(6, f"phase 3: {cfg.phase3_events} requests to {version}")
            phase3 = to_inference_logs(
                support_records(cfg.phase3_events, seed=7), base_model=BASE_MODEL,
                adapter_version=version, seed=7,
            )  # fmt: skip
            live3 = _live_completions(live_url, phase3[: cfg.live_requests])
            before = counted()
            _publish(producer_settings, live3 + phase3[cfg.live_requests :])
            wait_until(
                "phase 3 counted by the worker",
                lambda: tick() or counted() >= before + cfg.phase3_events,
                cfg.timeout_s,
            )
            summary["recovery"] = wait_until(
                f"output drift of {version} evaluated as ok",
                lambda: tick() or _recovered(store, version),
                cfg.timeout_s,
                every=2.0,
            )
            _print_drift(store, "phase 3", adapter_version=version)
        else:
            console.print(
                "[bold yellow]the candidate was not promoted[/]: nothing to deploy "
                f"({verdict.get('message', '')})"
            )

        _stage(7, "summary")
        summary.update(_summary(store, summary.get("recovery")))
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
