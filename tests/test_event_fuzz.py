"""Fuzzing the wire parser: ``decode_event`` raises nothing but ``InvalidEvent``; valid events
round-trip.

The ingest agent relies on this contract to route bad input to the DLQ with a reason. (The
first run of these properties found ``0001-01-01T00:00:00+01:00``: ``astimezone`` raised
``OverflowError`` out of the timestamp validator instead of a rejection.)
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_TYPES, ChatMessage, Feedback, InferenceLog, decode_event
from schemas.exceptions import InvalidEvent

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = {"json", "schema", "size", "encoding", "type_tag", "timestamp"}
NOW = datetime.now(UTC)

VALID: dict[str, Any] = json.loads(
    InferenceLog(
        request_id="r-1", ts=NOW - timedelta(hours=1), base_model="m", prompt="p", completion="c"
    ).to_bytes()
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
odd_timestamps = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "not a date",
        "",
        "1e99",
    ]
) | st.datetimes(timezones=st.sampled_from([UTC, None])).map(datetime.isoformat)


def _rejects_cleanly(raw: bytes, cls: type = InferenceLog) -> None:
    try:
        decode_event(raw, cls, max_bytes=64 * 1024)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        assert str(exc)  # the message names the problem


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b"[" * 100_000)
@example(b'{"x": ' + b"9" * 5000 + b"}")  # past Python's int-digit limit
@example(b'{"latency_ms": Infinity}')
@example(b'{"latency_ms": 1e999}')
def test_arbitrary_bytes_are_parsed_or_rejected_with_a_reason(raw: bytes) -> None:
    _rejects_cleanly(raw)


@FUZZ
@given(st.sampled_from(sorted(EVENT_TYPES)), json_values)
def test_arbitrary_json_for_every_event_type_is_parsed_or_rejected(tag: str, value: Any) -> None:
    _rejects_cleanly(json.dumps(value).encode(), EVENT_TYPES[tag])


@FUZZ
@given(
    st.dictionaries(st.sampled_from([*sorted(VALID), "extra"]), json_values, max_size=4),
    st.sets(st.sampled_from(sorted(VALID)), max_size=3),
)
def test_a_valid_event_with_fields_replaced_or_dropped_is_parsed_or_rejected(
    replace: dict[str, Any], drop: set[str]
) -> None:
    data = {k: v for k, v in {**VALID, **replace}.items() if k not in drop}
    _rejects_cleanly(json.dumps(data).encode())


@FUZZ
@given(odd_timestamps)
def test_odd_timestamps_are_rejected_as_timestamp_or_parsed(ts: str) -> None:
    raw = json.dumps({**VALID, "ts": ts}).encode()
    try:
        event = decode_event(raw, InferenceLog)
    except InvalidEvent as exc:
        assert exc.reason == "timestamp", exc
    else:
        assert event.ts.tzinfo is not None and event.ts <= datetime.now(UTC) + timedelta(minutes=5)


texts = st.text(max_size=200)
metadata = st.dictionaries(
    st.text(max_size=20),
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    max_size=5,
)
past = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=(NOW - timedelta(days=1)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
ids = st.text(min_size=1, max_size=256).filter(lambda s: s.strip() != "")
inference_logs = st.builds(
    InferenceLog,
    request_id=ids,
    ts=past,
    base_model=st.text(min_size=1, max_size=256),
    adapter_version=st.text(max_size=256),
    prompt=texts,
    messages=st.none()
    | st.lists(
        st.builds(
            ChatMessage,
            role=st.sampled_from(["system", "user", "assistant", "tool"]),
            content=texts,
        ),
        min_size=1,
        max_size=3,
    ),
    completion=texts,
    prompt_tokens=st.none() | st.integers(min_value=0, max_value=2**31),
    completion_tokens=st.none() | st.integers(min_value=0, max_value=2**31),
    latency_ms=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    app=st.none() | st.text(max_size=256),
    tenant=st.none() | st.text(max_size=256),
    metadata=metadata,
)


@FUZZ
@given(inference_logs)
def test_valid_inference_logs_round_trip(event: InferenceLog) -> None:
    decoded = decode_event(event.to_bytes(), InferenceLog, max_bytes=10**7)
    assert decoded == event
    assert decoded.to_bytes() == event.to_bytes()


@FUZZ
@given(
    st.builds(
        Feedback,
        request_id=ids,
        ts=past,
        base_model=st.text(min_size=1, max_size=256),
        label=st.sampled_from(["good", "bad"]),
        correction=st.none() | texts,
        prompt=st.none() | texts,
    )
)
def test_valid_feedback_round_trips(event: Feedback) -> None:
    assert decode_event(event.to_bytes(), Feedback) == event


def test_non_finite_numbers_are_rejected_in_every_spelling() -> None:
    """NaN/inf never reach the store: JSON literals and overflowing exponents alike."""
    for spelled in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        raw = json.dumps(VALID)[:-1].encode() + f', "latency_ms": {spelled}}}'.encode()
        try:
            decode_event(raw, InferenceLog)
        except InvalidEvent as exc:
            assert exc.reason in {"json", "schema"}, (spelled, exc.reason)
        else:
            raise AssertionError(f"latency_ms={spelled} was accepted")
    assert math.isinf(json.loads("1e999"))  # why 1e999 is a separate case: it parses as inf
