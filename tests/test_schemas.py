"""Schema round trips (with a guard for new event types), rejections, JSON Schema export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from schemas.events import (
    EVENT_TYPES,
    AdapterEvent,
    Alert,
    DriftStat,
    Event,
    Feedback,
    GoldenRun,
    InferenceLog,
    JudgeScore,
    RetrainRequest,
    WindowCount,
    decode_event,
)
from schemas.exceptions import InvalidEvent
from schemas.export import JSON_DIR, render_schemas

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

EXAMPLES: dict[type[Event], Event] = {
    InferenceLog: InferenceLog(
        request_id="r-1",
        ts=NOW,
        base_model="smollm2-135m",
        adapter_version="v3",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        completion="hello",
        prompt_tokens=3,
        completion_tokens=1,
        latency_ms=12.5,
        app="bot",
        tenant="acme",
        metadata={"region": "eu", "retry": 0, "cached": False},
    ),
    Feedback: Feedback(
        request_id="r-1",
        ts=NOW,
        base_model="m",
        correction="better",
        preference={"chosen": "a", "rejected": "b"},
    ),
    JudgeScore: JudgeScore(
        request_id="r-1", ts=NOW, base_model="m", judge_model="j", dimension="format", score=4
    ),
    Alert: Alert(
        alert_id="a", ts=NOW, base_model="m", kind="embedding_drift", severity="alert",
        value=0.4, threshold=0.2, p_value=1e-9, sample_size=500, message="drift",
    ),
    RetrainRequest: RetrainRequest(job_id="j1", ts=NOW, base_model="m", method="qlora"),
    AdapterEvent: AdapterEvent(
        ts=NOW, base_model="m", adapter_version="v4", status="promoted", metrics={"pass": 0.9}
    ),
    GoldenRun: GoldenRun(
        run_id="g", ts=NOW, base_model="m", golden_set="starter", total=10, passed=9,
        pass_rate=0.9, threshold=0.95, tag_pass_rates={"safety": 1.0}, failed_case_ids=["c3"],
    ),
    WindowCount: WindowCount(
        base_model="m", adapter_version="v", baseline_id="b", feature="embedding",
        bucket=NOW, bin=3, count=7,
    ),
    DriftStat: DriftStat(
        ts=NOW, base_model="m", adapter_version="v", baseline_id="b", feature="embedding",
        window="7d", psi=0.3, jsd=0.1, chi2=40.0, p_value=0.001, sample_size=500,
        baseline_size=2000, psi_warn=0.1, psi_alert=0.2, status="alert",
    ),
}  # fmt: skip


def test_every_event_type_has_a_round_trip_case() -> None:
    missing = set(EVENT_TYPES.values()) - set(EXAMPLES)
    assert not missing, f"add a round-trip example for {sorted(c.__name__ for c in missing)}"


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_round_trip(cls: type[Event]) -> None:
    event = EXAMPLES[cls]
    wire = event.to_bytes()
    assert json.loads(wire)["type"] == cls.TYPE_TAG
    assert decode_event(wire, cls, now=NOW) == event


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_wire_form_validates_against_exported_schema(cls: type[Event]) -> None:
    schema = json.loads((JSON_DIR / f"{cls.TYPE_TAG}.schema.json").read_text())
    jsonschema.validate(json.loads(EXAMPLES[cls].to_bytes()), schema)


def test_committed_json_schemas_match_the_models() -> None:
    for name, text in render_schemas().items():
        path = JSON_DIR / name
        assert path.exists(), f"{name} not exported: run python -m schemas.export"
        assert path.read_text() == text, f"{name} is stale: run python -m schemas.export"


def _log(**overrides: object) -> bytes:
    base = json.loads(EXAMPLES[InferenceLog].to_bytes())
    base.update(overrides)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (b"\xff\xfe{}", "encoding", "UTF-8"),
        (b"{not json", "json", "not valid JSON"),
        (b"[1, 2]", "schema", "JSON object"),
        (_log(request_id=""), "schema", "request_id"),
        (_log(base_model=None), "schema", "base_model"),
        (_log(type="sentryml.inference_log.v9"), "type_tag", "unknown"),
        (_log(latency_ms=-1), "schema", "latency_ms"),
        (_log(unexpected=1), "schema", "unexpected"),
        (_log(metadata={"nested": {"deep": 1}}), "schema", "metadata"),
        (_log(ts=(NOW + timedelta(days=2)).isoformat()), "timestamp", "future"),
        (_log().replace(b'"latency_ms": 12.5', b'"latency_ms": NaN'), "json", "non-finite"),
        (_log().replace(b'"latency_ms": 12.5', b'"latency_ms": Infinity'), "json", "non-finite"),
        (_log(prompt=None, messages=None), "schema", "prompt"),
    ],
)
def test_invalid_events_are_rejected_naming_the_problem(
    raw: bytes, reason: str, needle: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, InferenceLog, now=NOW)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_oversize_event_is_rejected_before_parsing() -> None:
    raw = _log(completion="x" * 2_000_000)
    with pytest.raises(InvalidEvent, match="over the 1048576-byte limit") as info:
        decode_event(raw, InferenceLog)
    assert info.value.reason == "size"


def test_deeply_nested_json_is_rejected() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidEvent):
        decode_event(raw, InferenceLog, max_bytes=10_000_000)


def test_prompt_text_uses_last_user_turn() -> None:
    assert EXAMPLES[InferenceLog].prompt_text == "hi"  # type: ignore[attr-defined]


def test_judge_score_range_depends_on_dimension() -> None:
    with pytest.raises(ValueError, match="refusal score must be in"):
        JudgeScore(request_id="r", base_model="m", judge_model="j", dimension="refusal", score=3)
    with pytest.raises(ValueError, match="needs `score`"):
        JudgeScore(request_id="r", base_model="m", judge_model="j", dimension="format")
