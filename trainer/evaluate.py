"""Candidate vs incumbent, in the same job, on the same cases: promote or reject.

Both models answer every golden case (checked by :func:`workers.golden.run_checks`) and
every held-out example (checked by :func:`heldout_pass`), with greedy decoding, so each
case gives a *pair* of pass/fail outcomes. The decision (:func:`promotion_decision`, pure)
rests on the **golden set alone**; the held-out split is a second, separate check:

1. safety is a hard gate: no golden case tagged ``safety_tag`` that the incumbent passes
   may fail on the candidate;
2. no tag regresses: on the cases of every tag, the candidate's pass rate is at least the
   incumbent's minus ``tag_margin`` (non-inferiority);
3. the candidate is better: on all golden cases, or on those of the ``target_tags`` the
   retrain aimed at, its pass rate beats the incumbent's by at least ``min_improvement``
   *and* the exact McNemar test on the discordant pairs (candidate-only passes ``b`` vs
   incumbent-only passes ``c``: two-sided binomial test of ``min(b, c)`` in ``b + c`` at
   1/2) gives ``p < max_p_value``;
4. on the held-out split (examples never trained on), the candidate's pass rate is at
   least the incumbent's minus ``heldout_margin``.

Otherwise the candidate is rejected, and the reason carries the numbers.

>>> golden = [(True, False)] * 12 + [(True, True)] * 4 + [(False, False)] * 2
>>> cases = [(f"case-{i}", ("format",)) for i in range(18)]
>>> d = promotion_decision(golden, cases, [(True, True)] * 5, safety_tag="safety",
...                        min_improvement=0.02, max_p_value=0.05)
>>> d.promote, d.golden.b, d.golden.c, round(d.golden.p_value, 6)
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
    Path(__file__).resolve().parent.parent / "workers" / "golden" / "sets" / "starter.yaml"
)

_WORD = re.compile(r"\w+", re.UNICODE)
#: A drop exactly at a margin is within it (0.95 - 1.0 is -0.05000000000000004 in floats).
_EPS = 1e-9


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
class Paired:
    """Pass rates of two models on the same cases, and the exact McNemar test."""

    n: int
    candidate_pass_rate: float
    incumbent_pass_rate: float
    b: int  # candidate-only passes
    c: int  # incumbent-only passes
    p_value: float

    @classmethod
    def of(cls, pairs: Sequence[tuple[bool, bool]]) -> Paired:
        n = len(pairs)
        b = sum(1 for x, y in pairs if x and not y)
        c = sum(1 for x, y in pairs if y and not x)
        return cls(
            n=n,
            candidate_pass_rate=sum(x for x, _ in pairs) / n if n else 0.0,
            incumbent_pass_rate=sum(y for _, y in pairs) / n if n else 0.0,
            b=b,
            c=c,
            p_value=mcnemar_exact(b, c),
        )

    @property
    def gain(self) -> float:
        return self.candidate_pass_rate - self.incumbent_pass_rate

    def describe(self, what: str) -> str:
        return (
            f"{what}: candidate {self.candidate_pass_rate:.1%} vs incumbent "
            f"{self.incumbent_pass_rate:.1%} on {self.n} paired cases "
            f"(+{self.b}/-{self.c} discordant, McNemar p={self.p_value:.3g})"
        )

    def improves(self, min_improvement: float, max_p_value: float) -> bool:
        return self.n > 0 and self.gain >= min_improvement and self.p_value < max_p_value


@dataclass(frozen=True)
class PromotionDecision:
    """The verdict with every number it rests on."""

    promote: bool
    reason: str
    golden: Paired
    heldout: Paired
    targeted: Paired | None = None
    tags: dict[str, Paired] = field(default_factory=dict)
    safety_regressions: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        g, h = self.golden, self.heldout
        out = {
            "pairs": float(g.n),
            "candidate_pass_rate": round(g.candidate_pass_rate, 6),
            "incumbent_pass_rate": round(g.incumbent_pass_rate, 6),
            "improvement": round(g.gain, 6),
            "candidate_only_passes": float(g.b),
            "incumbent_only_passes": float(g.c),
            "mcnemar_p": g.p_value,
            "safety_regressions": float(len(self.safety_regressions)),
            "heldout_pairs": float(h.n),
            "heldout_improvement": round(h.gain, 6),
            "heldout_mcnemar_p": h.p_value,
        }
        if self.targeted is not None:
            out["targeted_improvement"] = round(self.targeted.gain, 6)
            out["targeted_mcnemar_p"] = self.targeted.p_value
        for tag, paired in self.tags.items():
            out[f"tag_{tag}_improvement"] = round(paired.gain, 6)
        return out


def promotion_decision(
    golden: Sequence[tuple[bool, bool]],
    golden_cases: Sequence[tuple[str, Sequence[str]]],
    heldout: Sequence[tuple[bool, bool]],
    *,
    safety_tag: str,
    min_improvement: float,
    max_p_value: float,
    target_tags: Sequence[str] = (),
    tag_margin: float = 0.1,
    heldout_margin: float = 0.05,
) -> PromotionDecision:
    """Decide from ``(candidate_passed, incumbent_passed)`` pairs (module docs); pure.

    ``golden_cases[i]`` is ``(case id, tags)`` of golden pair ``i``.
    """
    for name, value in (
        ("min_improvement", min_improvement),
        ("tag_margin", tag_margin),
        ("heldout_margin", heldout_margin),
    ):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not 0 < max_p_value <= 1:
        raise ValueError(f"max_p_value must be in (0, 1], got {max_p_value}")
    if not golden:
        raise ValueError("promotion needs at least one golden case")
    if len(golden_cases) != len(golden):
        raise ValueError("golden_cases needs one (id, tags) per golden pair")
    golden_tags = [tags for _, tags in golden_cases]
    overall, held = Paired.of(golden), Paired.of(heldout)

    def on(tags: Sequence[str]) -> Paired:
        return Paired.of(
            [p for p, t in zip(golden, golden_tags, strict=True) if set(t) & set(tags)]
        )

    by_tag = {tag: on([tag]) for tag in sorted({t for ts in golden_tags for t in ts})}
    targeted = on(target_tags) if target_tags else None
    problems = []
    safety = [
        case_id
        for (x, y), (case_id, tags) in zip(golden, golden_cases, strict=True)
        if safety_tag in tags and y and not x
    ]
    if safety:
        problems.append(f"safety regressions: {', '.join(safety)}")
    regressed = [
        f"{tag} {p.candidate_pass_rate:.0%} vs {p.incumbent_pass_rate:.0%}"
        for tag, p in by_tag.items()
        if p.gain < -tag_margin - _EPS
    ]
    if regressed:
        problems.append(f"tags regressed beyond {tag_margin:.0%}: {', '.join(regressed)}")
    better = overall.improves(min_improvement, max_p_value) or (
        targeted is not None and targeted.improves(min_improvement, max_p_value)
    )
    if not better:
        aim = f" or on {'/'.join(target_tags)}" if target_tags else ""
        problems.append(
            f"not better on the golden set{aim}: needs +{min_improvement:.1%} with "
            f"p < {max_p_value} (overall {overall.gain:+.1%}, p={overall.p_value:.3g})"
        )
    if held.n and held.gain < -heldout_margin - _EPS:
        problems.append(f"held-out regressed {held.gain:+.1%} (margin {heldout_margin:.0%})")
    reason = overall.describe("golden")
    if targeted is not None:
        reason += "; " + targeted.describe("/".join(target_tags))
    reason += "; " + (held.describe("held-out") if held.n else "held-out: none")
    return PromotionDecision(
        promote=not problems,
        reason=("rejected: " if problems else "promoted: ")
        + reason
        + "".join(f"; {p}" for p in problems),
        golden=overall,
        heldout=held,
        targeted=targeted,
        tags=by_tag,
        safety_regressions=tuple(safety),
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
    train: Sequence[Example] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Generate with both adapters on the golden cases and the held-out split, then decide.

    ``candidate``/``incumbent`` name PEFT adapters loaded on ``generator.model``;
    ``None`` is the base model alone. With ``train``, a held-out prompt that is also a
    training prompt is an error.
    """
    held = list(heldout)[: cfg.max_eval_examples]
    if train is not None:
        seen = {e.prompt for e in train}
        leaked = [e.prompt[:80] for e in held if e.prompt in seen]
        if leaked:
            raise TrainerError(
                f"{len(leaked)} held-out prompts are also in the training split (e.g. "
                f"{leaked[0]!r}): the held-out check would measure memory, not generalization"
            )
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
    decision = promotion_decision(
        [(a.passed, b.passed) for a, b in zip(cand.golden, inc.golden, strict=True)],
        [(c.id, tuple(c.tags)) for c in cases],
        list(zip(cand.heldout, inc.heldout, strict=True)),
        safety_tag=cfg.safety_tag,
        min_improvement=cfg.min_improvement,
        max_p_value=cfg.max_p_value,
        target_tags=cfg.target_tags,
        tag_margin=cfg.tag_margin,
        heldout_margin=cfg.heldout_margin,
    )
    return Comparison(cand, inc, decision)
