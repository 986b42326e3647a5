"""Names for clusters: class-based TF-IDF keywords and representative prompts.

A drift report that says "cluster c7 grew" is not actionable; "c7 — refund, order,
charged" with three example prompts is. At baseline fit every cluster gets

- **keywords**: class-based TF-IDF (the c-TF-IDF of BERTopic): all prompts of a cluster are
  one document; a term's weight is its frequency in the cluster times
  ``log(1 + A / f)``, ``A`` the mean number of words per cluster and ``f`` the term's
  frequency over all clusters — frequent in this cluster, rare elsewhere;
- **examples**: the prompts most similar to the centroid (redacted, shortened).

The same :func:`keywords` names any group of texts, e.g. the sampled prompts of a bin that
grew in production, against the training clusters as background.

>>> kw = keywords([["refund my order", "refund was charged twice"],
...                ["reset my password", "password reset link"]], top=2)
>>> kw[0], kw[1]
(['refund', 'charged'], ['password', 'reset'])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Keywords per name and example prompts per cluster kept in the baseline.
TOP_KEYWORDS = 5
EXAMPLES = 3
EXAMPLE_CHARS = 200


def keywords(groups: Sequence[Sequence[str]], top: int = TOP_KEYWORDS) -> list[list[str]]:
    """The ``top`` c-TF-IDF terms of each group of texts (English stop words dropped)."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [" ".join(g) for g in groups]
    if not any(d.strip() for d in docs):
        return [[] for _ in docs]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][\w-]+\b")
    try:
        tf = vectorizer.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # only stop words
        return [[] for _ in docs]
    terms = np.array(vectorizer.get_feature_names_out())
    words_per_class = tf.sum(axis=1, keepdims=True)
    freq = np.maximum(tf.sum(axis=0), 1.0)
    mean_words = float(words_per_class.mean())
    weights = tf / np.maximum(words_per_class, 1.0) * np.log(1.0 + mean_words / freq)
    out = []
    for row, raw in zip(weights, tf, strict=True):
        order = np.lexsort((terms, -row))  # ties: alphabetical, so names are stable
        out.append([str(terms[i]) for i in order[:top] if raw[i] > 0])
    return out


def shorten(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe_clusters(
    prompts: Sequence[str],
    embeddings: np.ndarray,
    bins: np.ndarray,
    centroids: np.ndarray,
    *,
    redact: bool = True,
) -> list[dict[str, object]]:
    """``[{"bin", "name", "keywords", "examples"}]`` for each cluster of the fitting split."""
    from workers.redact import Redactor

    redactor = Redactor() if redact else None
    k = centroids.shape[0]
    groups = [[prompts[int(i)] for i in np.flatnonzero(bins == c)] for c in range(k)]
    names = keywords(groups)
    emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    out: list[dict[str, object]] = []
    for c in range(k):
        members = np.flatnonzero(bins == c)
        sims = emb[members] @ centroids[c]
        examples = []
        seen: set[str] = set()
        for i in members[np.argsort(-sims)]:
            text = shorten(redactor.redact(prompts[i]) if redactor else prompts[i])
            if text not in seen:
                seen.add(text)
                examples.append(text)
            if len(examples) == EXAMPLES:
                break
        words = names[c]
        out.append(
            {
                "bin": c,
                "name": f"c{c}: " + (", ".join(words[:3]) if words else "(no keywords)"),
                "keywords": words,
                "examples": examples,
            }
        )
    return out
