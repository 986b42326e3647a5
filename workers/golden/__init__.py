"""Golden sets: fixed prompts with checks, run against the live model as a smoke test.

A golden set is a JSONL file (one case per line) or a YAML file (a list of cases, or a
mapping with ``name``, ``system`` and ``cases``). Each case has an ``id``, a ``prompt`` or
chat ``messages``, an optional reference answer ``expected``, ``tags`` for per-tag pass
rates, and one or more ``checks``: ``exact``, ``contains``, ``regex``, ``json_schema``,
``refusal``, ``max_tokens``, ``judge``. A case passes when every one of its checks passes.
``docs/golden.md`` is the user guide; ``schemas/json/golden_case.schema.json`` the schema.

Three layers, each usable alone:

- :func:`load_golden_set` parses and validates a file, naming the case and field at fault
  (``_format``).
- :func:`run_checks` scores one output against one case (pure, except the injected judge;
  ``_checks``).
- :func:`run_golden` generates every case with bounded concurrency (through
  :class:`OpenAIChat` or any injected ``generate(case)``; ``_generate``), scores, stores the
  results, compares with the previous run and raises an alert when the pass rate is under
  threshold (``_run``).

The daily trigger is :func:`due_run` (``_schedule``); the errors, all
:class:`schemas.exceptions.SentryMLError`, are in ``_errors``.

>>> import asyncio
>>> case = GoldenCase(id="c1", prompt="2+2?", expected="4", checks=Checks(exact=True))
>>> asyncio.run(run_checks(case, " 4\\n")).passed
True
"""

from __future__ import annotations

from workers.golden._checks import (
    CaseResult,
    JudgeFn,
    approx_tokens,
    diff_text,
    judge_from_client,
    needs_judge,
    run_checks,
)
from workers.golden._errors import GoldenError, InvalidGoldenSet, ModelUnavailable
from workers.golden._format import (
    Checks,
    GoldenCase,
    GoldenSet,
    JudgeCheck,
    load_golden_set,
    parse_golden_set,
    render_json_schemas,
)
from workers.golden._generate import Generate, OpenAIChat
from workers.golden._run import (
    AlertEmitter,
    GoldenRunResult,
    golden_run_of,
    record_golden_run,
    run_golden,
    summarize,
)
from workers.golden._schedule import due_run, validate_cron
from workers.golden._settings import GoldenSettings
from workers.stats import is_refusal

__all__ = [
    "AlertEmitter",
    "CaseResult",
    "Checks",
    "Generate",
    "GoldenCase",
    "GoldenError",
    "GoldenRunResult",
    "GoldenSet",
    "GoldenSettings",
    "InvalidGoldenSet",
    "JudgeCheck",
    "JudgeFn",
    "ModelUnavailable",
    "OpenAIChat",
    "approx_tokens",
    "diff_text",
    "due_run",
    "golden_run_of",
    "is_refusal",
    "judge_from_client",
    "load_golden_set",
    "needs_judge",
    "parse_golden_set",
    "record_golden_run",
    "render_json_schemas",
    "run_checks",
    "run_golden",
    "summarize",
    "validate_cron",
]
