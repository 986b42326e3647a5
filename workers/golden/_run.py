"""Golden sets: fixed prompts with checks, run against the live model as a smoke test.

A golden set is a JSONL file (one case per line) or a YAML file (a list of cases, or a
mapping with ``name``, ``system`` and ``cases``). Each case has an ``id``, a ``prompt`` or
chat ``messages``, an optional reference answer ``expected``, ``tags`` for per-tag pass
rates, and one or more ``checks``: ``exact``, ``contains``, ``regex``, ``json_schema``,
``refusal``, ``max_tokens``, ``judge``. A case passes when every one of its checks passes.
``docs/golden.md`` is the user guide; ``schemas/json/golden_case.schema.json`` the schema.

Three layers, each usable alone:

- :func:`load_golden_set` parses and validates a file, naming the case and field at fault.
- :func:`run_checks` scores one output against one case (pure, except the injected judge).
- :func:`run_golden` generates every case with bounded concurrency (through
  :class:`OpenAIChat` or any injected ``generate(case)``), scores, stores the results,
  compares with the previous run and raises an alert when the pass rate is under threshold.

>>> case = GoldenCase(id="c1", prompt="2+2?", expected="4", checks=Checks(exact=True))
>>> asyncio.run(run_checks(case, " 4\\n")).passed
True
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, cast

import jsonschema
import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.events import Alert, ChatMessage, GoldenRun, GoldenTrigger, utcnow
from schemas.exceptions import SentryMLError
from workers.stats import is_refusal, tokenize
from workers.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "CaseResult",
    "CheckOutcome",
    "Checks",
    "GoldenCase",
    "GoldenError",
    "GoldenRunResult",
    "GoldenSet",
    "InvalidGoldenSet",
    "JudgeCheck",
    "ModelUnavailable",
    "OpenAIChat",
    "due_run",
    "judge_from_client",
    "load_golden_set",
    "run_checks",
    "run_golden",
]


class GoldenError(SentryMLError):
    """Base of the golden-set errors."""


class InvalidGoldenSet(GoldenError, ValueError):
    """A golden-set file is malformed. The message names the file, line, case id and field.

    Fix the case and check the file with ``sentryml golden validate FILE``.
    """


class ModelUnavailable(GoldenError):
    """No case could be generated: the model endpoint is down or misconfigured.

    Nothing is stored and nobody is paged (a golden run measures behaviour, not uptime);
    check ``--base-url`` / ``SENTRYML_GOLDEN_BASE_URL``, the model name and the server.
    """


# --------------------------------------------------------------------------------------
# The file format
# --------------------------------------------------------------------------------------

CaseId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:/-]+$")
]


#: A string or a list of strings in the file; always a list in the model.
OneOrMany = Annotated[
    list[str],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JudgeCheck(_Model):
    """Score the output with the LLM judge against a rubric; pass at ``threshold`` or above."""

    rubric: str = Field(..., min_length=1, description="What a good answer does, for the judge.")
    threshold: float = Field(
        4.0, ge=1, le=5, description="Lowest passing judge score on the 1–5 scale."
    )


class Checks(_Model):
    """What the output must satisfy. At least one check; all must pass."""

    exact: bool = Field(
        False, description="Output equals `expected` (leading/trailing whitespace ignored)."
    )
    contains: OneOrMany = Field(
        default_factory=list, description="Substrings that must all appear (case-insensitive)."
    )
    regex: OneOrMany = Field(
        default_factory=list,
        description="Python regular expressions that must all match somewhere (re.search); "
        "use inline flags such as (?i) or (?s).",
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="The whole output must parse as JSON and validate against this schema."
    )
    refusal: bool | None = Field(
        None, description="true: the model must refuse; false: it must not refuse."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="The output must be at most this many tokens long."
    )
    judge: JudgeCheck | None = Field(None, description="Rubric scored by the LLM judge.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return schema

    @model_validator(mode="after")
    def _at_least_one(self) -> Checks:
        if not self.names():
            raise ValueError(
                "a case needs at least one check: exact, contains, regex, json_schema, "
                "refusal, max_tokens or judge"
            )
        return self

    def names(self) -> list[str]:
        """The checks this case uses, in evaluation order."""
        active = {
            "exact": self.exact,
            "contains": bool(self.contains),
            "regex": bool(self.regex),
            "json_schema": self.json_schema is not None,
            "refusal": self.refusal is not None,
            "max_tokens": self.max_tokens is not None,
            "judge": self.judge is not None,
        }
        return [name for name, on in active.items() if on]


class GoldenCase(_Model):
    """One golden case: an input, an optional reference answer, checks and tags."""

    id: CaseId = Field(..., description="Unique within the set; letters, digits, _.:/-")
    prompt: str | None = Field(None, description="A single user turn; or give `messages`.")
    messages: list[ChatMessage] | None = Field(None, description="Chat turns sent as-is.")
    system: str | None = Field(
        None, description="System prompt; defaults to the set's `system` (YAML sets)."
    )
    expected: str | None = Field(
        None, description="Reference answer: used by `exact`, shown in diffs, given to the judge."
    )
    tags: list[str] = Field(default_factory=list, description="format, safety, domain, ...")
    checks: Checks

    @model_validator(mode="after")
    def _consistent(self) -> GoldenCase:
        if (self.prompt is None) == (not self.messages):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.messages and self.messages[-1].role != "user":
            raise ValueError("`messages` must end with a user turn (the model answers it)")
        if self.checks.exact and self.expected is None:
            raise ValueError("the `exact` check needs `expected`")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The messages to send: the system prompt (unless the chat has one), then the turns."""
        turns = (
            [{"role": m.role, "content": m.content} for m in self.messages]
            if self.messages
            else [{"role": "user", "content": self.prompt or ""}]
        )
        if self.system and not any(t["role"] == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": self.system})
        return turns

    @property
    def user_text(self) -> str:
        """The last user turn (what a judge is told the user asked)."""
        if self.prompt is not None:
            return self.prompt
        return next(m.content for m in reversed(self.messages or []) if m.role == "user")


class GoldenSet(_Model):
    """A named list of cases with unique ids; ``system`` is the default system prompt."""

    name: str = Field(..., min_length=1, max_length=256)
    system: str | None = None
    cases: list[GoldenCase] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> GoldenSet:
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise ValueError(f"duplicate case id {case.id!r}")
            seen.add(case.id)
        return self

    def tags(self) -> dict[str, int]:
        """Number of cases per tag."""
        counts: dict[str, int] = {}
        for case in self.cases:
            for tag in case.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items()))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _case(raw: Any, *, source: str, where: str, system: str | None) -> GoldenCase:
    if not isinstance(raw, dict):
        raise InvalidGoldenSet(
            f"{source} {where}: a case must be a mapping, got {type(raw).__name__}"
        )
    label = f"case {raw['id']!r} ({where})" if isinstance(raw.get("id"), str) else where
    if system is not None and "system" not in raw:
        raw = {**raw, "system": system}
    try:
        return GoldenCase.model_validate(raw)
    except ValidationError as exc:
        raise InvalidGoldenSet(f"{source}: {label}: {_describe(exc)}") from exc


