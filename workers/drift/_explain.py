"""What changed: the explanation every drift alert, the report and ``sentryml drift explain`` carry.

For one (model, adapter, baseline) and one window:

- **the share of traffic unlike the training data**, with its interval (``novelty``),
- **the bins that grew and shrank most**, named (clusters by their fit-time keywords,
  ``workers.baseline``; numeric bins by their range),
- **keywords of the new prompts**: class-based TF-IDF of the window's novel prompts
  (conformal p <= 0.05) against its typical ones (p > 0.5), so the words say what is
  different about the new traffic, not what all traffic is about,
- **up to 5 example prompts**, the most novel first.

The prompts come from ``inference_logs`` (stored redacted): per bin, the ``k`` rows with
the smallest ``cityHash64(request_id)`` in the window. That is a bottom-k sample: uniform
within the bin, the same whichever worker wrote which row and however the window is cut,
because the union of every worker's rows is merged before the k smallest are taken — so
it merges exactly, with no extra write path. Replays are removed by ``FINAL``
(``inference_logs`` is a ReplacingMergeTree by request_id).

:func:`explain` is pure (counts and prompt samples in, an :class:`Explanation` out);
:func:`explain_window` reads the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.baseline import keywords, shorten

if TYPE_CHECKING:
    from workers.baseline import Baseline, FeatureBaseline
    from workers.store import Store

#: Bins listed as grown / shrunk.
TOP_BINS = 3
#: Example prompts in an explanation.
MAX_EXAMPLES = 5
#: Prompts sampled per bin (keywords need more than the examples do).
PER_BIN = 20
#: A novel prompt: conformal p <= 0.05 (the first novelty bins); typical: p > 0.5 (the last).
NOVEL_P = 0.05


@dataclass(frozen=True)
class BinChange:
    """One bin's share in the window vs the baseline reference."""

    feature: str
    bin: int
    name: str
    window_share: float
    reference_share: float

    @property
    def delta(self) -> float:
        return self.window_share - self.reference_share

    def text(self) -> str:
        return (
            f"{self.name} {self.reference_share:.0%} → {self.window_share:.0%} ({self.delta:+.0%})"
        )


@dataclass(frozen=True)
class Explanation:
    """What changed in one window (see the module docstring)."""

    window: str
    sample_size: int
    share: float | None = None
    share_low: float | None = None
    share_high: float | None = None
    grew: list[BinChange] = field(default_factory=list)
    shrank: list[BinChange] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grew"] = [{**asdict(c), "delta": c.delta} for c in self.grew]
        out["shrank"] = [{**asdict(c), "delta": c.delta} for c in self.shrank]
        return out

    def summary(self) -> str:
        """One line for an alert message."""
        parts = []
        if self.keywords:
            parts.append("new prompts about: " + ", ".join(self.keywords[:5]))
        if self.grew:
            parts.append("grew: " + "; ".join(c.text() for c in self.grew[:2]))
        if self.shrank:
            parts.append("shrank: " + "; ".join(c.text() for c in self.shrank[:2]))
        return " | ".join(parts)

    def lines(self) -> list[str]:
        """The explanation as text, for the CLI and the report."""
        out = [f"window {self.window}: {self.sample_size} prompts"]
        if self.share is not None and self.share_low is not None and self.share_high is not None:
            out.append(
                f"unlike the training data: {self.share:.0%} "
                f"(95% interval {self.share_low:.0%}–{self.share_high:.0%})"
            )
        if self.keywords:
            out.append("keywords of the new prompts: " + ", ".join(self.keywords))
        for label, changes in (("grew", self.grew), ("shrank", self.shrank)):
            for c in changes:
                out.append(f"{label}: {c.text()}")
        for i, example in enumerate(self.examples, 1):
            out.append(f"example {i}: {example}")
        return out


def bin_names(baseline: Baseline, feature: str) -> list[str]:
    """Readable names of a feature's bins: cluster names, ranges, yes/no."""
    fb = baseline.features[feature]
    if feature == "embedding":
        return baseline.bin_names()
    if feature == "novelty":
        return [f"novelty bin {i}" for i in range(fb.bins)]
    if feature == "refusal":
        return ["answered", "refused"]
    edges = list(fb.edges or ())
    lows = ["-inf", *[f"{e:g}" for e in edges]]
    highs = [*[f"{e:g}" for e in edges], "inf"]
    return [f"{feature} [{lo}, {hi})" for lo, hi in zip(lows, highs, strict=True)]


def bin_changes(
    counts: np.ndarray, fb: FeatureBaseline, names: Sequence[str], top: int = TOP_BINS
) -> tuple[list[BinChange], list[BinChange]]:
    """The ``top`` bins that grew most and shrank most (by share), largest change first.

    >>> from workers.baseline import FeatureBaseline
    >>> fb = FeatureBaseline.from_counts("embedding", None, [50, 30, 20])
    >>> grew, shrank = bin_changes(np.array([10, 30, 60]), fb, ["a", "b", "c"], top=1)
    >>> grew[0].text(), shrank[0].text()
    ('c 20% → 60% (+40%)', 'a 50% → 10% (-40%)')
    """
    w = np.asarray(counts, dtype=np.float64)
    n = w.sum()
    if n == 0:
        return [], []
    share = w / n
    ref = np.asarray(fb.shares, dtype=np.float64)
    changes = [
        BinChange(fb.name, i, names[i], float(share[i]), float(ref[i])) for i in range(fb.bins)
    ]
    grew = sorted((c for c in changes if c.delta > 0), key=lambda c: -c.delta)[:top]
    shrank = sorted((c for c in changes if c.delta < 0), key=lambda c: c.delta)[:top]
    return grew, shrank


