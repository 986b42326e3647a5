"""`sentryml demo`: the main job on embedded defaults (local broker, chDB)."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console

from streams.commands.core import print_table, store_settings

console = Console()

_TOPICS = ["order", "refund", "invoice", "password reset", "delivery", "subscription"]
_ASKS = [
    "How do I change my {t}?",
    "Where is my {t} status?",
    "I need help with a {t} for account {n}.",
    "Can you explain the {t} policy?",
]


def generate_logs(n: int, *, seed: int = 7, base_model: str = "smollm2-135m-instruct") -> list:
    """Deterministic synthetic support-assistant traffic (the demo's phase-0 stand-in)."""
    from schemas.events import InferenceLog

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(seconds=n)
    logs = []
    for i in range(n):
        topic = rng.choice(_TOPICS)
        prompt = rng.choice(_ASKS).format(t=topic, n=rng.randint(1000, 9999))
        completion = f'{{"intent": "{topic}", "answer": "Please open Settings > {topic}."}}'
        logs.append(
            InferenceLog(
                request_id=str(uuid.UUID(int=rng.getrandbits(128))),
                ts=start + timedelta(seconds=i),
                base_model=base_model,
                adapter_version="v1",
                prompt=prompt,
                completion=completion,
                prompt_tokens=len(prompt.split()),
                completion_tokens=len(completion.split()),
                latency_ms=round(rng.uniform(80, 400), 1),
                app="support-bot",
            )
        )
    return logs


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        events: int = typer.Option(300, min=1, help="Inference logs to publish"),
        timeout: float = typer.Option(120.0, help="Seconds to wait for all events to arrive"),
    ) -> None:
        """Publish generated inference logs, consume them back, store them, summarize in SQL."""
        from confluent_kafka import Consumer

        from schemas.events import InferenceLog, decode_event
        from streams.config import ProducerSettings, WorkerSettings
        from streams.producer import InferenceLogger
        from streams.topics import Topics, create_topics
        from workers.store import open_store

        settings = WorkerSettings()
        console.print(
            f"[bold]broker[/] {settings.kafka.bootstrap}  [bold]store[/] {settings.store.url}"
        )
        create_topics(settings.kafka)
        logs = generate_logs(events)
        with InferenceLogger(ProducerSettings(kafka=settings.kafka), strict=True) as logger:
            for event in logs:
                logger.log(event)
        console.print(f"published {logger.stats.delivered}/{events} events through the SDK")
        if logger.stats.delivered != events:
            raise typer.Exit(1)

        wanted = {e.request_id for e in logs}
        consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": f"sentryml-demo-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([Topics(settings.kafka.topic_prefix).inference_logs])
        rows: list[dict] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while seen != wanted and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                event = decode_event(value, InferenceLog)
                if event.request_id in wanted and event.request_id not in seen:
                    seen.add(event.request_id)
                    row = event.to_row()
                    row.update(
                        app=event.app or "",
                        tenant=event.tenant or "",
                        prompt=event.prompt_text,
                        prompt_tokens=event.prompt_tokens or 0,
                        completion_tokens=event.completion_tokens or 0,
                        latency_ms=event.latency_ms or 0.0,
                        embed_bin=-1,
                        refusal=0,
                    )
                    row.pop("messages", None)
                    rows.append(row)
        consumer.close()
        console.print(f"consumed {len(seen)}/{events} events back from Kafka")
        if seen != wanted:
            raise typer.Exit(1)

        with open_store(store_settings()) as store:
            store.migrate()
            store.insert("inference_logs", rows, dedup_token=f"demo-{uuid.uuid4().hex}")
            result = store.query(
                "SELECT base_model, adapter_version, count() AS requests, "
                "round(avg(latency_ms), 1) AS mean_latency_ms, "
                "round(avg(completion_tokens), 1) AS mean_completion_tokens "
                "FROM inference_logs FINAL WHERE request_id IN {ids:Array(String)} "
                "GROUP BY base_model, adapter_version",
                {"ids": sorted(wanted)},
            )
        print_table(result.columns, result.rows, title="SQL summary (inference_logs)")