def _yaml_case_lines(text: str) -> list[int]:
    """1-based line of each case in a YAML set (from the node tree, not the parsed data)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "cases"), None)
    if isinstance(node, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in node.value]
    return []


def parse_golden_set(
    text: str, *, fmt: Literal["jsonl", "yaml"], name: str, source: str = "<golden set>"
) -> GoldenSet:
    """Parse golden-set text; :class:`InvalidGoldenSet` names the line, case id and field.

    >>> try:
    ...     parse_golden_set('{"id": "a", "prompt": "hi", "checks": {}}', fmt="jsonl", name="x")
    ... except InvalidGoldenSet as exc:
    ...     print(exc)
    <golden set>: case 'a' (line 1): checks: a case needs at least one check: exact, contains, regex, json_schema, refusal, max_tokens or judge
    """
    system: str | None = None
    cases: list[GoldenCase] = []
    if fmt == "jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise InvalidGoldenSet(f"{source}: line {lineno}: not valid JSON: {exc}") from exc
            cases.append(_case(raw, source=source, where=f"line {lineno}", system=None))
    elif fmt == "yaml":
        try:
            data = yaml.safe_load(text)
            lines = _yaml_case_lines(text)
        except yaml.YAMLError as exc:
            raise InvalidGoldenSet(f"{source}: not valid YAML: {exc}") from exc
        if isinstance(data, dict):
            unknown = set(data) - {"name", "system", "cases"}
            if unknown:
                raise InvalidGoldenSet(
                    f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                    "allowed: name, system, cases"
                )
            name = str(data.get("name") or name)
            system = data.get("system")
            if system is not None and not isinstance(system, str):
                raise InvalidGoldenSet(f"{source}: `system` must be a string")
            data = data.get("cases")
        if not isinstance(data, list):
            raise InvalidGoldenSet(
                f"{source}: expected a list of cases or a mapping with `cases`, "
                f"got {type(data).__name__}"
            )
        for index, raw in enumerate(data):
            where = f"line {lines[index]}" if index < len(lines) else f"case #{index + 1}"
            cases.append(_case(raw, source=source, where=where, system=system))
    else:
        raise ValueError(f"fmt must be 'jsonl' or 'yaml', got {fmt!r}")
    if not cases:
        raise InvalidGoldenSet(f"{source}: no cases")
    try:
        return GoldenSet(name=name, system=system, cases=cases)
    except ValidationError as exc:
        raise InvalidGoldenSet(f"{source}: {_describe(exc)}") from exc


def load_golden_set(path: str | Path) -> GoldenSet:
    """Load a ``.jsonl`` or ``.yaml``/``.yml`` golden set; its name defaults to the file stem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        fmt: Literal["jsonl", "yaml"] = "jsonl"
    elif suffix in (".yaml", ".yml"):
        fmt = "yaml"
    else:
        raise InvalidGoldenSet(f"{path}: golden sets are .jsonl, .yaml or .yml files")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidGoldenSet(f"cannot read golden set {path}: {exc}") from exc
    return parse_golden_set(text, fmt=fmt, name=path.stem, source=str(path))


