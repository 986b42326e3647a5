"""The LLM judge client: rubric scoring of sampled completions on any OpenAI-compatible endpoint.

One judge call grades one dimension (format compliance 1–5, factual consistency 1–5,
refusal yes/no) and answers a JSON object constrained by ``response_format`` and parsed
strictly with pydantic. An answer that does not parse is asked for once more, then
recorded as a judge failure (``ok=False``, no score) — never guessed into a score.

Transport failures are retried by the one model client, :class:`workers.llm.ChatClient`
(not the SDK): jittered exponential backoff, ``Retry-After`` honoured, a per-call timeout.
When a call still fails after ``max_attempts`` the request raises :class:`JudgeUnavailable`
and the agent sends it to the DLQ. At most ``max_concurrency`` HTTP calls are in flight.

>>> client = JudgeClient(JudgeSettings(base_url="http://127.0.0.1:8080/v1"))  # doctest: +SKIP
>>> scores = await client.score(log)                                         # doctest: +SKIP
>>> [(s.dimension, s.score, s.ok) for s in scores]                           # doctest: +SKIP
[('format', 4, True), ('factual', 5, True), ('refusal', 0, True)]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from pydantic import ValidationError

from schemas.events import InferenceLog, JudgeScore, decode_event, utcnow
from schemas.exceptions import InvalidEvent
from workers.dlq import RawRecord, Rejected
from workers.exceptions import JudgeError, JudgeRejected, JudgeUnavailable
from workers.judge._prompts import (
    RUBRICS,
    RefusalVerdict,
    Rubric,
    ScaleVerdict,
    answer_schema,
    build_messages,
    detect_injection,
    new_boundary,
)
from workers.judge._settings import JudgeSettings
from workers.llm import ChatClient, Completion, LLMRejected, LLMUnavailable
from workers.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Longest prompt/completion text sent to the judge (characters; the rest is cut, noted).
MAX_REVIEW_CHARS = 12_000
#: Longest rationale stored.
MAX_STORED_RATIONALE = 500

Verdict = ScaleVerdict | RefusalVerdict


# -- deterministic checks ------------------------------------------------------------------


def load_output_schema(path: Path) -> dict[str, Any]:
    """Read and check a model's declared output JSON Schema; ``ValueError`` names the file."""
    try:
        schema = json.loads(Path(path).read_text())
        validators.validator_for(schema).check_schema(schema)
    except (OSError, ValueError, jsonschema_exceptions.SchemaError) as exc:
        raise ValueError(f"output schema {path} is not a readable JSON Schema: {exc}") from exc
    if not isinstance(schema, dict):
        raise ValueError(f"output schema {path} must be a JSON object")
    return schema


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S)


def _unfence(text: str) -> str:
    text = text.strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def schema_check(completion: str, schema: dict[str, Any]) -> bool:
    """Whether ``completion`` is JSON valid under ``schema`` (a ```json fence is allowed).

    >>> schema_check('{"a": 1}', {"type": "object", "required": ["a"]})
    True
    >>> schema_check("sure! here it is", {"type": "object"})
    False
    """
    try:
        instance = json.loads(_unfence(completion))
    except ValueError:
        return False
    return bool(validators.validator_for(schema)(schema).is_valid(instance))


def parse_verdict(rubric: Rubric, content: str) -> Verdict:
    """Parse a judge answer strictly; ``ValueError`` says why it is not usable."""
    model: type[ScaleVerdict] | type[RefusalVerdict] = (
        RefusalVerdict if rubric.scale == "bool" else ScaleVerdict
    )
    try:
        return model.model_validate_json(_unfence(content))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<answer>'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"unparsable judge answer ({problems}): {content[:200]!r}") from exc


def review_text(event: InferenceLog) -> str:
    """The request as the judge sees it: the prompt, or the chat turns as ``role: text``."""
    if event.prompt is not None:
        return event.prompt
    return "\n".join(f"{m.role}: {m.content}" for m in event.messages or [])


def _clip(text: str) -> str:
    if len(text) <= MAX_REVIEW_CHARS:
        return text
    return text[:MAX_REVIEW_CHARS] + f"\n[... {len(text) - MAX_REVIEW_CHARS} characters cut]"


