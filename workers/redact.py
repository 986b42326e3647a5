"""PII and secret redaction before anything is stored: emails, phones, card numbers, API keys.

A :class:`Redactor` applies an ordered list of :class:`RedactionRule` s (regex + replacement,
with an optional validator such as the Luhn check for card numbers) to the prompt, the chat
messages and the completion of an :class:`~schemas.events.InferenceLog`. The rule set is
configurable (``WorkerSettings.redaction``): keep or drop the defaults, switch single default
rules off by name, and add your own patterns.

>>> Redactor().redact("mail jane.doe@example.com or call +1 (415) 555-0134")
'mail [EMAIL] or call [PHONE]'
>>> Redactor().redact("card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234")
'card [CARD], key [API_KEY]'

Rules run in order, secrets and cards before phones, so a card number is not half-eaten by
the phone pattern. Digit runs without separators (order numbers) are not phones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import Field, field_validator

from schemas.events import (
    InferenceLog,
)
from workers.settings import Section


def luhn_valid(candidate: str) -> bool:
    """True when the digits of ``candidate`` (13–19 of them) pass the Luhn checksum.

    >>> luhn_valid("4111-1111-1111-1111"), luhn_valid("4111-1111-1111-1112")
    (True, False)
    """
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class RedactionRule:
    """One pattern and what replaces it; ``validate`` (optional) must accept a match first.

    ``requires`` (optional) is a cheap pattern that every match of ``pattern`` contains —
    a literal such as ``@`` for e-mail addresses. Text without it skips the rule: most
    text holds no secret at all, and a literal search is ~50 times cheaper than the full
    pattern scan. It must never be narrower than the pattern (``tests/test_redact.py``
    checks the defaults on generated text).
    """

    name: str
    pattern: str | re.Pattern[str]
    replacement: str
    validate: Callable[[str], bool] | None = field(default=None, compare=False)
    requires: str | re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a redaction rule needs a non-empty name")
        for attr in ("pattern", "requires"):
            value = getattr(self, attr)
            if isinstance(value, str):
                try:
                    object.__setattr__(self, attr, re.compile(value))
                except re.error as exc:
                    raise ValueError(
                        f"redaction rule {self.name!r}: invalid regex in {attr}: {exc}"
                    ) from exc

    @property
    def regex(self) -> re.Pattern[str]:
        assert isinstance(self.pattern, re.Pattern)  # compiled in __post_init__
        return self.pattern

    def apply(self, text: str) -> tuple[str, int]:
        """``text`` with every (valid) match replaced, and the number of replacements."""
        if isinstance(self.requires, re.Pattern) and self.requires.search(text) is None:
            return text, 0
        if self.validate is None:
            return self.regex.subn(self.replacement, text)
        hits = 0

        def _sub(match: re.Match[str]) -> str:
            nonlocal hits
            assert self.validate is not None
            if not self.validate(match.group(0)):
                return match.group(0)
            hits += 1
            return match.expand(self.replacement)

        return self.regex.sub(_sub, text), hits


#: The built-in rules, in the order they run. Each secret pattern names a literal that
#: every match contains (``requires``); the digit patterns start by consuming a digit (or
#: ``+``/``(``), so the regex engine jumps from candidate to candidate instead of trying
#: its look-behinds at every position.
DEFAULT_RULES: tuple[RedactionRule, ...] = (
    RedactionRule(
        "private_key",
        r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
        "[PRIVATE_KEY]",
        requires="PRIVATE KEY-----",
    ),
    RedactionRule(
        "bearer_token",
        r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{16,}=*",
        r"\1 [TOKEN]",
        requires="(?i)bearer",
    ),
    RedactionRule(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        "[TOKEN]",
        requires="eyJ",
    ),
    # OpenAI / Anthropic style secret keys: sk-..., sk-proj-..., sk-ant-...
    RedactionRule(
        "openai_key", r"\bsk-(?:[A-Za-z]+-)?[A-Za-z0-9_-]{16,}", "[API_KEY]", requires="sk-"
    ),
    RedactionRule(
        "aws_access_key",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
        "[API_KEY]",
        requires="AKIA|ASIA|AGPA|AIDA|AROA",
    ),
    RedactionRule(
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        "[API_KEY]",
        requires="gh",
    ),
    RedactionRule("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "[API_KEY]", requires="xox"),
    RedactionRule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", "[API_KEY]", requires="AIza"),
    RedactionRule(
        "email",
        r"(?i)\b[a-z0-9][a-z0-9._%+-]*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}\b",
        "[EMAIL]",
        requires="@",
    ),
    # 13–19 digits, optionally grouped by spaces or dashes, not preceded by a digit or a
    # dot nor followed by a digit; only Luhn-valid runs are cards.
    RedactionRule(
        "credit_card", r"\d(?<![\d.]\d)(?:[ -]?\d){12,18}(?!\d)", "[CARD]", validate=luhn_valid
    ),
    # Phone numbers need separators or a leading "+", so bare order numbers stay intact, and
    # must not be part of a longer digit group (a card number failing Luhn is left alone):
    # +1 (415) 555-0134, 415-555-0134, 415.555.0134, +44 20 7946 0958, +14155550134.
    RedactionRule(
        "phone",
        r"(?=[+(\d])(?:"
        r"(?<![\w+])(?<!\d[\s.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\d{2,4}[\s.-])"
        r"\d{3,4}[\s.-]\d{3,4}(?![\w]|[\s.-]\d)"
        r"|(?<![\w+])\+\d{8,15}(?!\w))",
        "[PHONE]",
    ),
)


class Redactor:
    """Applies redaction rules to text and to whole inference events.

    >>> r = Redactor([*DEFAULT_RULES, RedactionRule("employee", r"\\bEMP-\\d{6}\\b", "[EMPLOYEE]")])
    >>> r.redact("ticket from EMP-123456 (bob@corp.example)")
    'ticket from [EMPLOYEE] ([EMAIL])'
    """

    def __init__(self, rules: Iterable[RedactionRule] = DEFAULT_RULES) -> None:
        self.rules: tuple[RedactionRule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"redaction rule names must be unique; repeated: {dupes}")
        #: replacements made so far, per rule name (for metrics)
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: RedactionSettings) -> Redactor:
        """The rule set ``WorkerSettings.redaction`` describes (defaults, minus disabled, plus own)."""
        known = {r.name for r in DEFAULT_RULES}
        unknown = sorted(set(settings.disabled) - known)
        if unknown:
            raise ValueError(
                f"redaction.disabled names unknown default rules {unknown}; "
                f"the defaults are {sorted(known)}"
            )
        rules: list[RedactionRule] = []
        if settings.use_defaults:
            rules.extend(r for r in DEFAULT_RULES if r.name not in settings.disabled)
        rules.extend(
            RedactionRule(r.name, r.pattern, r.replacement, requires=r.requires)
            for r in settings.rules
        )
        return cls(rules)

    def redact(self, text: str) -> str:
        """``text`` with every rule applied in order."""
        for rule in self.rules:
            text, hits = rule.apply(text)
            if hits:
                self.counts[rule.name] += hits
        return text

    def redact_event(self, event: InferenceLog) -> InferenceLog:
        """A copy of ``event`` with prompt, messages, completion and metadata strings redacted."""
        update: dict[str, object] = {"completion": self.redact(event.completion)}
        if event.prompt is not None:
            update["prompt"] = self.redact(event.prompt)
        if event.messages:
            update["messages"] = [
                m.model_copy(update={"content": self.redact(m.content)}) for m in event.messages
            ]
        if event.metadata:  # free-form strings from the app: as likely to hold PII as a prompt
            update["metadata"] = {
                k: self.redact(v) if isinstance(v, str) else v for k, v in event.metadata.items()
            }
        return event.model_copy(update=update)

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        return [self.redact(t) for t in texts]


class RedactionRuleSettings(Section):
    """One extra redaction rule: a Python regex and its replacement (``\\1`` refers to groups)."""

    name: str = Field(..., min_length=1, max_length=64)
    pattern: str = Field(..., min_length=1)
    replacement: str = "[REDACTED]"
    requires: str | None = Field(
        None,
        description="Optional cheap regex that every match contains (e.g. a literal prefix "
        "such as 'EMP-'): text without it skips the rule, which saves the full scan",
    )

    @field_validator("pattern", "requires")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        import re

        try:
            if value is not None:
                re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value


class RedactionSettings(Section):
    """What is masked before raw rows are stored (see docs/drift.md, "Redaction").

    ``SENTRYML_REDACTION_RULES='[{"name": "employee", "pattern": "EMP-\\\\d{6}",
    "replacement": "[EMPLOYEE]"}]'`` adds a rule; ``SENTRYML_REDACTION_DISABLED='["phone"]'``
    switches a default rule off; ``SENTRYML_REDACTION_USE_DEFAULTS=false`` drops them all.
    """

    use_defaults: bool = Field(True, description="Apply the built-in rules (workers.redact)")
    disabled: tuple[str, ...] = Field((), description="Names of built-in rules to skip")
    rules: tuple[RedactionRuleSettings, ...] = Field((), description="Extra rules, run last")