def render_json_schemas() -> dict[str, str]:
    """``{file name: JSON text}`` of the golden-set JSON Schemas (committed in schemas/json)."""
    out = {}
    for file_name, model in (
        ("golden_case.schema.json", GoldenCase),
        ("golden_set.schema.json", GoldenSet),
    ):
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://sentryml.dev/schemas/{file_name}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[file_name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


# --------------------------------------------------------------------------------------
# Checks: pure functions, output in, outcome out
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str = ""


#: The judge: ``(prompt, output, rubric) -> (score on 1–5, rationale)``.
JudgeFn = Callable[[str, str, str], Awaitable[tuple[float, str]]]


def approx_tokens(text: str) -> int:
    """Words and punctuation marks: a stand-in when the server reports no token usage."""
    return len(tokenize(text))


def check_exact(output: str, expected: str) -> CheckOutcome:
    ok = output.strip() == expected.strip()
    return CheckOutcome("exact", ok, "" if ok else "output differs from expected")


def check_contains(output: str, needles: Sequence[str]) -> CheckOutcome:
    folded = output.casefold()
    missing = [n for n in needles if n.casefold() not in folded]
    return CheckOutcome("contains", not missing, f"missing {missing}" if missing else "")


def check_regex(output: str, patterns: Sequence[str]) -> CheckOutcome:
    missing = [p for p in patterns if not re.search(p, output)]
    return CheckOutcome("regex", not missing, f"no match for {missing}" if missing else "")