# -- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The judge's answer on one dimension (after the one re-ask of an unparsable answer)."""

    verdict: Verdict | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class JudgeClient:
    """Async judge on an OpenAI-compatible endpoint, with bounded concurrency and retries.

    The HTTP side is one :class:`workers.llm.ChatClient` (``self.llm``); its errors leave
    as :class:`JudgeUnavailable` / :class:`JudgeRejected` with the same reason and attempts.
    ``http_client`` lets a caller bring its own HTTP client (an ``httpx2.AsyncClient``, the
    library the openai SDK uses: proxies, custom TLS); ``sleep`` and ``rng`` make the
    backoff schedule reproducible. One client belongs to one event loop.
    """

    def __init__(
        self,
        settings: JudgeSettings,
        *,
        http_client: Any = None,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.now = now
        self.llm = ChatClient(
            base_url=settings.base_url,
            model=settings.model,
            api_key=settings.api_key,
            timeout_s=settings.timeout_s,
            max_concurrency=settings.max_concurrency,
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_s=settings.backoff_s,
                max_s=settings.max_backoff_s,
            ),
            max_retry_after_s=settings.max_backoff_s,
            response_format=settings.response_format,
            name="judge",
            http_client=http_client,
            sleep=sleep,
            rng=rng,
        )
        self._output_schemas = {
            name: load_output_schema(model.output_schema)
            for name, model in settings.models.items()
            if model.output_schema is not None
        }
        #: counters: ``attempts``, ``retry:<reason>`` (the HTTP client's), ``unparsable``,
        #: ``reask`` ...
        self.stats: Counter[str] = self.llm.stats

    async def aclose(self) -> None:
        await self.llm.aclose()

    @property
    def response_format_style(self) -> str:
        """``json_schema`` or ``json_object`` (what ``auto`` settled on)."""
        return self.llm.response_format_style

    @property
    def in_flight(self) -> int:
        """HTTP calls in flight now."""
        return self.llm.in_flight

    @property
    def max_in_flight(self) -> int:
        """The most HTTP calls ever in flight at once."""
        return self.llm.max_in_flight

    async def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], name: str
    ) -> Completion:
        """One chat completion constrained to ``schema``; raises :class:`JudgeError`."""
        try:
            return await self.llm.complete(
                messages,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                schema=schema,
                schema_name=name,
            )
        except LLMRejected as exc:
            raise JudgeRejected(str(exc), reason=exc.reason, attempts=exc.attempts) from exc
        except LLMUnavailable as exc:
            raise JudgeUnavailable(str(exc), reason=exc.reason, attempts=exc.attempts) from exc

    # -- one rubric --------------------------------------------------------------------
    async def ask(
        self,
        rubric: Rubric,
        *,
        prompt: str,
        completion: str,
        output_schema: dict[str, Any] | None = None,
        boundary: str | None = None,
    ) -> Answer:
        """Grade ``completion`` on one rubric; an unparsable answer is asked for once more."""
        schema = answer_schema(rubric)
        boundary = boundary or new_boundary()
        tokens_in = tokens_out = 0
        latency = 0.0
        error = ""
        for ask_no in (1, 2):
            # The re-ask says what was wrong, so a deterministic (temperature 0) judge does
            # not simply repeat itself; appended last, it keeps the cached prefix.
            note = None
            if ask_no == 2:
                note = (
                    f"Your previous reply was not usable ({error[:200]}). Reply with the JSON "
                    "object only, exactly the two keys asked for."
                )
            messages = build_messages(
                rubric,
                prompt=_clip(prompt),
                completion=_clip(completion),
                boundary=boundary,
                output_schema=output_schema,
                retry_note=note,
            )
            result = await self.complete(messages, schema, f"sentryml_judge_{rubric.name}")
            tokens_in += result.prompt_tokens or 0
            tokens_out += result.completion_tokens or 0
            latency += result.latency_ms
            try:
                verdict = parse_verdict(rubric, result.content)
            except ValueError as exc:
                error = str(exc)
                if result.finish_reason == "length":
                    error += f" (cut at max_tokens={self.settings.max_tokens})"
                self.stats["unparsable"] += 1
                if ask_no == 1:
                    self.stats["reask"] += 1
                    log.info(
                        "judge answer on %s unparsable, asking once more: %s", rubric.name, error
                    )
                continue
            return Answer(verdict, None, tokens_in, tokens_out, latency)
        return Answer(None, error, tokens_in, tokens_out, latency)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        s = self.settings
        return (
            prompt_tokens * s.price_per_1k_prompt_tokens_usd
            + completion_tokens * s.price_per_1k_completion_tokens_usd
        ) / 1000

    # -- one sampled request -------------------------------------------------------------
    async def score(self, event: InferenceLog) -> list[JudgeScore]:
        """Every configured dimension of one request, as ``judge_scores`` rows.

        Raises :class:`JudgeUnavailable` / :class:`JudgeRejected` when any dimension's call
        failed for good (the request then goes to the DLQ; no partial rows).
        """
        prompt = review_text(event)
        flags = detect_injection(event.completion)
        if flags:
            log.warning("request %s: completion addresses the judge (%s)", event.request_id, flags)
        output_schema = self._output_schemas.get(event.base_model)
        schema_valid = schema_check(event.completion, output_schema) if output_schema else None
        dimensions = self.settings.dimensions
        boundary = new_boundary()  # one per request: its calls share a cacheable prefix
        results = await asyncio.gather(
            *(
                self.ask(
                    RUBRICS[d],
                    prompt=prompt,
                    completion=event.completion,
                    output_schema=output_schema if d == "format" else None,
                    boundary=boundary,
                )
                for d in dimensions
            ),
            return_exceptions=True,
        )
        answers: list[Answer] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            answers.append(result)
        now = self.now()
        scores = []
        for dimension, answer in zip(dimensions, answers, strict=True):
            score: int | None = None
            if isinstance(answer.verdict, RefusalVerdict):
                score = int(answer.verdict.refused)
            elif isinstance(answer.verdict, ScaleVerdict):
                score = answer.verdict.score
            scores.append(
                JudgeScore(
                    ts=now,
                    request_id=event.request_id,
                    base_model=event.base_model,
                    adapter_version=event.adapter_version,
                    judge_model=self.settings.model,
                    dimension=dimension,
                    score=score,
                    ok=answer.verdict is not None,
                    rationale=(answer.verdict.rationale if answer.verdict else "")[
                        :MAX_STORED_RATIONALE
                    ],
                    schema_valid=schema_valid if dimension == "format" else None,
                    injection_flag=bool(flags),
                    latency_ms=answer.latency_ms,
                    prompt_tokens=answer.prompt_tokens,
                    completion_tokens=answer.completion_tokens,
                    cost_usd=self.cost_usd(answer.prompt_tokens, answer.completion_tokens),
                    error=answer.error,
                )
            )
        return scores

    async def score_rubric(
        self, *, prompt: str, output: str, rubric: str
    ) -> tuple[int | None, str]:
        """Grade ``output`` 1–5 against a free-text ``rubric``: ``(score, rationale)``.

        ``score`` is ``None`` when the judge's answer did not parse twice (the rationale
        then says why). Transport failures raise :class:`JudgeUnavailable`.
        """
        custom = Rubric(name="custom", title="the rubric below", criteria=rubric)
        answer = await self.ask(custom, prompt=prompt, completion=output)
        if isinstance(answer.verdict, ScaleVerdict):
            return answer.verdict.score, answer.verdict.rationale
        return None, answer.error or "no verdict"


