"""The demo's traffic: synthetic and live requests, reviewer corrections, each client closed while the broker is up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.events import Feedback, InferenceLog
from streams.console import console

if TYPE_CHECKING:
    from streams.config import ProducerSettings
    from workers.kafka import KafkaSettings

from streams.demo._services import DemoFailed

BASE_MODEL = "smollm2-135m-instruct"


SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer only with JSON: "
    '{"intent": "<intent>", "answer": "<one short sentence>"}.'
)


OUT_OF_SCOPE = (
    '{"intent": "out_of_scope", "answer": "I can only help with orders, billing, '
    'shipping and your account."}'
)


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


def _live_completions(base_url: str, events: list[InferenceLog]) -> list[InferenceLog]:
    """Serve a slice of the traffic with the real model (SmolLM2 through llama.cpp), through
    the project's one OpenAI-compatible client."""
    import asyncio

    from workers.llm import ChatClient

    async def serve() -> list[InferenceLog]:
        client = ChatClient(base_url=base_url, model="smollm2-135m-instruct", name="live model")
        try:
            out = []
            for event in events:
                reply = await client.complete(
                    [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": event.prompt_text}],
                    max_tokens=64,
                )  # fmt: skip
                update = {
                    "completion": reply.content,
                    "completion_tokens": reply.completion_tokens,
                    "latency_ms": reply.latency_ms,
                    "app": "support-bot-live",
                }
                out.append(event.model_copy(update=update))
            return out
        finally:
            await client.aclose()

    out = asyncio.run(serve())
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
