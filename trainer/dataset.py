"""Build the training set of one job from what production and reviewers stored.

Sources, per request (the newest feedback of a request wins, field by field):

- ``correction`` — a reviewer's corrected completion: an SFT example (prompt → correction),
- ``preference`` — a chosen/rejected pair: a DPO pair, and (chosen) an SFT example,
- ``good_label`` — feedback ``label = 'good'``: the logged completion as an SFT example,
- ``judge_good`` — completions the LLM judge scored at least ``judge_good_min_score`` on
  format and factual consistency without a refusal, that no reviewer marked bad, and that
  were not flagged as addressing the judge (a fooled judge must not pick training data).

Prompts come from the feedback when the app sent one, else from ``inference_logs``
(joined on request_id). Everything is PII-redacted again with
:class:`workers.redact.Redactor` (logs are stored redacted already; corrections and
prompts in feedback may not be), deduplicated by content, rendered with the model's
chat template, and put in request_id order (training is reproducible whatever order the
feedback arrived in). A seeded hash of the request_id puts 10–15% of requests in the held-out
split, so an example stays on its side of the split across retrains. A build with fewer
examples than the task goal's minimum raises :class:`DatasetTooSmall`.

>>> ds = build_dataset(store, "smollm2-135m-instruct", cfg, tokenizer, goal="style",
...                    method="lora", now=now)                       # doctest: +SKIP
>>> len(ds.train), len(ds.heldout), ds.dataset_hash[:12]          # doctest: +SKIP
(176, 24, '4be1c0a9d2f3')
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from trainer.config import TrainConfig
from trainer.exceptions import DatasetTooSmall

if TYPE_CHECKING:
    from datasets import Dataset

    from workers.baseline import TrainingRecord
    from workers.redact import Redactor
    from workers.store import Store

log = logging.getLogger(__name__)

_FEEDBACK_SQL = """
SELECT request_id,
       argMax(label, ts) AS label, argMax(correction, ts) AS correction,
       argMax(chosen, ts) AS chosen, argMax(rejected, ts) AS rejected,
       argMax(prompt, ts) AS prompt, max(ts) AS last_ts
FROM feedback FINAL
WHERE base_model = {m:String} AND ts >= {since:DateTime64(3, 'UTC')}
  AND ts <= {now:DateTime64(3, 'UTC')}
GROUP BY request_id
"""

_JUDGE_GOOD_SQL = """
SELECT request_id, max(ts) AS last_ts
FROM judge_scores FINAL
WHERE base_model = {m:String} AND ok = 1 AND ts >= {since:DateTime64(3, 'UTC')}
  AND ts <= {now:DateTime64(3, 'UTC')}
GROUP BY request_id
HAVING countIf(dimension IN ('format', 'factual')) > 0
   AND countIf(dimension IN ('format', 'factual') AND score < {min_score:UInt8}) = 0
   AND countIf(dimension = 'refusal' AND score = 1) = 0
   AND countIf(injection_flag = 1) = 0
"""

_LOGS_SQL = """
SELECT request_id, argMax(prompt, ingested_at) AS prompt,
       argMax(completion, ingested_at) AS completion, max(ts) AS ts
