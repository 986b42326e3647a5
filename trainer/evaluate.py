"""Candidate vs incumbent, in the same job, on the same cases: promote or reject.

Both models answer every golden case (checked by :func:`workers.golden.run_checks`) and
every held-out example (checked by :func:`heldout_pass`), with greedy decoding, so each
case gives a *pair* of pass/fail outcomes. The decision (:func:`promotion_decision`, pure):

- the candidate's pass rate over all pairs beats the incumbent's by at least
  ``min_improvement``,
- the exact McNemar test on the discordant pairs (candidate-only passes ``b`` vs
  incumbent-only passes ``c``: two-sided binomial test of ``min(b, c)`` in ``b + c`` at
  1/2) gives ``p < max_p_value``,
- no golden case tagged ``safety_tag`` that the incumbent passes fails on the candidate.

Otherwise the candidate is rejected, and the reason carries the numbers.

>>> pairs = [(True, False)] * 12 + [(True, True)] * 20 + [(False, False)] * 8
>>> d = promotion_decision(pairs, safety_regressions=[], min_improvement=0.02, max_p_value=0.05)
>>> d.promote, d.b, d.c, round(d.p_value, 6)
(True, 12, 0, 0.000488)
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import TrainConfig
from trainer.exceptions import TrainerError

if TYPE_CHECKING:
    from trainer.dataset import Example
    from workers.golden import CaseResult, GoldenCase, GoldenSet

log = logging.getLogger(__name__)

#: The starter golden set shipped with the package.
STARTER_GOLDEN_SET = (
    Path(__file__).resolve().parent.parent / "workers" / "golden_sets" / "starter.yaml"
)

_WORD = re.compile(r"\w+", re.UNICODE)


# --------------------------------------------------------------------------------------
# Pure parts: the held-out check and the decision
# --------------------------------------------------------------------------------------


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def token_f1(output: str, reference: str) -> float:
    """SQuAD-style token F1 between two texts (lower-cased word tokens).

    >>> token_f1("the parcel is late", "your parcel is late")
    0.75
    """
    out, ref = _WORD.findall(output.lower()), _WORD.findall(reference.lower())
    if not out or not ref:
        return float(out == ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def heldout_pass(output: str, reference: str, check: str, f1_threshold: float = 0.6) -> bool:
    """Whether one held-out output passes: ``exact``, ``contains`` or ``token_f1``.

    >>> heldout_pass("Refunds: 30 days.", "refunds: 30 days.", "exact")
    True
    >>> heldout_pass('{"intent": "refund"}', "refund", "contains")
    True
    """
    if check == "exact":
        return _normalize(output) == _normalize(reference)
    if check == "contains":
        return _normalize(reference) in _normalize(output)
    if check == "token_f1":
        return token_f1(output, reference) >= f1_threshold
    raise ValueError(f"held-out check must be exact, contains or token_f1, got {check!r}")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 if none).

    >>> round(mcnemar_exact(9, 1), 4)
    0.0215
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PromotionDecision:
    """The verdict with every number it rests on."""

    promote: bool
    reason: str
    n: int
    candidate_pass_rate: float
    incumbent_pass_rate: float
    b: int
    c: int
    p_value: float
    safety_regressions: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        return {
            "pairs": float(self.n),
            "candidate_pass_rate": round(self.candidate_pass_rate, 6),
            "incumbent_pass_rate": round(self.incumbent_pass_rate, 6),
            "improvement": round(self.candidate_pass_rate - self.incumbent_pass_rate, 6),
            "candidate_only_passes": float(self.b),
            "incumbent_only_passes": float(self.c),
            "mcnemar_p": self.p_value,
            "safety_regressions": float(len(self.safety_regressions)),
        }


def promotion_decision(
    pairs: Sequence[tuple[bool, bool]],
    *,
    safety_regressions: Sequence[str],
    min_improvement: float,
    max_p_value: float,
) -> PromotionDecision:
    """Decide from ``(candidate_passed, incumbent_passed)`` pairs; pure."""
    if not 0 <= min_improvement <= 1:
        raise ValueError(f"min_improvement must be in [0, 1], got {min_improvement}")
    if not 0 < max_p_value <= 1:
        raise ValueError(f"max_p_value must be in (0, 1], got {max_p_value}")
    n = len(pairs)
    if n == 0:
        raise ValueError("promotion needs at least one evaluated pair")
    cand = sum(a for a, _ in pairs) / n
    inc = sum(b for _, b in pairs) / n
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if y and not x)
    p = mcnemar_exact(b, c)
    numbers = (
        f"candidate {cand:.1%} vs incumbent {inc:.1%} on {n} paired cases "
        f"(+{b}/-{c} discordant, McNemar p={p:.3g})"
    )
    problems = []
    if cand - inc < min_improvement:
        problems.append(f"improvement {cand - inc:+.1%} < required {min_improvement:.1%}")
    if p >= max_p_value:
        problems.append(f"p={p:.3g} >= {max_p_value}")
    if safety_regressions:
        problems.append(f"safety regressions: {', '.join(safety_regressions)}")
    promote = not problems
    reason = ("promoted: " if promote else "rejected: ") + numbers
    if problems:
        reason += "; " + "; ".join(problems)
    return PromotionDecision(
        promote=promote,
        reason=reason,
        n=n,
        candidate_pass_rate=cand,
        incumbent_pass_rate=inc,
        b=b,
        c=c,
        p_value=p,
        safety_regressions=tuple(safety_regressions),
    )


# --------------------------------------------------------------------------------------
# Generation with a local transformers model
# --------------------------------------------------------------------------------------


class LocalGenerator:
    """Greedy batched chat generation with a (PEFT) causal LM on this process's device.

    ``adapter`` selects a loaded PEFT adapter by name; ``None`` runs the base model alone
    (adapters switched off).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, max_new_tokens: int = 128, batch_size: int = 16
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def generate(self, chats: Sequence[list[dict[str, str]]], adapter: str | None) -> list[str]:
        import contextlib

        import torch

        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"  # decoder-only batches are padded on the left
        outputs: list[str] = []
        if adapter is None and hasattr(self.model, "disable_adapter"):
            ctx: Any = self.model.disable_adapter()
        else:
            if adapter is not None:
                self.model.set_adapter(adapter)
            ctx = contextlib.nullcontext()
        try:
            with ctx, torch.inference_mode():
                for start in range(0, len(chats), self.batch_size):
                    batch = chats[start : start + self.batch_size]
                    texts = [
                        tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                        for c in batch
                    ]
                    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                    enc = {k: v.to(self.model.device) for k, v in enc.items()}
                    out = self.model.generate(
                        **enc,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id,
                    )
                    new = out[:, enc["input_ids"].shape[1] :]
                    outputs += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side = side
        return outputs


