"""The DLQ contract without Kafka: the DLQ form of a rejected record and its headers.

The agents' end-to-end DLQ tests (``tests/test_worker.py``, ``tests/test_poison.py``,
``tests/test_security.py``) need a broker; these pin the rules they rely on.
"""

from __future__ import annotations

import doctest
import json

import workers.dlq
from workers.dlq import (
    DLQ_KEEP_BYTES,
    RawRecord,
    Rejected,
    dlq_headers,
    redact_rejected,
    truncated,
)
from workers.redact import Redactor


def _rejected(value: bytes, reason: str = "json") -> Rejected:
    record = RawRecord("t.logs", 2, 41, b"k", value, (("traceparent", b"00-ab"),))
    return Rejected(record, reason, "bad input from jane@example.com")


def test_docstring_examples() -> None:
    result = doctest.testmod(workers.dlq)
    assert result.attempted > 0 and result.failed == 0


def test_headers_say_why_and_where_after_the_original_ones_and_before_the_notes() -> None:
    rejected = _rejected(b"x" * (DLQ_KEEP_BYTES + 10), reason="size")
    cut = truncated(rejected)
    assert [name for name, _ in dlq_headers(cut)] == [
        "traceparent",
        "sentryml-error",
        "sentryml-reason",
        "sentryml-source-topic",
        "sentryml-source-partition",
        "sentryml-source-offset",
        "sentryml-truncated-from",
    ]
    headers = dict(dlq_headers(cut))
    assert headers["sentryml-source-offset"] == b"41"
    assert headers["sentryml-truncated-from"] == str(DLQ_KEEP_BYTES + 10).encode()
    long_error = Rejected(rejected.record, "internal", "e" * 10_000)
    assert dict(dlq_headers(long_error))["sentryml-error"] == b"e" * 4000


def test_one_truncation_rule_cuts_only_what_does_not_fit() -> None:
    fits = _rejected(b"y" * DLQ_KEEP_BYTES)
    assert truncated(fits) is fits
    cut = truncated(_rejected(b"y" * (DLQ_KEEP_BYTES + 1)))
    assert cut.value == b"y" * DLQ_KEEP_BYTES and cut.record.value == b"y" * (DLQ_KEEP_BYTES + 1)


def test_a_size_rejection_is_cut_before_it_is_masked_and_the_error_is_masked_too() -> None:
    payload = json.dumps({"prompt": "mail jane@example.com", "completion": "z" * DLQ_KEEP_BYTES})
    dlq = redact_rejected(_rejected(payload.encode(), reason="size"), Redactor())
    assert [name for name, _ in dlq.notes] == ["sentryml-truncated-from", "sentryml-redacted"]
    assert dict(dlq.notes)["sentryml-truncated-from"] == str(len(payload)).encode()
    assert dlq.value.startswith(b'{"prompt": "mail [EMAIL]"')  # cut JSON is masked as text
    assert len(dlq.value) < DLQ_KEEP_BYTES
    assert dlq.error == "bad input from [EMAIL]"


def test_other_rejections_keep_their_whole_payload_and_clean_ones_are_untouched() -> None:
    big = json.dumps({"prompt": "call 415-555-0134", "completion": "z" * DLQ_KEEP_BYTES}).encode()
    dlq = redact_rejected(_rejected(big, reason="json"), Redactor())
    assert dict(dlq.notes) == {"sentryml-redacted": b"1"}
    assert json.loads(dlq.value)["prompt"] == "call [PHONE]"
    clean = redact_rejected(_rejected(b'{"prompt": "hi"}'), Redactor())
    assert clean.dlq_value is None and clean.notes == () and clean.value == b'{"prompt": "hi"}'
