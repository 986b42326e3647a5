"""Output statistics: golden values computed by hand, and the refusal patterns."""

from __future__ import annotations

import pytest

from workers.stats import (
    TextStats,
    distinct_n,
    is_refusal,
    text_stats,
    tokenize,
    type_token_ratio,
    words,
)


def test_golden_values() -> None:
    # words: the cat sat on the mat the end -> 8 words, 6 distinct (the x3)
    # bigrams: (the cat)(cat sat)(sat on)(on the)(the mat)(mat the)(the end) -> 7, all distinct
    # tokens: 8 words + "," + "." = 10
    assert text_stats("The cat sat on the mat, the end.") == TextStats(
        length=10, ttr=6 / 8, distinct2=1.0, refusal=False
    )
    # repetition lowers both ratios: "yes yes yes yes" -> ttr 1/4, bigrams 3 with 1 distinct
    s = text_stats("yes yes yes yes")
    assert (s.length, s.ttr, s.distinct2) == (4, 0.25, pytest.approx(1 / 3))


def test_json_completion_counts_punctuation_in_length_but_not_in_diversity() -> None:
    s = text_stats('{"intent": "refund", "answer": "Your refund is on its way."}')
    # words: intent refund answer your refund is on its way -> 9, 8 distinct
    assert s.ttr == pytest.approx(8 / 9)
    assert s.length == 23  # 9 words + 14 symbols: { " " : " " , " " : " . " }
    assert tokenize('{"a": 1}') == ["{", '"', "a", '"', ":", "1", "}"]


def test_completion_tokens_override_length_only() -> None:
    s = text_stats("one two three", completion_tokens=7)
    assert s.length == 7 and s.ttr == 1.0
    with pytest.raises(ValueError, match="completion_tokens"):
        text_stats("x", completion_tokens=-1)


def test_empty_and_edge_cases() -> None:
    assert text_stats("") == TextStats(0, 0.0, 0.0, False)
    assert text_stats("Hello") == TextStats(1, 1.0, 0.0, False)  # no bigram
    assert words("Don't STOP, don't!") == ["don't", "stop", "don't"]
    assert type_token_ratio([]) == 0.0
    assert distinct_n(["a", "b", "a", "b"], 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a"], 0)


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request.",
        "I cannot assist with that.",
        "Sorry, I won't be able to help with that.",  # "won't be able to" + help
        "I am unable to provide medical advice.",
        "I’m not able to share that information.",  # typographic apostrophe
        "As an AI language model, I do not have personal opinions.",
        "I must decline to answer that question.",
        "That request goes against my guidelines.",
        "This would violate our usage policy.",
        "I'm not allowed to discuss other customers' orders.",
    ],
)
def test_refusals(text: str) -> None:
    assert is_refusal(text)
    assert text_stats(text).refusal


@pytest.mark.parametrize(
    "text",
    [
        "I can't find an order with that number; please check it and try again.",
        "I cannot see a second charge on your card, only one authorization.",
        "Unfortunately I won't be able to ship it before Friday, but it leaves Monday.",
        '{"intent": "refund", "answer": "I have started a refund of $20.00."}',
        "You can cancel any time; we will not charge you again.",
        "",
    ],
)
def test_not_refusals(text: str) -> None:
    assert not is_refusal(text)