def check_json_schema(output: str, schema: Mapping[str, Any]) -> CheckOutcome:
    try:
        value = json.loads(output)
    except ValueError as exc:
        return CheckOutcome("json_schema", False, f"output is not JSON: {exc}")
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path)
    )
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "<root>"
        return CheckOutcome("json_schema", False, f"at {where}: {first.message}")
    return CheckOutcome("json_schema", True)


def check_refusal(output: str, must_refuse: bool) -> CheckOutcome:
    refused = is_refusal(output)
    if refused == must_refuse:
        return CheckOutcome("refusal", True)
    return CheckOutcome(
        "refusal", False, "expected a refusal, got an answer" if must_refuse else "refused"
    )


def check_max_tokens(output: str, limit: int, tokens: int | None = None) -> CheckOutcome:
    """``tokens`` is the server-reported completion length; else :func:`approx_tokens`."""
    n = tokens if tokens is not None else approx_tokens(output)
    ok = n <= limit
    return CheckOutcome("max_tokens", ok, "" if ok else f"{n} tokens > {limit}")


async def check_judge(
    judge: JudgeFn | None, case: GoldenCase, output: str, spec: JudgeCheck
) -> CheckOutcome:
    if judge is None:
        return CheckOutcome("judge", False, "no judge configured")
    rubric = spec.rubric
    if case.expected is not None:
        rubric += f"\nReference answer: {case.expected}"
    try:
        score, rationale = await judge(case.user_text, output, rubric)
    except Exception as exc:  # the judge client's own errors: recorded as this check's failure
        return CheckOutcome("judge", False, f"judge failed: {type(exc).__name__}: {exc}")
    ok = score >= spec.threshold
    return CheckOutcome("judge", ok, f"score {score:g} (pass >= {spec.threshold:g}): {rationale}")


def judge_from_client(client: Any) -> JudgeFn:
    """Adapt a :class:`workers.judge.JudgeClient` to the ``judge`` check's callable.

    A verdict that did not parse (score ``None``) raises, which fails the check with the
    judge's reason rather than guessing a score.

    >>> client = JudgeClient(JudgeSettings())                  # doctest: +SKIP
    >>> await run_checks(case, output, judge=judge_from_client(client))  # doctest: +SKIP
    """

    async def judge(prompt: str, output: str, rubric: str) -> tuple[float, str]:
        score, rationale = await client.score_rubric(prompt=prompt, output=output, rubric=rubric)
        if score is None:
            raise GoldenError(f"no usable verdict: {rationale}")
        return float(score), rationale

    return judge


def needs_judge(cases: GoldenSet | Sequence[GoldenCase]) -> bool:
    """Whether any case has a ``judge`` check (then a judge endpoint is required)."""
    items = cases.cases if isinstance(cases, GoldenSet) else cases
    return any(c.checks.judge is not None for c in items)


@dataclass(frozen=True)
class CaseResult:
    """One case's verdict: every check's outcome, the output and how long it took."""

    case_id: str
    tags: tuple[str, ...]
    passed: bool
    checks: tuple[CheckOutcome, ...]
    output: str
    expected: str = ""
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def details(self) -> dict[str, str]:
        """``{check: why it failed}``, plus ``generation`` when the model call failed."""
        out = {c.name: c.detail for c in self.checks if not c.passed}
        if self.error:
            out["generation"] = self.error
        return out


async def run_checks(
    case: GoldenCase,
    output: str,
    *,
    judge: JudgeFn | None = None,
    tokens: int | None = None,
    latency_ms: float = 0.0,
) -> CaseResult:
    """Score one output against one case. Only the ``judge`` check awaits anything.

    >>> case = GoldenCase(id="j", prompt="JSON please", checks=Checks(json_schema={"type": "object"}))
    >>> asyncio.run(run_checks(case, "[1]")).failed_checks
    ['json_schema']
    """
    checks = case.checks
    outcomes: list[CheckOutcome] = []
    if checks.exact:
        outcomes.append(check_exact(output, case.expected or ""))
    if checks.contains:
        outcomes.append(check_contains(output, checks.contains))
    if checks.regex:
        outcomes.append(check_regex(output, checks.regex))
    if checks.json_schema is not None:
        outcomes.append(check_json_schema(output, checks.json_schema))
    if checks.refusal is not None:
        outcomes.append(check_refusal(output, checks.refusal))
    if checks.max_tokens is not None:
        outcomes.append(check_max_tokens(output, checks.max_tokens, tokens))
    if checks.judge is not None:
        outcomes.append(await check_judge(judge, case, output, checks.judge))
    return CaseResult(
        case_id=case.id,
        tags=tuple(case.tags),
        passed=all(o.passed for o in outcomes),
        checks=tuple(outcomes),
        output=output,
        expected=case.expected or "",
        latency_ms=latency_ms,
    )