FROM inference_logs
WHERE base_model = {m:String} AND request_id IN {ids:Array(String)}
GROUP BY request_id
"""

SOURCES = ("correction", "preference", "good_label", "judge_good")


@dataclass(frozen=True)
class Example:
    """One training example, redacted, with its chat-template rendering."""

    request_id: str
    source: str
    prompt: str
    target: str
    rejected: str | None
    prompt_text: str
    completion_text: str
    rejected_text: str | None
    holdout: bool

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None


@dataclass(frozen=True)
class BuiltDataset:
    """The examples of one job, split, with the hash that identifies them."""

    examples: tuple[Example, ...]
    method: str
    dataset_hash: str
    counts: dict[str, int]

    def _usable(self) -> list[Example]:
        return (
            [e for e in self.examples if e.is_pair] if self.method == "dpo" else list(self.examples)
        )

    @property
    def train(self) -> list[Example]:
        return [e for e in self._usable() if not e.holdout]

    @property
    def heldout(self) -> list[Example]:
        return [e for e in self._usable() if e.holdout]

    def hf_train(self) -> Dataset:
        """The train split in TRL's standard (already templated) format: prompt/completion
        for SFT, prompt/chosen/rejected for DPO."""
        from datasets import Dataset

        if self.method == "dpo":
            rows: list[dict[str, Any]] = [
                {"prompt": e.prompt_text, "chosen": e.completion_text, "rejected": e.rejected_text}
                for e in self.train
            ]
        else:
            rows = [{"prompt": e.prompt_text, "completion": e.completion_text} for e in self.train]
        return Dataset.from_list(rows)

    def training_records(self) -> list[TrainingRecord]:
        """The train split as baseline records (prompt, target completion)."""
        from workers.baseline import TrainingRecord

        return [TrainingRecord(prompt=e.prompt, completion=e.target) for e in self.train]


def in_holdout(request_id: str, fraction: float, seed: int) -> bool:
    """Seeded, stable split by request_id: the same request is always on the same side.

    >>> sum(in_holdout(f"r{i}", 0.12, 42) for i in range(10_000))
    1179
    """
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def render(tokenizer: Any, prompt: str, target: str, system: str | None) -> tuple[str, str]:
    """``(prompt_text, completion_text)`` through the chat template: the prompt ends with
    the assistant header, the completion with the end-of-turn token."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    prompt_text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": target}], tokenize=False
    )
    eos = tokenizer.eos_token or ""
    # Templates that rewrite earlier turns do not extend the prompt: then target + end of turn.
    completion = full[len(prompt_text) :].rstrip() if full.startswith(prompt_text) else target
    if eos and not completion.endswith(eos):
        completion += eos
    return prompt_text, completion


def collect_examples(
    store: Store,
    base_model: str,
    cfg: TrainConfig,
    tokenizer: Any | None,
    *,
    now: datetime,
    redactor: Redactor | None = None,
) -> tuple[list[Example], Counter[str]]:
    """Read, redact, deduplicate and render the examples of the lookback period, newest
    first, with the held-out flag; and why the others were not taken (a count per reason:
    ``no_prompt``, ``labelled_bad``, ``judged_but_labelled``, ``duplicate``, ``empty``,
    ``chosen_is_rejected``, ``over_max_examples``). Without ``tokenizer`` the texts are
    the plain prompt and target (what an export writes)."""
    from workers.redact import Redactor

    redactor = redactor or Redactor()
    since = now - timedelta(days=cfg.lookback_days)
    params = {"m": base_model, "since": since, "now": now}
    feedback = store.query(_FEEDBACK_SQL, params).dicts()
    judged: list[dict[str, Any]] = []
    if cfg.judge_good_min_score is not None:
        judged = store.query(
            _JUDGE_GOOD_SQL, {**params, "min_score": cfg.judge_good_min_score}
        ).dicts()
    ids = sorted({r["request_id"] for r in feedback} | {r["request_id"] for r in judged})
    logs = _logs(store, base_model, ids)

    raw: list[tuple[datetime, str, str, str, str, str | None]] = []
    bad = set()
    dropped: Counter[str] = Counter()
    for fb in feedback:
        rid = fb["request_id"]
        log_row = logs.get(rid, {})
        prompt = fb["prompt"] or log_row.get("prompt")
        if not prompt:
            dropped["no_prompt"] += 1  # nothing to train on without the question
            continue
        if fb["correction"]:
            raw.append((fb["last_ts"], rid, "correction", prompt, fb["correction"], None))
        elif fb["chosen"] and fb["rejected"]:
            raw.append((fb["last_ts"], rid, "preference", prompt, fb["chosen"], fb["rejected"]))
        elif fb["label"] == "good" and log_row.get("completion"):
            raw.append((fb["last_ts"], rid, "good_label", prompt, log_row["completion"], None))
        elif fb["label"] == "bad":
            bad.add(rid)
            dropped["labelled_bad"] += 1
        if fb["correction"] and fb["chosen"] and fb["rejected"]:
            # A correction and a preference on one request: keep the pair for DPO too.
            raw.append((fb["last_ts"], rid, "preference", prompt, fb["chosen"], fb["rejected"]))
    labelled = {r[1] for r in raw}
    for row in judged:
        rid = row["request_id"]
        judged_log = logs.get(rid)
        if rid in labelled or rid in bad or not judged_log or not judged_log.get("completion"):
            dropped["judged_but_labelled" if rid in labelled or rid in bad else "no_prompt"] += 1
            continue
        raw.append(
            (
                row["last_ts"],
                rid,
                "judge_good",
                judged_log["prompt"],
                judged_log["completion"],
                None,
            )
        )

    raw.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)  # newest first, then capped
    examples: list[Example] = []
    seen: set[tuple[str, ...]] = set()
    for _ts, rid, source, prompt, target, rejected in raw:
        prompt, target = redactor.redact(prompt).strip(), redactor.redact(target).strip()
        rejected = redactor.redact(rejected).strip() if rejected is not None else None
        key = (prompt, target, rejected or "")
        if len(examples) >= cfg.max_examples:
            dropped["over_max_examples"] += 1
            continue
        if not prompt or not target or key in seen or target == rejected:
            reason = "empty" if not prompt or not target else "duplicate"
            dropped["chosen_is_rejected" if target == rejected else reason] += 1
            continue
        seen.add(key)
        if tokenizer is None:
            prompt_text, completion_text, rejected_text = prompt, target, rejected
        else:
            prompt_text, completion_text = render(tokenizer, prompt, target, cfg.system_prompt)
            rejected_text = (
                render(tokenizer, prompt, rejected, cfg.system_prompt)[1] if rejected else None
            )
        examples.append(
            Example(
                request_id=rid,
                source=source,
                prompt=prompt,
                target=target,
                rejected=rejected,
                prompt_text=prompt_text,
                completion_text=completion_text,
                rejected_text=rejected_text,
                holdout=in_holdout(rid, cfg.holdout_fraction, cfg.seed),
            )
        )
    # Newest first decided which duplicate and which examples past the cap are kept; the
    # order trained on must not depend on arrival times (one burst of feedback shares
    # milliseconds, so ties fall differently from run to run): the seeded shuffle then
    # draws the same batches for the same examples.
    examples.sort(key=lambda e: (e.request_id, e.source))
    return examples, dropped


