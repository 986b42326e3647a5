"""The demo's traffic: synthetic and live requests, reviewer corrections, each client closed while the broker is up."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from schemas.events import Feedback, InferenceLog
from streams.console import console
from streams.demo._services import REPO, DemoFailed

if TYPE_CHECKING:
    from streams.config import ProducerSettings
    from workers.kafka import KafkaSettings


BASE_MODEL = "smollm2-135m-instruct"


GOLDEN_FILE = REPO / "workers" / "golden" / "sets" / "starter.yaml"


def _task_prompt() -> str:
    """The assistant's instructions are the golden set's: the live model is served, trained
    and checked with the same system prompt, so the golden set measures the task it runs."""
    from workers.golden import load_golden_set

    system = load_golden_set(GOLDEN_FILE).system
    if not system:
        raise DemoFailed(f"{GOLDEN_FILE} has no system prompt")
    return system


SYSTEM_PROMPT = _task_prompt()

#: The task's intents (the golden set's JSON schema) for the synthetic generator's finer ones:
#: reviewers label in the taxonomy the assistant is specified with.
TASK_INTENT = {
    "order_status": "delivery", "shipping_options": "delivery", "refund_request": "refund",
    "return_item": "refund", "damaged_item": "refund", "cancel_order": "order",
    "change_address": "order", "availability": "order", "promo_code": "order",
    "password_reset": "password_reset", "billing_issue": "invoice",
    "subscription": "subscription", "payment_method": "account", "account": "account",
}  # fmt: skip

#: How reviewers turn away requests from other domains (varied, so the adapter learns the
#: deflection, not one sentence to say to everything).
DEFLECTIONS = (
    "I can only help with orders, billing, shipping and your account.",
    "That is outside what I can do here: I answer questions about your Acme Shop orders, "
    "deliveries, refunds and account.",
    "I am the Acme Shop support assistant, so I can only answer questions about orders, "
    "payments, deliveries and accounts.",
    "This is not something Acme Shop support covers. Ask me about an order, a delivery, a "
    "refund or your account.",
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


def reviewed_answer(completion: str) -> str:
    """A reviewer's version of an in-domain answer: the task's intent, one sentence."""
    reply = json.loads(completion)
    sentence = reply["answer"].split(". ")[0].rstrip(".") + "."
    return json.dumps({"intent": TASK_INTENT[reply["intent"]], "answer": sentence})


def _corrections(
    in_scope: list[InferenceLog], out_of_scope: list[InferenceLog], n: int
) -> list[Feedback]:
    """Simulated reviewers: a fifth of the corrections turn away out-of-domain requests,
    the rest rewrite in-domain answers in the task's format (intent, one sentence)."""
    out = []
    for i, event in enumerate(out_of_scope[: n // 5]):
        deflect = json.dumps({"intent": "other", "answer": DEFLECTIONS[i % len(DEFLECTIONS)]})
        out.append(
            Feedback(
                request_id=event.request_id, base_model=event.base_model, label="bad",
                correction=deflect, prompt=event.prompt_text, reviewer="demo-reviewer",
            )
        )  # fmt: skip
    for event in in_scope[: n - len(out)]:
        out.append(
            Feedback(
                request_id=event.request_id, base_model=event.base_model, label="bad",
                correction=reviewed_answer(event.completion), prompt=event.prompt_text,
                reviewer="demo-reviewer",
            )
        )  # fmt: skip
    return out