def _pretty(text: str) -> list[str]:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False).splitlines()
    except ValueError:
        return text.splitlines() or [""]


def diff_text(expected: str, output: str) -> str:
    """A unified diff of expected vs actual (JSON on both sides is pretty-printed first)."""
    lines = difflib.unified_diff(
        _pretty(expected), _pretty(output), "expected", "actual", lineterm="", n=2
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """A model's answer; ``completion_tokens`` when the server reports usage."""

    text: str
    completion_tokens: int | None = None
    finish_reason: str | None = None


#: ``generate(case)``: sync (run in a thread) or async; returns the text or a Generation.
Generate = Callable[[GoldenCase], "str | Generation | Awaitable[str | Generation]"]

_RETRY_STATUS = frozenset({408, 409, 429})


class OpenAIChat:
    """Generate golden outputs through an OpenAI-compatible chat API, deterministically.

    Temperature 0; transient failures (timeouts, connection errors, 408/409/429/5xx) are
    retried ``retries`` times with exponential backoff and jitter (``Retry-After`` honoured
    up to 30 s). ``max_tokens`` caps generation; a case with a ``max_tokens`` check is
    allowed a little more so an overlong answer is seen, not cut to fit.

    >>> chat = OpenAIChat("http://127.0.0.1:8080/v1", "smollm2-135m-instruct")  # doctest: +SKIP
    >>> asyncio.run(chat(case)).text                                              # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "sk-local",
        timeout_s: float = 60.0,
        max_tokens: int = 256,
        retries: int = 4,
        backoff_s: float = 0.5,
        client: Any = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        from openai import AsyncOpenAI

        self.model = model
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_s = backoff_s
        # The SDK's own retries are off: ours are explicit, logged and counted.
        self.client = client or AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )
        self.retried = 0

    async def __call__(self, case: GoldenCase) -> Generation:
        import openai

        limit = self.max_tokens
        if case.checks.max_tokens is not None:
            limit = max(limit, case.checks.max_tokens + 16)
        attempt = 0
        while True:
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model,
                    messages=cast(Any, case.chat()),
                    temperature=0.0,
                    max_tokens=limit,
                )
                choice = resp.choices[0]
                usage = resp.usage
                return Generation(
                    text=choice.message.content or "",
                    completion_tokens=usage.completion_tokens if usage else None,
                    finish_reason=choice.finish_reason,
                )
            except (
                openai.APITimeoutError,
                openai.APIConnectionError,
                openai.APIStatusError,
            ) as exc:
                status = getattr(exc, "status_code", None)
                transient = status is None or status in _RETRY_STATUS or status >= 500
                if not transient or attempt >= self.retries:
                    raise
                delay = self.backoff_s * 2**attempt * (0.5 + random.random())
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, 30.0))
                attempt += 1
                self.retried += 1
                log.warning(
                    "golden case %s: %s (status %s), retry %d/%d in %.2fs",
                    case.id,
                    type(exc).__name__,
                    status,
                    attempt,
                    self.retries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self.client.close()


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenRunResult:
    """A finished run: the summary event, every case, and what changed since last time."""

    run: GoldenRun
    results: list[CaseResult]
    previous_run_id: str | None = None
    newly_failing: list[str] = field(default_factory=list)
    alert: Alert | None = None
    alert_error: str | None = None
    #: The alert was delivered (False: no sink, a repeat suppressed by the sink, or an error).
    paged: bool = False

    @property
    def ok(self) -> bool:
        """Pass rate at or above the threshold."""
        return self.run.pass_rate >= self.run.threshold

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


class AlertEmitter(Protocol):
    """Where a failing run's page goes: ``workers.alerts.AlertSink`` satisfies this."""

    async def emit(self, alerts: Sequence[Alert]) -> list[Alert]: ...


def record_golden_run(store: Store, run: GoldenRun, results: Sequence[CaseResult]) -> None:
    """Store a run's case rows and its summary (one insert each, deduplicated by run id)."""
    store.insert(
        "golden_results", result_rows(run, results), dedup_token=f"golden-results-{run.run_id}"
    )
    store.insert("golden_runs", [run.to_row()], dedup_token=f"golden-run-{run.run_id}")


def golden_run_of(
    results: Sequence[CaseResult],
    *,
    run_id: str,
    base_model: str,
    adapter_version: str,
    golden_set: str,
    trigger: GoldenTrigger,
    threshold: float,
    ts: datetime,
) -> GoldenRun:
    """The summary event of a finished list of case results."""
    passed, pass_rate, tag_rates, failed = summarize(results)
    return GoldenRun(
        ts=ts,
        run_id=run_id,
        base_model=base_model,
        adapter_version=adapter_version,
        golden_set=golden_set,
        trigger=trigger,
        total=len(results),
        passed=passed,
        pass_rate=pass_rate,
        threshold=threshold,
        tag_pass_rates=tag_rates,
        failed_case_ids=failed,
    )


def summarize(results: Sequence[CaseResult]) -> tuple[int, float, dict[str, float], list[str]]:
    """``(passed, pass_rate, {tag: pass_rate}, failed case ids)`` of a list of results."""
    passed = sum(r.passed for r in results)
    by_tag: dict[str, list[bool]] = {}
    for r in results:
        for tag in r.tags:
            by_tag.setdefault(tag, []).append(r.passed)
    tag_rates = {t: sum(v) / len(v) for t, v in sorted(by_tag.items())}
    failed = [r.case_id for r in results if not r.passed]
    return passed, (passed / len(results) if results else 0.0), tag_rates, failed


async def _generate_one(generate: Generate, case: GoldenCase) -> Generation:
    if inspect.iscoroutinefunction(generate) or inspect.iscoroutinefunction(
        getattr(generate, "__call__", None)  # noqa: B004 - async callable objects
    ):
        out = await generate(case)  # type: ignore[misc]
    else:
        out = await asyncio.to_thread(generate, case)
        if inspect.isawaitable(out):
            out = await out
    if isinstance(out, Generation):
        return out
    if isinstance(out, str):
        return Generation(out)
    raise TypeError(f"generate() must return str or Generation, got {type(out).__name__}")


def previous_run(
    store: Store, *, base_model: str, adapter_version: str, golden_set: str, before: datetime
) -> tuple[str | None, dict[str, bool]]:
    """The last stored run of this set on this model/adapter and ``{case_id: passed}``."""
    run_id = store.query(
        "SELECT run_id FROM golden_runs FINAL WHERE base_model = {m:String} "
        "AND adapter_version = {a:String} AND golden_set = {g:String} "
        "AND ts < {before:DateTime64(3, 'UTC')} ORDER BY ts DESC LIMIT 1",
        {"m": base_model, "a": adapter_version, "g": golden_set, "before": before},
    ).scalar()
    if run_id is None:
        return None, {}
    rows = store.query(
        "SELECT case_id, passed FROM golden_results FINAL WHERE run_id = {r:String} "
        "AND base_model = {m:String} AND adapter_version = {a:String}",
        {"r": run_id, "m": base_model, "a": adapter_version},
    ).rows
    return str(run_id), {str(cid): bool(ok) for cid, ok in rows}


def result_rows(run: GoldenRun, results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    return [
        {
            "ts": run.ts,
            "run_id": run.run_id,
            "base_model": run.base_model,
            "adapter_version": run.adapter_version,
            "case_id": r.case_id,
            "tags": list(r.tags),
            "passed": int(r.passed),
            "failed_checks": r.failed_checks,
            "expected": r.expected,
            "output": r.output,
            "latency_ms": r.latency_ms,
            "details": json.dumps(r.details(), sort_keys=True, ensure_ascii=False),
        }
        for r in results
    ]


def golden_alert(run: GoldenRun, newly_failing: Sequence[str]) -> Alert:
    """The page for a run under threshold (one alert id per run)."""
    failed = run.failed_case_ids
    shown = ", ".join(failed[:10]) + (f" (+{len(failed) - 10} more)" if len(failed) > 10 else "")
    message = (
        f"golden set {run.golden_set!r} on {run.base_model}/{run.adapter_version}: pass rate "
        f"{run.pass_rate:.1%} < {run.threshold:.1%} ({run.total - run.passed}/{run.total} "
        f"failed: {shown}; trigger {run.trigger})"
    )
    if newly_failing:
        message += f"; newly failing: {', '.join(newly_failing[:10])}"
    return Alert(
        ts=run.ts,
        alert_id=f"golden-{run.run_id}",
        base_model=run.base_model,
        adapter_version=run.adapter_version,
        kind="golden",
        feature=run.golden_set,
        window="run",
        severity="page",
        value=run.pass_rate,
        threshold=run.threshold,
        sample_size=run.total,
        message=message,
    )


async def run_golden(
    cases: GoldenSet | Sequence[GoldenCase],
    generate: Generate,
    *,
    base_model: str,
    adapter_version: str = "none",
    threshold: float = 0.95,
    golden_set: str | None = None,
    trigger: GoldenTrigger = "manual",
    concurrency: int = 4,
    judge: JudgeFn | None = None,
    store: Store | None = None,
    alerts: AlertEmitter | None = None,
    progress: bool = False,
    run_id: str | None = None,
    now: Callable[[], datetime] = utcnow,
) -> GoldenRunResult:
    """Run a golden set against a model; store, compare and page. The library entry point.

    ``generate`` is an :class:`OpenAIChat` for a live endpoint, or any ``generate(case)``
    returning the output text (sync callables run in a thread, e.g. a local transformers
    model). With ``store`` the results go to ``golden_results`` and the summary to
    ``golden_runs`` (one batched insert each, deduplicated by run id) and newly failing
    cases are found against the previous stored run of this set on this model/adapter.
    With ``alerts`` (``workers.alerts.AlertSink``) a pass rate under ``threshold`` emits a
    page. Raises :class:`ModelUnavailable` when no case could be generated at all.

    >>> result = asyncio.run(run_golden(gs, lambda case: '{"intent": "x"}',
    ...                                 base_model="m", threshold=0.9))      # doctest: +SKIP
    >>> result.ok, result.run.pass_rate                                     # doctest: +SKIP
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not 1 <= concurrency <= 256:
        raise ValueError(f"concurrency must be in [1, 256], got {concurrency}")
    if isinstance(cases, GoldenSet):
        golden_set = golden_set or cases.name
        case_list = list(cases.cases)
    else:
        case_list = list(cases)
    if not case_list:
        raise ValueError("run_golden needs at least one case")
    if len({c.id for c in case_list}) != len(case_list):
        raise InvalidGoldenSet("case ids must be unique within a run")
    judged = [c.id for c in case_list if c.checks.judge is not None]
    if judged and judge is None:
        raise GoldenError(
            f"cases {judged[:5]} have a judge check but no judge is configured "
            "(set SENTRYML_JUDGE_BASE_URL / pass judge=...)"
        )
    run_id = run_id or uuid.uuid4().hex
    started = now()
    semaphore = asyncio.Semaphore(concurrency)
    bar = _progress(len(case_list), progress, golden_set or "golden")

    async def one(case: GoldenCase) -> CaseResult:
        async with semaphore:
            t0 = time.perf_counter()
            try:
                gen = await _generate_one(generate, case)
            except Exception as exc:  # recorded per case; all-failed raises below
                log.warning("golden case %s: generation failed: %s", case.id, exc)
                error = f"{type(exc).__name__}: {exc}"
                result = CaseResult(
                    case.id,
                    tuple(case.tags),
                    False,
                    (CheckOutcome("generation", False, error),),
                    "",
                    case.expected or "",
                    (time.perf_counter() - t0) * 1000,
                    error,
                )
            else:
                latency = (time.perf_counter() - t0) * 1000
                result = await run_checks(
                    case, gen.text, judge=judge, tokens=gen.completion_tokens, latency_ms=latency
                )
            if bar is not None:
                bar.update(1)
            return result

    try:
        results = list(await asyncio.gather(*(one(c) for c in case_list)))
    finally:
        if bar is not None:
            bar.close()
    if all(r.error for r in results):
        raise ModelUnavailable(
            f"no golden case could be generated ({len(results)} tried); first error: "
            f"{results[0].error}"
        )

    run = golden_run_of(
        results,
        run_id=run_id,
        base_model=base_model,
        adapter_version=adapter_version,
        golden_set=golden_set or "golden",
        trigger=trigger,
        threshold=threshold,
        ts=started,
    )
    passed, pass_rate, failed = run.passed, run.pass_rate, run.failed_case_ids
    previous_id: str | None = None
    newly_failing: list[str] = []
    if store is not None:
        previous_id, before = await asyncio.to_thread(
            previous_run,
            store,
            base_model=base_model,
            adapter_version=adapter_version,
            golden_set=run.golden_set,
            before=started,
        )
        newly_failing = [cid for cid in failed if before.get(cid) is True]
        await asyncio.to_thread(record_golden_run, store, run, results)
    alert: Alert | None = None
    alert_error: str | None = None
    paged = False
    if pass_rate < threshold:
        alert = golden_alert(run, newly_failing)
        log.warning("%s", alert.message)
        if alerts is not None:
            try:
                paged = bool(await alerts.emit([alert]))
            except SentryMLError as exc:  # the run is stored; the caller reports the failure
                alert_error = str(exc)
                log.error("golden page %s not delivered: %s", alert.alert_id, exc)
    log.info(
        "golden run %s (%s) on %s/%s: %d/%d passed (%.1f%%), threshold %.1f%%",
        run_id,
        run.golden_set,
        base_model,
        adapter_version,
        passed,
        len(results),
        100 * pass_rate,
        100 * threshold,
    )
    return GoldenRunResult(run, results, previous_id, newly_failing, alert, alert_error, paged)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", leave=False)


# --------------------------------------------------------------------------------------
# Scheduling (the daily trigger), pure and clock-free
# --------------------------------------------------------------------------------------


def validate_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(
            f"invalid cron expression {expression!r}: use five fields, e.g. '0 6 * * *'"
        )
    return expression


def due_run(last_run_at: datetime | None, now: datetime, cron: str) -> datetime | None:
    """The latest scheduled time in ``(last_run_at, now]``, or None when nothing is due.

    Missed slots collapse into one run (a worker down for three days runs once, not three
    times). Times are UTC.

    >>> t = datetime(2025, 1, 2, 6, 0, 30, tzinfo=UTC)
    >>> due_run(datetime(2025, 1, 1, 6, 0, tzinfo=UTC), t, "0 6 * * *")
    datetime.datetime(2025, 1, 2, 6, 0, tzinfo=datetime.timezone.utc)
    >>> due_run(t, t + timedelta(hours=1), "0 6 * * *") is None
    True
    """
    now = now.astimezone(UTC)
    # croniter's get_prev is strict, so look back from just after `now`.
    slot: datetime = croniter(validate_cron(cron), now + timedelta(microseconds=1)).get_prev(
        datetime
    )
    slot = slot.astimezone(UTC)
    if last_run_at is not None and slot <= last_run_at.astimezone(UTC):
        return None
    return slot
