"""The producer's hand-written fast path agrees with pydantic on every input it vouches for."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from schemas.events import ChatMessage, InferenceLog, decode_event
from schemas.exceptions import InvalidEvent
from schemas.wire import FIELDS, encode_inference_log, event_bytes

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ABSENT = object()

texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=" \t\n\x1c\u00a0\u2028ab", max_size=5),  # whitespace pydantic strips
    st.sampled_from(["", "a" * 256, "a" * 257, "\ud800"]),  # bounds; a lone surrogate
)
not_text = st.sampled_from([None, 5, 5.0, True, b"bytes", ["x"]])
numbers = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([2**53, 2**53 + 1, 2**64, 10**400, -(2**70)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, "5", None, -0.0]),
)
timestamps = st.one_of(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2027, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), None]),
    ),
    st.sampled_from(
        [
            NOW + timedelta(minutes=5),  # the bound itself: accepted
            NOW + timedelta(minutes=5, microseconds=1),
            (NOW + timedelta(minutes=5)).replace(tzinfo=None),
            "2026-11-29T12:00:00Z",  # pydantic parses strings; the fast path defers
            None,
            datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
        ]
    ),
)
turns = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "bot"]), "content": texts}
    ),
    st.just({"role": "user", "content": "hi", "name": "x"}),
    st.just(ChatMessage(role="user", content="hi")),
    st.just({"content": "hi", "role": "user"}),  # other key order: same event
)
metadata_values = st.one_of(texts, numbers, st.just([1]), st.just({"a": 1}))
metadata = st.one_of(
    st.dictionaries(st.text(max_size=5), metadata_values, max_size=3),
    st.just({1: "int key"}),
    not_text,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), strategy)


fields_strategy = st.fixed_dictionaries(
    {
        "ts": _maybe(timestamps),
        "type": _maybe(st.sampled_from([InferenceLog.TYPE_TAG, "sentryml.inference_log.v2"])),
        "request_id": _maybe(st.one_of(texts, not_text)),
        "base_model": _maybe(st.one_of(texts, not_text)),
        "adapter_version": _maybe(st.one_of(texts, not_text)),
        "prompt": _maybe(st.one_of(texts, not_text)),
        "messages": _maybe(st.one_of(st.lists(turns, max_size=3), not_text)),
        "completion": _maybe(st.one_of(texts, not_text)),
        "prompt_tokens": _maybe(numbers),
        "completion_tokens": _maybe(numbers),
        "latency_ms": _maybe(numbers),
        "app": _maybe(st.one_of(texts, not_text)),
        "tenant": _maybe(st.one_of(texts, not_text)),
        "metadata": _maybe(metadata),
        "unknown_field": st.one_of(st.just(ABSENT), st.just(ABSENT), st.just("x")),
    }
).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


def _no_edge_whitespace(fields: dict[str, Any]) -> bool:
    return not (fields["request_id"][0].isspace() or fields["request_id"][-1].isspace())


#: Inputs that the fast path must vouch for: what a service typically passes.
typical: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "request_id": st.uuids().map(str),
        "base_model": st.sampled_from(["llama-3-8b", "support-bot"]),
        "prompt": st.text(max_size=200),
        "completion": st.text(max_size=400),
    },
    optional={
        "ts": st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2026, 11, 29), timezones=st.just(UTC)
        ),
        "adapter_version": st.sampled_from(["none", "v7"]),
        "prompt_tokens": st.integers(0, 10_000),
        "completion_tokens": st.integers(0, 10_000),
        "latency_ms": st.one_of(st.floats(0, 1e6), st.integers(0, 10**6)),
        "app": st.sampled_from(["search", "chat", None]),
        "tenant": st.sampled_from(["acme", None]),
        "metadata": st.dictionaries(
            st.text(max_size=8),
            st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), st.booleans()),
        ),
    },
).filter(_no_edge_whitespace)


def _pydantic(fields: dict[str, Any]) -> InferenceLog | None:
    try:
        return InferenceLog.model_validate(fields, context={"now": NOW})
    except ValidationError:
        return None


def _assert_same_event(fields: dict[str, Any], fast: bytes, model: InferenceLog) -> None:
    decoded = decode_event(fast, InferenceLog, now=NOW)
    if "ts" in fields:
        assert decoded == model
        assert fast == model.to_bytes()
    else:  # each side stamped its own "now"
        assert decoded == model.model_copy(update={"ts": decoded.ts})
        assert decoded.ts == NOW


@settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(fields_strategy)
def test_fast_path_accepts_only_what_pydantic_accepts_and_encodes_it_identically(
    fields: dict[str, Any],
) -> None:
    fast = encode_inference_log(fields, now=NOW)
    model = _pydantic(fields)
    if fast is not None:
        assert model is not None, f"fast path accepted what pydantic rejects: {fields!r}"
        _assert_same_event(fields, fast, model)
    if model is not None:
        _assert_serializes_like_pydantic(model)


def _assert_serializes_like_pydantic(model: InferenceLog) -> None:
    try:
        expected = model.to_bytes()
    except PydanticSerializationError:  # a lone surrogate: pydantic cannot write it either
        with pytest.raises(InvalidEvent, match="cannot be written as JSON"):
            event_bytes(model)
    else:
        assert event_bytes(model) == expected


@settings(max_examples=500, deadline=None, derandomize=True)
@given(typical)
def test_fast_path_vouches_for_typical_service_calls(fields: dict[str, Any]) -> None:
    fast = encode_inference_log(fields, now=NOW)
    assert fast is not None, f"typical call sent to the slow path: {fields!r}"
    model = _pydantic(fields)
    assert model is not None
    _assert_same_event(fields, fast, model)


def test_fast_path_knows_every_field_of_the_schema() -> None:
    # A new InferenceLog field must be taught to schemas/wire.py (or it would be dropped).
    assert tuple(InferenceLog.model_fields) == FIELDS


def test_chat_turns_and_naive_timestamps_encode_like_pydantic() -> None:
    fields = {
        "request_id": "r1",
        "base_model": "m",
        "messages": [{"content": "hi", "role": "user"}, {"role": "assistant", "content": "yo"}],
        "completion": "c",
        "latency_ms": 3,
        "ts": datetime(2026, 1, 1, 8, 30),
        "metadata": {"k": 1.5, "b": True, "n": None},
    }
    fast = encode_inference_log(fields, now=NOW)
    model = _pydantic(fields)
    assert fast is not None and model is not None
    assert fast == model.to_bytes()
    assert b'"latency_ms":3.0' in fast and b'"ts":"2026-01-01T08:30:00Z"' in fast
    assert not math.isnan(decode_event(fast, InferenceLog).metadata["k"])  # type: ignore[arg-type]
