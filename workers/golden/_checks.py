"""Checks: pure functions, output in, outcome out (only the ``judge`` check awaits), and
the diff of a failed case's output against its reference answer."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from workers.golden._errors import GoldenError
from workers.golden._format import GoldenCase, GoldenSet, JudgeCheck
from workers.stats import is_refusal, tokenize


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

    >>> import asyncio
    >>> from workers.golden import Checks
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
