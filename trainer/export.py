"""Export what the trainer would train on, in the formats trainers read.

``sentryml dataset export --format F --since 7d --out FILE`` runs the trainer's own dataset
builder (:func:`trainer.dataset.collect_examples`: corrections, preference pairs, labelled
good and judge-approved completions; PII-redacted; deduplicated; the seeded held-out split)
and writes one JSON object per line:

- ``trl-sft`` — TRL's conversational language-modelling format:
  ``{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}``;
- ``trl-dpo`` — TRL's conversational preference format:
  ``{"prompt": [system?, user], "chosen": [assistant], "rejected": [assistant]}``;
- ``openai-sft`` — OpenAI's supervised fine-tuning file: ``{"messages": [...]}``;
- ``openai-dpo`` — OpenAI's preference fine-tuning file:
  ``{"input": {"messages": [...]}, "preferred_output": [assistant],
  "non_preferred_output": [assistant]}``.

The train split goes to ``FILE``, the held-out split (never trained on) to
``FILE.heldout.jsonl`` beside it, so an external trainer keeps the same evaluation set as
SentryML's promotion rule. The summary says how many examples each source gave and why
the rest were not taken.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from trainer.config import TrainConfig
from trainer.dataset import Example, collect_examples
from workers.store import Store

ExportFormat = Literal["trl-sft", "trl-dpo", "openai-sft", "openai-dpo"]
FORMATS: tuple[ExportFormat, ...] = ("trl-sft", "trl-dpo", "openai-sft", "openai-dpo")


@dataclass
class ExportSummary:
    """What an export wrote and what it left out."""

    fmt: str
    train_path: Path
    heldout_path: Path
    train: int = 0
    heldout: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    not_taken: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        taken = ", ".join(f"{n} {s}" for s, n in sorted(self.by_source.items())) or "none"
        left = ", ".join(f"{n} {r}" for r, n in sorted(self.not_taken.items())) or "nothing"
        return [
            f"{self.train} train examples → {self.train_path}",
            f"{self.heldout} held-out examples → {self.heldout_path}",
            f"taken by source: {taken}",
            f"not taken: {left}",
        ]


def _turns(system: str | None, prompt: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_row(example: Example, fmt: ExportFormat, system: str | None) -> dict[str, Any]:
    """One example in ``fmt`` (the preference formats need a pair).

    >>> e = Example("r1", "correction", "Where is my order?", "On its way.", None,
    ...             "Where is my order?", "On its way.", None, False)
    >>> to_row(e, "openai-sft", None)["messages"][-1]
    {'role': 'assistant', 'content': 'On its way.'}
    """
    prompt = _turns(system, example.prompt)
    if fmt in ("trl-sft", "openai-sft"):
        return {"messages": [*prompt, *_assistant(example.target)]}
    if example.rejected is None:
        raise ValueError(f"example {example.request_id} is not a preference pair")
    if fmt == "trl-dpo":
        return {
            "prompt": prompt,
            "chosen": _assistant(example.target),
            "rejected": _assistant(example.rejected),
        }
    return {
        "input": {"messages": prompt},
        "preferred_output": _assistant(example.target),
        "non_preferred_output": _assistant(example.rejected),
    }


def heldout_path(out: Path) -> Path:
    """``train.jsonl`` → ``train.heldout.jsonl``."""
    return out.with_name(f"{out.stem}.heldout{out.suffix or '.jsonl'}")


def export_dataset(
    store: Store,
    base_model: str,
    cfg: TrainConfig,
    fmt: ExportFormat,
    out: Path,
    *,
    now: datetime,
    progress: Callable[[Iterator[Example], int], Iterator[Example]] | None = None,
) -> ExportSummary:
    """Write the train and held-out splits of ``base_model``'s examples in ``fmt``.

    ``cfg.lookback_days`` is the period; ``progress`` wraps the examples being written
    (a progress bar)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    examples, dropped = collect_examples(store, base_model, cfg, None, now=now)
    summary = ExportSummary(fmt, out, heldout_path(out), not_taken=Counter(dropped))
    pairs_only = fmt.endswith("-dpo")
    chosen = []
    for example in examples:
        if pairs_only and not example.is_pair:
            summary.not_taken["not_a_preference_pair"] += 1
        else:
            chosen.append(example)
    out.parent.mkdir(parents=True, exist_ok=True)
    items: Iterator[Example] = iter(chosen)
    if progress is not None:
        items = progress(items, len(chosen))
    with out.open("w") as train, summary.heldout_path.open("w") as heldout:
        for example in items:
            row = json.dumps(to_row(example, fmt, cfg.system_prompt), ensure_ascii=False)
            (heldout if example.holdout else train).write(row + "\n")
            if example.holdout:
                summary.heldout += 1
            else:
                summary.train += 1
            summary.by_source[example.source] += 1
    return summary
