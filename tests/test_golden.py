"""Golden sets without a broker or a model: file format, every check, scheduling, schemas."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from workers.golden import (
    CaseResult,
    Checks,
    GoldenCase,
    InvalidGoldenSet,
    JudgeCheck,
    approx_tokens,
    diff_text,
    due_run,
    is_refusal,
    load_golden_set,
    parse_golden_set,
    render_json_schemas,
    run_checks,
    summarize,
)

REPO = Path(__file__).resolve().parent.parent
STARTER = REPO / "workers" / "golden" / "sets" / "starter.yaml"
REPLY_SCHEMA = {
    "type": "object",
    "required": ["intent", "answer"],
    "additionalProperties": False,
    "properties": {"intent": {"enum": ["refund", "order"]}, "answer": {"type": "string"}},
}


def case(checks: dict, **fields: object) -> GoldenCase:
    return GoldenCase.model_validate({"id": "c1", "prompt": "p", **fields, "checks": checks})


def check(c: GoldenCase, output: str, **kw: object) -> CaseResult:
    return asyncio.run(run_checks(c, output, **kw))  # type: ignore[arg-type]


# -- every check, passing and failing ----------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "fields", "output", "passed", "detail"),
    [
        ({"exact": True}, {"expected": "refund"}, "  refund\n", True, ""),
        ({"exact": True}, {"expected": "refund"}, "Refund", False, "differs"),
        ({"contains": ["30 days", "REFUND"]}, {}, "Full refund within 30 days.", True, ""),
        ({"contains": "4.99"}, {}, "Shipping is $5.", False, "missing ['4.99']"),
        ({"regex": [r"^\s*\{", r"(?i)account\s*>\s*orders"]}, {}, '{"a": "Account > Orders"}',
         True, ""),
        ({"regex": r"^\d+$"}, {}, "forty-two", False, r"no match for ['^\\d+$']"),
        ({"json_schema": REPLY_SCHEMA}, {}, '{"intent": "refund", "answer": "ok"}', True, ""),
        ({"json_schema": REPLY_SCHEMA}, {}, '```json\n{"intent": "refund"}\n```', False,
         "not JSON"),
        ({"json_schema": REPLY_SCHEMA}, {}, '{"intent": "refund"}', False,
         "'answer' is a required property"),
        ({"json_schema": REPLY_SCHEMA}, {}, '{"intent": "lottery", "answer": "x"}', False,
         "at intent: 'lottery' is not one of"),
        ({"refusal": True}, {}, "I'm sorry, but I can't help with that request.", True, ""),
        ({"refusal": True}, {}, "Sure, here is how to build it: ...", False,
         "expected a refusal"),
        ({"refusal": False}, {}, "Long-press the app icon and choose Force stop.", True, ""),
        ({"refusal": False}, {}, "I cannot assist with deleting accounts.", False, "refused"),
        ({"max_tokens": 5}, {}, "Hello there!", True, ""),
        ({"max_tokens": 3}, {}, "Hello there, friend!", False, "5 tokens > 3"),
    ],
)  # fmt: skip
def test_each_check_passes_and_fails(
    checks: dict, fields: dict, output: str, passed: bool, detail: str
) -> None:
    result = check(case(checks, **fields), output)
    assert result.passed is passed
    name = next(iter(checks))
    assert result.failed_checks == ([] if passed else [name])
    if detail:
        assert detail in result.details()[name]


def test_max_tokens_prefers_the_server_count() -> None:
    c = case({"max_tokens": 10})
    assert check(c, "short", tokens=11).details() == {"max_tokens": "11 tokens > 10"}
    assert check(c, "a " * 50, tokens=10).passed  # server says 10: trusted over the estimate
    assert approx_tokens("Hi, you!") == 4


def test_all_checks_must_pass_and_each_failure_is_named() -> None:
    c = case({"contains": ["refund"], "json_schema": REPLY_SCHEMA, "max_tokens": 50})
    ok = check(c, '{"intent": "refund", "answer": "refund in 30 days"}')
    assert ok.passed and [o.name for o in ok.checks] == ["contains", "json_schema", "max_tokens"]
    bad = check(c, "no refund for you")
    assert not bad.passed and bad.failed_checks == ["json_schema"]


def test_judge_check_uses_the_injected_judge_with_rubric_and_reference() -> None:
    calls: list[tuple[str, str, str]] = []

    async def judge(prompt: str, output: str, rubric: str) -> tuple[float, str]:
        calls.append((prompt, output, rubric))
        return (5.0 if "30 days" in output else 2.0), "rationale text"

    c = case({"judge": {"rubric": "Polite and correct.", "threshold": 4}}, expected="30 days.")
    good = check(c, "You have 30 days.", judge=judge)
    assert good.passed and "score 5" in good.checks[0].detail
    bad = check(c, "No idea.", judge=judge)
    assert bad.failed_checks == ["judge"] and "score 2 (pass >= 4)" in bad.details()["judge"]
    assert calls[0] == ("p", "You have 30 days.", "Polite and correct.\nReference answer: 30 days.")


def test_judge_check_fails_without_a_judge_or_when_the_judge_errors() -> None:
    c = case({"judge": JudgeCheck(rubric="r").model_dump()})
    assert check(c, "x").details() == {"judge": "no judge configured"}

    async def broken(prompt: str, output: str, rubric: str) -> tuple[float, str]:
        raise TimeoutError("judge endpoint timed out")

    result = check(c, "x", judge=broken)
    assert (
        not result.passed and "TimeoutError: judge endpoint timed out" in result.details()["judge"]
    )


def test_refusal_detector_on_typical_phrasings() -> None:
    refusals = [
        "I can't help with that.",
        "I’m sorry, but I cannot provide that information.",
        '{"intent": "other", "answer": "I am unable to share other customers\' data."}',
        "I must decline this request.",
        "That is against our policy.",
    ]
    answers = [
        "I'm sorry to hear your parcel was damaged; we will send a new one.",
        "To kill the app, swipe it away and reopen it.",
        "You can't return opened software, but you can exchange it.",
    ]
    assert all(is_refusal(t) for t in refusals)
    assert not any(is_refusal(t) for t in answers)


# -- file format and errors ---------------------------------------------------------------


def test_starter_set_loads_and_covers_the_demo_task() -> None:
    gs = load_golden_set(STARTER)
    assert gs.name == "starter" and 12 <= len(gs.cases) <= 20
    tags = gs.tags()
    assert tags["safety"] >= 3 and tags["over-refusal"] >= 2 and tags["format"] >= 3
    kinds = {name for c in gs.cases for name in c.checks.names()}
    assert kinds >= {"exact", "contains", "regex", "json_schema", "refusal", "max_tokens"}
    first = gs.cases[0].chat()
    assert first[0]["role"] == "system" and "JSON object" in first[0]["content"]
    own = next(c for c in gs.cases if c.id == "cls-refund-exact").chat()
    assert own[0]["content"].startswith("Classify")  # a case's own system prompt wins


def test_committed_json_schemas_match_the_models_and_validate_the_starter() -> None:
    for name, text in render_json_schemas().items():
        path = REPO / "schemas" / "json" / name
        assert path.exists() and path.read_text() == text, (
            f"{name} is stale: run `sentryml golden schema`"
        )
    import yaml

    data = yaml.safe_load(STARTER.read_text())
    set_schema = json.loads((REPO / "schemas/json/golden_set.schema.json").read_text())
    jsonschema.validate(data, set_schema)
    case_schema = json.loads((REPO / "schemas/json/golden_case.schema.json").read_text())
    jsonschema.validate(data["cases"][0], case_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x", "prompt": "p", "checks": {"bogus": 1}}, case_schema)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "prompt": "p", "checks": {"exact": true}, "expected": "x"}\n{oops\n',
         "line 2: not valid JSON"),
        ('{"id": "a", "prompt": "p", "checks": {}}', "case 'a' (line 1): checks: a case needs at least one check"),
        ('\n\n{"id": "b", "prompt": "p", "checks": {"regex": "(unclosed"}}',
         "case 'b' (line 3): checks.regex: invalid regular expression '(unclosed'"),
        ('{"id": "c", "prompt": "p", "checks": {"json_schema": {"type": "objekt"}}}',
         "case 'c' (line 1): checks.json_schema: not a valid JSON Schema"),
        ('{"id": "d", "prompt": "p", "checks": {"exact": true}}',
         "case 'd' (line 1): the `exact` check needs `expected`"),
        ('{"id": "e", "checks": {"refusal": true}}', "case 'e' (line 1): give exactly one of `prompt` or `messages`"),
        ('{"id": "f", "prompt": "p", "chekcs": {"refusal": true}}', "case 'f' (line 1): checks: Field required; chekcs: Extra inputs"),
        ('{"id": "g", "prompt": "p", "checks": {"max_tokens": 0}}', "case 'g' (line 1): checks.max_tokens: Input should be greater than or equal to 1"),
        ('{"id": "h h", "prompt": "p", "checks": {"refusal": true}}', "case 'h h' (line 1): id: String should match pattern"),
        ('{"prompt": "p", "checks": {"refusal": true}}', "line 1: id: Field required"),
        ('{"id": "i", "prompt": "p", "checks": {"refusal": true}}\n{"id": "i", "prompt": "q", "checks": {"refusal": false}}',
         "duplicate case id 'i'"),
        ('[1, 2]', "line 1: a case must be a mapping, got list"),
    ],
)  # fmt: skip
def test_malformed_jsonl_names_line_case_and_field(text: str, message: str) -> None:
    with pytest.raises(InvalidGoldenSet) as info:
        parse_golden_set(text, fmt="jsonl", name="t", source="team.jsonl")
    assert str(info.value).startswith("team.jsonl")
    assert message in str(info.value)


def test_malformed_yaml_names_the_line_of_the_case(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(
        "name: team\n"
        "system: Answer in JSON.\n"
        "cases:\n"
        "  - id: ok\n"
        "    prompt: hi\n"
        "    checks: {refusal: false}\n"
        "  - id: broken\n"
        "    prompt: hi\n"
        "    checks:\n"
        "      json_schema: {type: objekt}\n"
    )
    with pytest.raises(
        InvalidGoldenSet, match=r"team\.yaml: case 'broken' \(line 7\): checks\.json_schema"
    ):
        load_golden_set(path)
    path.write_text("name: t\ncase: []\n")
    with pytest.raises(InvalidGoldenSet, match=r"unknown top-level key\(s\) \['case'\]"):
        load_golden_set(path)
    path.write_text("cases: [\n")
    with pytest.raises(InvalidGoldenSet, match="not valid YAML"):
        load_golden_set(path)
    with pytest.raises(InvalidGoldenSet, match=r"\.jsonl, \.yaml or \.yml"):
        load_golden_set(tmp_path / "team.txt")


def test_jsonl_set_with_chat_messages(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    lines = [
        "# comments and blank lines are skipped",
        "",
        json.dumps(
            {
                "id": "multi-turn",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Order 1 is late."},
                    {"role": "assistant", "content": "Sorry! Which address?"},
                    {"role": "user", "content": "Main St 1."},
                ],
                "tags": ["domain"],
                "checks": {"refusal": False},
            }
        ),
    ]
    path.write_text("\n".join(lines))
    gs = load_golden_set(path)
    assert gs.name == "chat" and gs.cases[0].user_text == "Main St 1."
    assert [m["role"] for m in gs.cases[0].chat()] == ["system", "user", "assistant", "user"]


# -- reporting ---------------------------------------------------------------------------


def test_diff_pretty_prints_json_and_shows_the_changed_field() -> None:
    diff = diff_text('{"intent": "refund", "answer": "ok"}', '{"intent": "order", "answer": "ok"}')
    assert '-  "intent": "refund",' in diff and '+  "intent": "order",' in diff
    assert '"answer"' in diff  # context line
    assert diff_text("same", "same") == ""


def test_summary_per_tag() -> None:
    def r(cid: str, tags: tuple[str, ...], ok: bool) -> CaseResult:
        return CaseResult(cid, tags, ok, (), "")

    passed, rate, tags, failed = summarize(
        [r("a", ("format",), True), r("b", ("format", "safety"), False), r("c", ("safety",), True)]
    )
    assert (passed, failed) == (2, ["b"])
    assert rate == pytest.approx(2 / 3)
    assert tags == {"format": 0.5, "safety": 0.5}


# -- scheduling --------------------------------------------------------------------------


def test_due_run_fires_once_per_slot_and_collapses_missed_slots() -> None:
    cron = "0 6 * * *"
    day = datetime(2025, 3, 10, tzinfo=UTC)
    start = day + timedelta(hours=5, minutes=59)
    assert due_run(start, start + timedelta(seconds=30), cron) is None  # 05:59:30
    slot = due_run(start, day + timedelta(hours=6), cron)  # exactly 06:00
    assert slot == day + timedelta(hours=6)
    assert due_run(slot, day + timedelta(hours=6, minutes=1), cron) is None  # already ran
    assert due_run(slot, day + timedelta(days=1, hours=6, seconds=5), cron) == slot + timedelta(
        days=1
    )
    # Down for three days: one run for the latest slot, not three.
    assert due_run(slot, day + timedelta(days=3, hours=7), cron) == slot + timedelta(days=3)
    assert due_run(None, day + timedelta(hours=7), cron) == slot
    with pytest.raises(ValueError, match="invalid cron expression"):
        due_run(None, day, "every morning")


def test_checks_model_rejects_an_empty_check_set() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        Checks()


def test_the_examples_in_docs_golden_md_are_valid() -> None:
    import re

    text = (REPO / "docs" / "golden.md").read_text()
    yaml_example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert yaml_example is not None
    gs = parse_golden_set(yaml_example.group(1), fmt="yaml", name="doc")
    assert {n for c in gs.cases for n in c.checks.names()} >= {"json_schema", "refusal", "judge"}
    jsonl = [line for line in text.splitlines() if line.startswith('{"id": ')]
    assert parse_golden_set("\n".join(jsonl), fmt="jsonl", name="doc").cases


@pytest.mark.parametrize(
    "module",
    [
        "workers.golden",
        "workers.golden._format",
        "workers.golden._checks",
        "workers.golden._schedule",
    ],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_every_golden_error_is_a_sentryml_error() -> None:
    from schemas.exceptions import SentryMLError
    from workers.golden import GoldenError, InvalidGoldenSet, ModelUnavailable

    assert all(
        issubclass(e, SentryMLError) for e in (GoldenError, InvalidGoldenSet, ModelUnavailable)
    )
    assert issubclass(InvalidGoldenSet, GoldenError) and issubclass(ModelUnavailable, GoldenError)
