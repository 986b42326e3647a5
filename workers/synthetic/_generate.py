"""Deterministic, realistic text for tests, the demo and the benchmarks (no word salad).

The in-distribution domain is a customer-support assistant for an online store: users ask
about orders, refunds, returns, passwords, billing ..., and the fine-tuned model answers
with JSON ``{"intent": ..., "answer": ...}``. Prompts are built from many phrasings per
intent with slots (products, order numbers, dates, carriers, amounts), optional greetings
and sign-offs, so two seeds give different but same-distribution traffic.

Other domains (:data:`DOMAINS` minus ``"support"``) are clearly different questions —
cooking, legal, medical, programming, travel — for input-drift tests. Degraded outputs
(:data:`DEGRADATIONS`: long rambling, refusals, broken format) on support prompts are for
output-drift tests.

>>> recs = support_records(3, seed=1)
>>> json.loads(recs[0].completion)["intent"] in SUPPORT_INTENTS
True
>>> support_records(3, seed=1) == recs  # deterministic
True
>>> len(domain_prompts("cooking", 5, seed=2))
5
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from workers.baseline import TrainingRecord

if TYPE_CHECKING:
    from schemas.events import InferenceLog

from workers.synthetic._domains import _DOMAINS, DOMAINS, _domain_slots
from workers.synthetic._support import _GREETINGS, _SIGNOFFS, _SUPPORT, SUPPORT_INTENTS, _slots

#: Degraded-output kinds for :func:`degraded_records`.
DEGRADATIONS: tuple[str, ...] = ("rambling", "refusal", "broken_format")


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def _support_prompt(rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    body = _fill(rng.choice(_SUPPORT[intent][0]), slots)
    greeting, signoff = rng.choice(_GREETINGS), rng.choice(_SIGNOFFS)
    return " ".join(p for p in (greeting, _after(greeting, body), signoff) if p)


def _after(greeting: str, body: str) -> str:
    """Lowercase the first letter after "Hi," (but keep "I", "I'm", names of things)."""
    if greeting.endswith(",") and not (body.startswith(("I ", "I'")) or body[:2].isupper()):
        return body[0].lower() + body[1:]
    return body


def _support_answer(rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    answer = _fill(rng.choice(_SUPPORT[intent][1]), slots)
    return json.dumps({"intent": intent, "answer": answer})


def _support_conversations(n: int, rng: random.Random, answer: Any) -> list[TrainingRecord]:
    """``n`` support prompts, each answered by ``answer(rng, intent, slots)``."""
    _check_n(n)
    out = []
    for _ in range(n):
        intent = rng.choice(SUPPORT_INTENTS)
        slots = _slots(rng)
        out.append(
            TrainingRecord(
                prompt=_support_prompt(rng, intent, slots), completion=answer(rng, intent, slots)
            )
        )
    return out


def support_records(n: int, seed: int = 0) -> list[TrainingRecord]:
    """``n`` support conversations: prompt plus the JSON answer the fine-tuned model gives."""
    return _support_conversations(n, random.Random(f"support-{seed}"), _support_answer)


def domain_records(domain: str, n: int, seed: int = 0) -> list[TrainingRecord]:
    """``n`` question/answer pairs from ``domain`` (plain-text answers outside support)."""
    _check_n(n)
    if domain == "support":
        return support_records(n, seed)
    if domain not in _DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    rng = random.Random(f"{domain}-{seed}")
    questions, answers = _DOMAINS[domain]
    out = []
    for _ in range(n):
        slots = _domain_slots(rng)
        prompt = _fill(rng.choice(questions), slots)
        if rng.random() < 0.25:
            greeting = rng.choice(["Hi,", "Hello,", "Quick question:"])
            prompt = f"{greeting} {_after(greeting, prompt)}"
        out.append(TrainingRecord(prompt=prompt, completion=_fill(rng.choice(answers), slots)))
    return out


def domain_prompts(domain: str, n: int, seed: int = 0) -> list[str]:
    """``n`` user prompts from ``domain`` (one of :data:`DOMAINS`)."""
    return [r.prompt for r in domain_records(domain, n, seed)]


_RAMBLE = [
    "Thank you so much for reaching out to us today, we really appreciate you taking the time to contact support.",
    "I completely understand how frustrating this situation must be and I want to make sure we get this sorted out for you.",
    "As you may know, our team is always working hard to make sure every customer has the best possible experience.",
    "There are a number of different things that could be going on here, so let me walk you through some of them.",
    "In some cases this can happen because of delays at the warehouse, and in other cases it can be related to the carrier.",
    "It is also worth mentioning that our policies are designed to be fair to everyone, which is something we take very seriously.",
    "Please rest assured that your satisfaction is our top priority and we will do everything we can to help.",
    "If you have any other questions at all, please do not hesitate to reach out, as we are always happy to help.",
]  # fmt: skip


_REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that. Please contact a human agent.",
    "As an AI assistant, I am not able to provide that information.",
    "I'm afraid I am unable to help with this request.",
    "Sorry, I won't be able to help with that.",
    "I must decline to answer that question.",
]  # fmt: skip


def _degraded(kind: str, rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    if kind == "rambling":
        n = rng.randint(6, 14)
        body = " ".join(rng.choice(_RAMBLE) for _ in range(n))
        core = _fill(rng.choice(_SUPPORT[intent][1]), slots)
        return json.dumps({"intent": intent, "answer": f"{body} {core} {rng.choice(_RAMBLE)}"})
    if kind == "refusal":
        return rng.choice(_REFUSALS)
    if kind == "broken_format":
        answer = _fill(rng.choice(_SUPPORT[intent][1]), slots)
        style = rng.randrange(3)
        if style == 0:  # plain text instead of JSON
            return answer
        if style == 1:  # truncated JSON
            full = json.dumps({"intent": intent, "answer": answer})
            return full[: rng.randint(12, max(13, len(full) - 5))]
        return json.dumps({"response": answer, "category": intent.upper()})  # wrong keys
    raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")


def degraded_records(kind: str, n: int, seed: int = 0) -> list[TrainingRecord]:
    """Support prompts with degraded answers: ``rambling``, ``refusal`` or ``broken_format``."""
    _check_n(n)
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    return _support_conversations(
        n,
        random.Random(f"degraded-{kind}-{seed}"),
        lambda rng, intent, slots: _degraded(kind, rng, intent, slots),
    )


def to_inference_logs(
    records: Sequence[TrainingRecord],
    *,
    base_model: str,
    adapter_version: str = "none",
    seed: int = 0,
    start: datetime | None = None,
    spacing: timedelta = timedelta(milliseconds=100),
    app: str = "support-bot",
) -> list[InferenceLog]:
    """Wrap records as :class:`~schemas.events.InferenceLog` events (deterministic ids).

    Timestamps start at ``start`` (default: now minus the span) and step by ``spacing``.
    """
    from schemas.events import InferenceLog
    from workers.stats import tokenize

    rng = random.Random(f"logs-{seed}")
    begin = start or datetime.now(UTC) - spacing * len(records)
    return [
        InferenceLog(
            request_id=str(uuid.UUID(int=rng.getrandbits(128))),
            ts=begin + spacing * i,
            base_model=base_model,
            adapter_version=adapter_version,
            prompt=r.prompt,
            completion=r.completion,
            prompt_tokens=len(tokenize(r.prompt)),
            completion_tokens=len(tokenize(r.completion)),
            latency_ms=round(rng.uniform(80, 400), 1),
            app=app,
        )
        for i, r in enumerate(records)
    ]


def write_jsonl(records: Sequence[TrainingRecord], path: str) -> None:
    """Write records as the training JSONL (``{"prompt": ..., "completion": ...}`` per line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"prompt": r.prompt, "completion": r.completion}) + "\n")


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
