"""The packaged MiniLM embedder (real model, offline), the prompt cache, and sampling."""

from __future__ import annotations

import numpy as np
import pytest

from workers.embedding import (
    MINILM,
    CachedEmbedder,
    Embedder,
    load_embedder,
    sample_for_embedding,
)
from workers.synthetic import domain_prompts


@pytest.fixture(scope="module")
def minilm() -> CachedEmbedder:
    return load_embedder("minilm", cache_size=64)


def test_minilm_vectors_are_normalized_float32_and_meaningful(minilm: CachedEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert (minilm.name, minilm.dim) == (MINILM, 384)
    support = domain_prompts("support", 6, seed=1)
    cooking = domain_prompts("cooking", 6, seed=1)
    vectors = minilm.encode([*support, *cooking], batch_size=4)
    assert vectors.shape == (12, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    within = (sims[:6, :6].sum() - 6) / 30  # mean similarity among support prompts
    across = sims[:6, 6:].mean()  # support vs cooking
    assert within > across + 0.1
    assert minilm.encode([]).shape == (0, 384)


def test_cache_is_transparent_and_counts_hits(minilm: CachedEmbedder) -> None:
    minilm.cache_clear()
    texts = ["Where is my order #1234?", "How do I reset my password?", "Where is my order #1234?"]
    first = minilm.encode(texts)
    info = minilm.cache_info()
    assert (info.hits, info.misses, info.size) == (1, 2, 2)  # the repeat in the batch is a hit
    second = minilm.encode(texts[::-1])
    assert minilm.cache_info().hits == 4
    np.testing.assert_array_equal(second, first[::-1])
    uncached = minilm.inner.encode(texts)
    np.testing.assert_allclose(first, uncached, atol=1e-6)


def test_cache_evicts_least_recently_used() -> None:
    class Lengths:
        name, dim = "lengths", 2

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            self.calls.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    inner = Lengths()
    cached = CachedEmbedder(inner, maxsize=2)
    cached.encode(["a", "bb"])
    cached.encode(["a"])  # "a" is now the most recent
    cached.encode(["ccc"])  # evicts "bb"
    cached.encode(["a", "bb"])
    assert inner.calls == [["a", "bb"], ["ccc"], ["bb"]]
    assert cached.cache_info().size == 2
    with pytest.raises(ValueError, match="maxsize"):
        CachedEmbedder(inner, maxsize=-1)
    with pytest.raises(ValueError, match="batch_size"):
        cached.encode(["a"], batch_size=0)


def test_load_embedder_names() -> None:
    with pytest.raises(ValueError, match="unknown embedder 'bert'"):
        load_embedder("bert")


def test_sample_for_embedding_is_deterministic_and_unbiased() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [sample_for_embedding(r, 0.1) for r in ids]
    assert picked == [sample_for_embedding(r, 0.1) for r in ids]  # every worker agrees
    assert 0.09 <= sum(picked) / len(ids) <= 0.11
    # nested: whatever a 10% sample embeds, a 20% sample embeds too
    assert all(sample_for_embedding(r, 0.2) for r, p in zip(ids, picked, strict=True) if p)
    assert all(sample_for_embedding(r, 1.0) for r in ids[:100])
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            sample_for_embedding("r", bad)