async def score_rubric(
    client: JudgeClient, *, prompt: str, output: str, rubric: str
) -> tuple[int | None, str]:
    """Module-level form of :meth:`JudgeClient.score_rubric` (for the golden-set checks)."""
    return await client.score_rubric(prompt=prompt, output=output, rubric=rubric)


# -- a batch from the judge-requests topic ----------------------------------------------------


@dataclass
class JudgedBatch:
    """What one batch produced: score rows to store, failures for the DLQ."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[Rejected] = field(default_factory=list)
    scored: int = 0
    skipped_budget: int = 0
    duplicates: int = 0
    dedup_token: str = ""


def batch_dedup_token(records: Sequence[RawRecord]) -> str:
    """Same messages → same token, whichever worker stores them (a retried insert is a no-op)."""
    ids = sorted(f"{r.topic}/{r.partition}@{r.offset}" for r in records)
    return "judge-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


async def judge_batch(
    client: JudgeClient,
    records: Sequence[RawRecord],
    *,
    budget_open: Callable[[str], bool] | None = None,
    max_event_bytes: int = 1_048_576,
) -> JudgedBatch:
    """Score a batch of judge requests concurrently (bounded by the client's semaphore).

    A request that fails to decode or whose judge calls fail for good ends in
    ``failed`` (→ DLQ); one whose model's budget is spent is skipped (counted); one
    seen twice in the batch is scored once.
    """
    out = JudgedBatch(dedup_token=batch_dedup_token(records))
    todo: list[tuple[RawRecord, InferenceLog]] = []
    seen: set[str] = set()
    for record in records:
        try:
            event = decode_event(record.value, InferenceLog, max_bytes=max_event_bytes)
        except InvalidEvent as exc:
            log.warning("judge request %s to DLQ: %s", record.coordinates, exc)
            out.failed.append(Rejected(record, f"invalid_{exc.reason}", str(exc)))
            continue
        if event.request_id in seen:
            out.duplicates += 1
            continue
        seen.add(event.request_id)
        if budget_open is not None and not budget_open(event.base_model):
            out.skipped_budget += 1
            continue
        todo.append((record, event))

    async def one(record: RawRecord, event: InferenceLog) -> list[JudgeScore] | Rejected:
        try:
            return await client.score(event)
        except JudgeError as exc:
            log.warning(
                "judge request %s (request_id=%s) to DLQ after %d attempts: %s",
                record.coordinates,
                event.request_id,
                exc.attempts,
                exc,
            )
            return Rejected(record, exc.reason, str(exc))
        except Exception as exc:  # a bug must not stall the stream: DLQ it, loudly
            log.exception(
                "judge request %s (request_id=%s) failed", record.coordinates, event.request_id
            )
            return Rejected(record, "internal", f"{type(exc).__name__}: {exc}")

    results = await asyncio.gather(*(one(r, e) for r, e in todo))
    for result in results:
        if isinstance(result, Rejected):
            out.failed.append(result)
        else:
            out.scored += 1
            out.rows.extend(score.to_row() for score in result)
    return out