def build_dataset(
    store: Store,
    base_model: str,
    cfg: TrainConfig,
    tokenizer: Any,
    *,
    goal: str,
    method: str,
    now: datetime,
    redactor: Redactor | None = None,
) -> BuiltDataset:
    """Read, redact, deduplicate, render and split; refuse below the goal's minimum."""
    examples, _ = collect_examples(store, base_model, cfg, tokenizer, now=now, redactor=redactor)
    usable = [e for e in examples if e.is_pair] if method == "dpo" else examples
    need = cfg.min_examples[goal]
    what = "preference pairs" if method == "dpo" else "labelled examples"
    if len(usable) < need:
        by_source = Counter(e.source for e in examples)
        raise DatasetTooSmall(
            f"{len(usable)} {what} for {base_model} in the last {cfg.lookback_days} days "
            f"({dict(by_source) or 'none'}), need {need} for task goal {goal!r}: collect more "
            f"feedback, or lower min_examples.{goal} in the training config",
            have=len(usable),
            need=need,
        )
    train = [e for e in usable if not e.holdout]
    heldout = [e for e in usable if e.holdout]
    if not train or not heldout:
        raise DatasetTooSmall(
            f"{len(usable)} {what} give {len(train)} train and {len(heldout)} held-out "
            "examples; both splits need at least one",
            have=len(usable),
            need=need,
        )
    counts = {
        "examples": len(usable),
        "train": len(train),
        "heldout": len(heldout),
        **{f"source_{s}": sum(e.source == s for e in usable) for s in SOURCES},
    }
    built = BuiltDataset(tuple(examples), method, dataset_hash(usable), counts)
    log.info(
        "dataset for %s (%s): %s, hash %s", base_model, method, counts, built.dataset_hash[:12]
    )
    return built


def dataset_hash(examples: Sequence[Example]) -> str:
    """SHA-256 of the exact texts trained and held out, in a canonical order."""
    canon = sorted(
        json.dumps(
            [e.request_id, e.holdout, e.prompt_text, e.completion_text, e.rejected_text],
            ensure_ascii=False,
        )
        for e in examples
    )
    return hashlib.sha256("\n".join(canon).encode()).hexdigest()


def _logs(store: Store, base_model: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 5_000):  # bounded IN lists
        chunk = list(ids[start : start + 5_000])
        for row in store.query(_LOGS_SQL, {"m": base_model, "ids": chunk}).dicts():
            out[row["request_id"]] = row
    return out
