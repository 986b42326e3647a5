"""Redaction of each PII / secret kind, what must stay untouched, events and configuration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ChatMessage, InferenceLog
from streams.config import WorkerSettings
from workers.redact import (
    DEFAULT_RULES,
    RedactionRule,
    RedactionRuleSettings,
    RedactionSettings,
    Redactor,
    luhn_valid,
)


@pytest.mark.parametrize(
    ("text", "expected", "rule"),
    [
        ("write to jane.doe+tag@mail.example.co.uk today", "write to [EMAIL] today", "email"),
        ("call +1 (415) 555-0134 now", "call [PHONE] now", "phone"),
        ("call 415-555-0134", "call [PHONE]", "phone"),
        ("call 415.555.0134.", "call [PHONE].", "phone"),
        ("UK office +44 20 7946 0958", "UK office [PHONE]", "phone"),
        ("text +14155550134", "text [PHONE]", "phone"),
        ("visa 4111 1111 1111 1111 exp 12/29", "visa [CARD] exp 12/29", "credit_card"),
        ("mc 5500-0000-0000-0004", "mc [CARD]", "credit_card"),
        ("amex 378282246310005", "amex [CARD]", "credit_card"),
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5q", "key [API_KEY]", "openai_key"),
        ("key sk-abcdefghijklmnopqrstuvwx", "key [API_KEY]", "openai_key"),
        ("aws AKIAIOSFODNN7EXAMPLE secret", "aws [API_KEY] secret", "aws_access_key"),
        ("token ghp_" + "a1B2" * 9, "token [API_KEY]", "github_token"),
        ("slack xoxb-123456789012-abcdefABCDEF", "slack [API_KEY]", "slack_token"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX3g",
            "Authorization: Bearer [TOKEN]",
            "bearer_token",
        ),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            "jwt [TOKEN]",
            "jwt",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "[PRIVATE_KEY]",
            "private_key",
        ),
    ],
)
def test_each_kind_is_redacted(text: str, expected: str, rule: str) -> None:
    redactor = Redactor()
    assert redactor.redact(text) == expected
    assert redactor.counts[rule] == 1


@pytest.mark.parametrize(
    "text",
    [
        "order #48213377 ships on 2024-03-15",  # order number and date
        "order 123456789012 is ready",  # long digit run without separators
        "card 1234 5678 9012 3456 is not Luhn-valid",  # not a card, and not a phone either
        "price $1,299.99 for 2 items, version 3.11.7",
        "the sk- prefix alone, or sk-short",
        "email me at the usual address",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("4111-1111-1111-1111")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("411111")  # too short to be a card


def test_redact_event_covers_prompt_messages_and_completion() -> None:
    event = InferenceLog(
        request_id="r-1",
        base_model="m",
        messages=[
            ChatMessage(role="system", content="You are support. Escalate to ops@corp.example"),
            ChatMessage(role="user", content="My card 4111 1111 1111 1111 was charged twice"),
        ],
        completion="We will call you at 415-555-0134.",
        metadata={"tier": "gold"},
    )
    clean = Redactor().redact_event(event)
    assert clean.messages is not None
    assert clean.messages[0].content == "You are support. Escalate to [EMAIL]"
    assert clean.messages[1].content == "My card [CARD] was charged twice"
    assert clean.completion == "We will call you at [PHONE]."
    assert clean.prompt_text == "My card [CARD] was charged twice"
    assert (clean.request_id, clean.metadata, clean.ts) == (
        event.request_id,
        {"tier": "gold"},
        event.ts,
    )
    assert event.completion == "We will call you at 415-555-0134."  # the original is untouched

    plain = InferenceLog(request_id="r-2", base_model="m", prompt="me: a@b.io", completion="ok")
    assert Redactor().redact_event(plain).prompt == "me: [EMAIL]"


def test_configurable_rule_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SENTRYML_REDACTION_RULES",
        '[{"name": "employee", "pattern": "\\\\bEMP-\\\\d{6}\\\\b", "replacement": "[EMPLOYEE]"}]',
    )
    monkeypatch.setenv("SENTRYML_REDACTION_DISABLED", '["phone"]')
    redactor = Redactor.from_settings(WorkerSettings().redaction)
    assert redactor.redact("EMP-123456 at 415-555-0134, bob@x.io") == (
        "[EMPLOYEE] at 415-555-0134, [EMAIL]"
    )

    only_own = Redactor.from_settings(
        RedactionSettings(
            use_defaults=False,
            rules=(
                RedactionRuleSettings(
                    name="ticket", pattern=r"TCK-(\d+)", replacement=r"TCK-#", requires="TCK-"
                ),
            ),
        )
    )
    assert only_own.redact("TCK-991 from bob@x.io") == "TCK-# from bob@x.io"

    with pytest.raises(ValueError, match="invalid regex"):
        RedactionRuleSettings(name="bad", pattern="(unclosed")
    with pytest.raises(ValueError, match="invalid regex"):
        RedactionRuleSettings(name="bad", pattern="x", requires="(unclosed")
    with pytest.raises(ValueError, match="unknown default rules"):
        Redactor.from_settings(RedactionSettings(disabled=("phones",)))
    with pytest.raises(ValueError, match="unique"):
        Redactor([*DEFAULT_RULES, RedactionRule("email", r"x", "y")])


# -- the fast forms of the default rules redact exactly what the plain forms do -----------
#: The straightforward forms of the two digit patterns (look-behinds first), as they were
#: written before being reordered for speed; the reordered ones must agree with them.
PLAIN_PATTERNS = {
    "credit_card": r"(?<![\d.])(?:\d[ -]?){12,18}\d(?![\d])",
    "phone": r"(?<![\w+])(?<!\d[\s.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\d{2,4}[\s.-])"
    r"\d{3,4}[\s.-]\d{3,4}(?![\w]|[\s.-]\d)"
    r"|(?<![\w+])\+\d{8,15}(?!\w)",
}
_FRAGMENTS = [
    "4111 1111 1111 1111", "378282246310005", "+1 (415) 555-0134", "415.555.0134",
    "+14155550134", "jane@example.com", "sk-proj-Ab3dEf6hIj9kLm2nOp5q", "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "a1B2" * 9, "xoxb-123456789012-abcdef", "AIza" + "x" * 35, "BEARER abcdefghijklmnopq",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX3g", "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----", "order 88594963",
]  # fmt: skip
_noise = st.text(alphabet="0123456789 -.+()@_xAbeyJ\n", max_size=12)
texts_with_secrets = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), _noise), max_size=8).map(
    "".join
)


def _plain(rule: RedactionRule) -> RedactionRule:
    pattern = PLAIN_PATTERNS.get(rule.name, rule.pattern)
    return RedactionRule(rule.name, pattern, rule.replacement, validate=rule.validate)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(texts_with_secrets)
def test_fast_rule_forms_redact_like_the_plain_forms(text: str) -> None:
    for rule in DEFAULT_RULES:
        assert rule.apply(text) == _plain(rule).apply(text), rule.name


def test_every_fragment_is_caught_by_some_rule() -> None:
    # the property test above is only as good as its fragments: each must be a real hit
    redactor = Redactor()
    for fragment in set(_FRAGMENTS) - {"order 88594963", "-----BEGIN PRIVATE KEY-----",
                                       "-----END PRIVATE KEY-----"}:  # fmt: skip
        assert redactor.redact(fragment) != fragment, fragment


def test_a_rule_requires_its_literal_before_scanning() -> None:
    rule = RedactionRule("ticket", r"TCK-\d+", "[TICKET]", requires="TCK-")
    assert rule.apply("see TCK-42 and TCK-7") == ("see [TICKET] and [TICKET]", 2)
    assert rule.apply("nothing here 42") == ("nothing here 42", 0)
    with pytest.raises(ValueError, match="invalid regex in requires"):
        RedactionRule("bad", r"x", "y", requires="(")
