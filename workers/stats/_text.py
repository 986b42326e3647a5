"""Output statistics of one completion: length, vocabulary diversity, refusal.

Pure functions on strings, used both when a baseline is fitted (``sentryml baseline fit``)
and for every production event, so the two are measured the same way.

- **length**: the model's own ``completion_tokens`` when the caller passes it, else a simple
  tokenization count (words and punctuation marks: ``\\w+`` runs and single non-space
  symbols), a rough stand-in for sub-word tokens. A baseline fitted from a JSONL file has no
  token counts, so it is measured in simple tokens: pass ``completion_tokens`` only when the
  baseline was measured with the same tokenizer, or length drift will show the unit change.
- **ttr** (type–token ratio): distinct lowercase words / words. Words only, because JSON
  punctuation would otherwise dominate the ratio.
- **distinct2**: distinct word bigrams / word bigrams.
- **refusal**: :func:`is_refusal`, a documented set of phrase patterns.

>>> s = text_stats('{"intent": "refund", "answer": "Your refund is on its way."}')
>>> (s.length, round(s.ttr, 3), s.distinct2, s.refusal)
(23, 0.889, 1.0, False)
>>> is_refusal("I'm sorry, but I can't help with that request.")
True
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+(?:['’]\w+)?")

#: Phrase patterns that mark a refusal (case-insensitive, matched anywhere in the text).
#: Each needs a refusal verb *and* what is refused, so "I can't find an order with that
#: number" (a normal support answer) is not a refusal while "I can't help with that" is.
REFUSAL_PATTERNS: tuple[str, ...] = (
    # "I can't / cannot / won't (be able to) / am unable to / am not able to  help|assist|..."
    r"\bi\s*(?:can\s*not|cannot|can['’]?t|(?:won['’]?t|will\s+not)(?:\s+be\s+able\s+to)?"
    r"|am\s+not\s+able\s+to|['’]m\s+not\s+able\s+to"
    r"|am\s+unable\s+to|['’]m\s+unable\s+to|am\s+not\s+allowed\s+to|['’]m\s+not\s+allowed\s+to"
    r"|am\s+not\s+permitted\s+to|['’]m\s+not\s+permitted\s+to)\s+"
    r"(?:help|assist|comply|provide|fulfil+|support|answer|share|discuss|engage|do\s+that"
    r"|give\s+(?:you\s+)?(?:advice|that|information)|respond\s+to)",
    # "As an AI (language model), ..."
    r"\bas\s+an\s+ai(?:\s+(?:language\s+)?model|\s+assistant)?\b",
    # "I must decline", "I have to refuse"
    r"\bi\s+(?:must|have\s+to|need\s+to)\s+(?:respectfully\s+)?(?:decline|refuse)",
    # "... against my guidelines", "violates our usage policy"
    r"\b(?:against|violates?|violating)\s+(?:my|our|the|openai['’]s)\s+(?:\w+\s+)?"
    r"(?:guidelines|polic(?:y|ies)|rules|terms)",
    # "I'm sorry, but that request is not something I can ..."
    r"\bnot\s+something\s+i\s+(?:can|am\s+able\s+to)\s+(?:help|assist)",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)


class TextStats(NamedTuple):
    """Statistics of one completion (see the module docstring for each definition)."""

    length: int
    ttr: float
    distinct2: float
    refusal: bool


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks: the simple token count used for length.

    >>> tokenize('{"a": 1}')
    ['{', '"', 'a', '"', ':', '1', '}']
    """
    return _TOKEN.findall(text)


def words(text: str) -> list[str]:
    """Lowercase words (with inner apostrophes kept: ``don't``), the unit of diversity."""
    return [w.lower() for w in _WORD.findall(text)]


def type_token_ratio(tokens: list[str]) -> float:
    """Distinct tokens / tokens; 0.0 for no tokens."""
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def distinct_n(tokens: list[str], n: int = 2) -> float:
    """Distinct n-grams / n-grams (Li et al., 2016); 0.0 when there are fewer than ``n`` tokens.

    >>> distinct_n(["a", "b", "a", "b"], 2)  # ab, ba, ab
    0.6666666666666666
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = len(tokens) - n + 1
    if count < 1:
        return 0.0
    grams = zip(*(tokens[i:] for i in range(n)), strict=False)  # shortest wins: the n-grams
    return len(set(grams)) / count


def is_refusal(text: str) -> bool:
    """True when ``text`` contains one of :data:`REFUSAL_PATTERNS`.

    >>> is_refusal("As an AI language model, I cannot give legal advice.")
    True
    >>> is_refusal("I can't find an order with that number; please check it.")
    False
    """
    return _REFUSAL.search(text) is not None


def text_stats(completion: str, completion_tokens: int | None = None) -> TextStats:
    """Length, type–token ratio, distinct-2 and refusal flag of one completion."""
    if completion_tokens is not None and completion_tokens < 0:
        raise ValueError(f"completion_tokens must be >= 0, got {completion_tokens}")
    ws = words(completion)
    length = completion_tokens if completion_tokens is not None else len(tokenize(completion))
    return TextStats(
        length=int(length),
        ttr=type_token_ratio(ws),
        distinct2=distinct_n(ws, 2),
        refusal=is_refusal(completion),
    )