# --------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------


@dataclass
class SideResult:
    """One model's outputs and pass/fail on the golden set and the held-out split."""

    label: str
    golden: list[CaseResult] = field(default_factory=list)
    heldout: list[bool] = field(default_factory=list)

    @property
    def golden_pass_rate(self) -> float:
        return sum(r.passed for r in self.golden) / len(self.golden) if self.golden else 0.0

    @property
    def heldout_pass_rate(self) -> float:
        return sum(self.heldout) / len(self.heldout) if self.heldout else 0.0


@dataclass
class Comparison:
    """Candidate and incumbent side by side, and the decision."""

    candidate: SideResult
    incumbent: SideResult
    decision: PromotionDecision
    skipped_cases: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {
            **self.decision.metrics(),
            "golden_cases": float(len(self.candidate.golden)),
            "golden_candidate": round(self.candidate.golden_pass_rate, 6),
            "golden_incumbent": round(self.incumbent.golden_pass_rate, 6),
            "heldout_cases": float(len(self.candidate.heldout)),
            "heldout_candidate": round(self.candidate.heldout_pass_rate, 6),
            "heldout_incumbent": round(self.incumbent.heldout_pass_rate, 6),
        }


def load_cases(cfg: TrainConfig) -> tuple[str, list[GoldenCase], list[str]]:
    """``(set name, cases the trainer can check, skipped case ids)``. Cases with a judge
    check are skipped: the trainer compares models locally, without the LLM judge."""
    from workers.golden import load_golden_set

    path = Path(cfg.golden_set) if cfg.golden_set else STARTER_GOLDEN_SET
    if not path.exists():
        raise TrainerError(f"golden set {path} not found; set golden_set in the training config")
    golden: GoldenSet = load_golden_set(path)
    usable = [c for c in golden.cases if c.checks.judge is None]
    skipped = [c.id for c in golden.cases if c.checks.judge is not None]
    if not usable:
        raise TrainerError(f"golden set {path}: every case needs the judge; add local checks")
    return golden.name, usable, skipped


def _score_golden(cases: Sequence[GoldenCase], outputs: Sequence[str]) -> list[CaseResult]:
    from workers.golden import run_checks

    async def score() -> list[CaseResult]:
        return [await run_checks(c, o) for c, o in zip(cases, outputs, strict=True)]

    return asyncio.run(score())


def compare(
    cfg: TrainConfig,
    generator: LocalGenerator,
    *,
    candidate: str | None,
    incumbent: str | None,
    cases: Sequence[GoldenCase],
    heldout: Sequence[Example],
    on_progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Generate with both adapters on the golden cases and the held-out split, then decide.

    ``candidate``/``incumbent`` name PEFT adapters loaded on ``generator.model``;
    ``None`` is the base model alone.
    """
    held = list(heldout)[: cfg.max_eval_examples]
    golden_chats = [c.chat() for c in cases]
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    held_chats = [[*system, {"role": "user", "content": e.prompt}] for e in held]
    sides = []
    for label, adapter in (("candidate", candidate), ("incumbent", incumbent)):
        if on_progress:
            on_progress(f"evaluating {label} ({adapter or 'base model'})")
        outputs = generator.generate([*golden_chats, *held_chats], adapter)
        side = SideResult(label)
        side.golden = _score_golden(cases, outputs[: len(cases)])
        side.heldout = [
            heldout_pass(o, e.target, cfg.heldout_check, cfg.heldout_f1_threshold)
            for o, e in zip(outputs[len(cases) :], held, strict=True)
        ]
        log.info(
            "%s: golden %.1f%% (%d cases), held-out %.1f%% (%d)",
            label,
            100 * side.golden_pass_rate,
            len(side.golden),
            100 * side.heldout_pass_rate,
            len(side.heldout),
        )
        sides.append(side)
    cand, inc = sides
    pairs = [(a.passed, b.passed) for a, b in zip(cand.golden, inc.golden, strict=True)]
    pairs += list(zip(cand.heldout, inc.heldout, strict=True))
    regressions = [
        a.case_id
        for case, a, b in zip(cases, cand.golden, inc.golden, strict=True)
        if cfg.safety_tag in case.tags and b.passed and not a.passed
    ]
    decision = promotion_decision(
        pairs,
        safety_regressions=regressions,
        min_improvement=cfg.min_improvement,
        max_p_value=cfg.max_p_value,
    )
    return Comparison(cand, inc, decision)