def _novel_bins(fb: FeatureBaseline, p: float) -> int:
    cum = np.cumsum(np.asarray(fb.shares, dtype=np.float64))
    return int(np.sum(cum[:-1] <= p + 1e-9))


def explain(
    baseline: Baseline,
    window: str,
    counts: Mapping[str, np.ndarray],
    samples: Mapping[str, Mapping[int, Sequence[str]]],
    *,
    features: Sequence[str] = ("novelty", "embedding"),
) -> Explanation:
    """The explanation of one window from its counts per feature and sampled prompts.

    ``samples`` is ``{"embedding" | "novelty": {bin: [prompts]}}`` (bottom-k by hash of
    request_id); the bin changes are listed for ``features`` that the baseline has.
    """
    from workers.stats import off_distribution_share

    grew: list[BinChange] = []
    shrank: list[BinChange] = []
    for feature in features:
        fb = baseline.features.get(feature)
        if fb is None or feature == "novelty" or feature not in counts:
            continue
        g, s = bin_changes(counts[feature], fb, bin_names(baseline, feature))
        grew += g
        shrank += s
    n = int(np.asarray(counts.get("embedding", np.zeros(1))).sum())
    share = low = high = None
    novel: list[str] = []
    typical: list[str] = []
    fb_nov = baseline.features.get("novelty")
    if fb_nov is not None and "novelty" in counts and int(np.sum(counts["novelty"])) > 0:
        est = off_distribution_share(np.asarray(counts["novelty"]), fb_nov.counts)
        share, low, high = est.share, est.low, est.high
        n = max(n, est.sample_size)
        by_bin = samples.get("novelty", {})
        for b in range(_novel_bins(fb_nov, NOVEL_P)):
            novel += list(by_bin.get(b, ()))
        typical = list(by_bin.get(fb_nov.bins - 1, ()))
    emb = samples.get("embedding", {})
    if not novel:  # no novelty feature: the prompts of the clusters that grew are the news
        grown = {c.bin for c in grew if c.feature == "embedding"}
        novel = [p for b in sorted(grown) for p in emb.get(b, ())]
        typical = [p for b, ps in emb.items() if b not in grown for p in ps]
    if not typical:  # background: the training clusters' own examples
        typical = [str(e) for c in baseline.meta.get("clusters", []) for e in c["examples"]]
    words = keywords([novel, typical])[0] if novel else []
    examples: list[str] = []
    for prompt in novel:
        text = shorten(prompt)
        if text not in examples:
            examples.append(text)
        if len(examples) == MAX_EXAMPLES:
            break
    return Explanation(
        window=window,
        sample_size=n,
        share=share,
        share_low=low,
        share_high=high,
        grew=grew,
        shrank=shrank,
        keywords=words,
        examples=examples,
    )


def sample_prompts(
    store: Store,
    base_model: str,
    adapter_version: str,
    start: datetime,
    end: datetime,
    per_bin: int = PER_BIN,
) -> dict[str, dict[int, list[str]]]:
    """``{"embedding": {bin: prompts}, "novelty": {bin: prompts}}``: the ``per_bin`` rows
    with the smallest hash of request_id per bin in ``[start, end)`` (an exact bottom-k
    sample across workers). After a refit, the window's rows binned by the previous
    baseline are included too (``inference_logs`` does not record the baseline)."""
    out: dict[str, dict[int, list[str]]] = {}
    for feature, column in (("embedding", "embed_bin"), ("novelty", "novelty_bin")):
        rows = store.query(
            f"SELECT {column}, prompt FROM inference_logs FINAL "
            "WHERE base_model = {m:String} AND adapter_version = {a:String} "
            "AND ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')} "
            f"AND {column} >= 0 "
            f"ORDER BY {column}, cityHash64(request_id) LIMIT {int(per_bin)} BY {column}",
            {"m": base_model, "a": adapter_version, "start": start, "end": end},
        ).rows
        for b, prompt in rows:
            out.setdefault(feature, {}).setdefault(int(b), []).append(str(prompt))
    return out


def explain_window(
    store: Store,
    stream: tuple[str, str, Baseline],
    window: str,
    end: datetime,
    counts: Mapping[str, Mapping[int, int]] | None = None,
) -> Explanation:
    """:func:`explain` for one window ending at ``end`` (counts read unless given)."""
    from workers.drift._evaluate import WINDOWS, window_counts

    base_model, adapter_version, baseline = stream
    start = end - WINDOWS[window]
    raw = counts if counts is not None else window_counts(store, stream, start, end)
    arrays: dict[str, np.ndarray] = {}
    for feature, fb in baseline.features.items():
        arr = np.zeros(fb.bins, dtype=np.int64)
        for b, n in raw.get(feature, {}).items():
            if 0 <= b < fb.bins:
                arr[b] = n
        arrays[feature] = arr
    samples = sample_prompts(store, base_model, adapter_version, start, end)
    return explain(baseline, window, arrays, samples)
