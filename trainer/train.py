"""Train one adapter: LoRA, QLoRA (NF4 4-bit base, LoRA adapters on top) or DPO.

All three train PEFT LoRA adapters; they differ in the base weights and the objective:

- ``lora`` — base in float32 (CPU) or bfloat16 (CUDA), SFT with TRL's ``SFTTrainer`` on
  prompt/completion pairs, loss on the completion only;
- ``qlora`` — base loaded through bitsandbytes as NF4 4-bit (``Linear4bit``, double
  quantization), prepared with ``prepare_model_for_kbit_training``, adapters in the
  compute dtype (bfloat16 on CUDA; float32 on CPU, where bfloat16 matmuls are emulated
  and several times slower), same SFT objective;
- ``dpo`` — LoRA on the plain base, trained with TRL's ``DPOTrainer`` on chosen/rejected
  pairs; the reference model is the base with the adapter switched off.

Progress and loss are logged every ``logging_steps``; with ``mlflow: true`` and MLflow
installed, transformers' MLflow callback tracks the run. The adapter is saved to a
temporary folder and renamed into place, so a crash never leaves half-written weights.

>>> result = train_adapter(cfg, dataset, Path("adapters/m/ft-1"), method="lora")  # doctest: +SKIP
>>> result.trainable_share                                                      # doctest: +SKIP
0.0017
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import TrainConfig, build_lora_config
from trainer.exceptions import QuantizationUnavailable, TrainerError

if TYPE_CHECKING:
    from trainer.dataset import BuiltDataset

log = logging.getLogger(__name__)


def resolve_device(cfg: TrainConfig) -> str:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``."""
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def base_model_path(cfg: TrainConfig) -> Path:
    """The base model folder: ``base_model_path`` or the converted demo model."""
    if cfg.base_model_path:
        path = Path(cfg.base_model_path).expanduser()
        if not (path / "config.json").exists():
            raise TrainerError(
                f"base_model_path {path} is not a Hugging Face model folder (no config.json)"
            )
        return path
    from trainer.demo_model import ensure_demo_model

    return ensure_demo_model()


def _dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        cuda_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, name)


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(cfg: TrainConfig, path: Path, *, quantize_4bit: bool, device: str) -> Any:
    """The base causal LM, plain or NF4 4-bit (QLoRA)."""
    from transformers import AutoModelForCausalLM

    if not quantize_4bit:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype("auto", device))
        return model.to(device)  # type: ignore[arg-type]
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise QuantizationUnavailable(f"QLoRA needs bitsandbytes: {exc}") from exc
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.bnb_double_quant,
        bnb_4bit_compute_dtype=_dtype(cfg.bnb_compute_dtype, device),
        bnb_4bit_quant_storage=_dtype("auto", device),
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quant, device_map={"": device}, dtype=_dtype("auto", device)
        )
    except (RuntimeError, ValueError, ImportError) as exc:
        raise QuantizationUnavailable(
            f"bitsandbytes could not load {path} in 4-bit on {device}: {exc}"
        ) from exc
    return model


def linear4bit_count(model: Any) -> int:
    """How many layers of ``model`` are bitsandbytes ``Linear4bit`` (QLoRA check)."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def parameter_counts(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` parameters of a PEFT model (4-bit weights at full count)."""
    trainable, total = model.get_nb_trainable_parameters()
    return int(trainable), int(total)


@dataclass
class TrainResult:
    """What one training run produced and measured."""

    adapter_dir: Path
    method: str
    device: str
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    base_memory_bytes: int = 0
    model: Any = None
    tokenizer: Any = None

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        out = {
            "train_steps": float(self.steps),
            "train_seconds": round(self.seconds, 3),
            "train_steps_per_s": round(self.steps_per_second, 4),
            "trainable_params": float(self.trainable_params),
            "trainable_share": round(self.trainable_share, 6),
            "base_memory_mb": round(self.base_memory_bytes / 2**20, 2),
        }
        if self.losses:
            out["loss_first"] = round(self.losses[0], 5)
            out["loss_last"] = round(self.losses[-1], 5)
        return out


def _report_to(cfg: TrainConfig) -> list[str]:
    if not cfg.mlflow:
        return []
    if importlib.util.find_spec("mlflow") is None:
        log.warning("mlflow: true but MLflow is not installed; the run is not tracked")
        return []
    return ["mlflow"]


def _loss_callback(losses: list[float], on_step: Callable[[int, int, float], None] | None) -> Any:
    from transformers import TrainerCallback

    class LossLogger(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                loss = float(logs["loss"])
                losses.append(loss)
                log.info(
                    "train step %d/%d loss %.4f lr %.2e",
                    state.global_step,
                    state.max_steps,
                    loss,
                    float(logs.get("learning_rate", 0.0)),
                )
                if on_step is not None:
                    on_step(state.global_step, state.max_steps, loss)

    return LossLogger()


def train_adapter(
    cfg: TrainConfig,
    dataset: BuiltDataset,
    out_dir: Path,
    *,
    method: str,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train an adapter on ``dataset.train`` and save it to ``out_dir`` (replaced whole).

    Returns the result with the trained model still in memory (``result.model``, a PEFT
    model) so the job can evaluate it without loading the base again.
    """
    import torch
    from peft import prepare_model_for_kbit_training

    if method not in ("lora", "qlora", "dpo"):
        raise ValueError(f"method must be lora, qlora or dpo, got {method!r}")
    _quiet_progress_bars()
    device = resolve_device(cfg)
    path = base_model_path(cfg)
    tokenizer = load_tokenizer(path)
    torch.manual_seed(cfg.seed)
    model = load_base_model(cfg, path, quantize_4bit=method == "qlora", device=device)
    base_memory = int(model.get_memory_footprint())
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    train_ds = dataset.hf_train()
    losses: list[float] = []
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=_ensure(out_dir.parent)))
    common: dict[str, Any] = {
        "output_dir": str(work / "run"),
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "warmup_steps": cfg.warmup_ratio,  # < 1: a share of max_steps
        "logging_steps": cfg.logging_steps,
        "save_strategy": "no",
        "report_to": _report_to(cfg),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "use_cpu": device == "cpu",
        # bf16 autocast on a CPU without native bf16 is emulated: many times slower.
        "bf16": device == "cuda" and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "max_length": cfg.max_seq_length,
        "dataloader_num_workers": 0,
    }
    callback = _loss_callback(losses, on_step)
    started = time.perf_counter()
    trainer: Any
    try:
        if method == "dpo":
            from trl import DPOConfig, DPOTrainer

            trainer = DPOTrainer(
                model=model,
                args=DPOConfig(**common, beta=cfg.dpo_beta),
                train_dataset=train_ds,
                processing_class=tokenizer,
                peft_config=build_lora_config(cfg),
                callbacks=[callback],
            )
        else:
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(**common, completion_only_loss=True),
                train_dataset=train_ds,
                processing_class=tokenizer,
                peft_config=build_lora_config(cfg),
                callbacks=[callback],
            )
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # our callback logs; no raw dicts on stdout
        trainable, total = parameter_counts(trainer.model)
        log.info(
            "%s on %s: trainable params %d of %d (%.3f%%), %d train examples, %d steps",
            method,
            device,
            trainable,
            total,
            100 * trainable / max(total, 1),
            len(train_ds),
            cfg.max_steps,
        )
        trainer.train()
        seconds = time.perf_counter() - started
        staged = work / "adapter"
        trainer.model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peft_model = trainer.model
    peft_model.eval()
    return TrainResult(
        adapter_dir=out_dir,
        method=method,
        device=device,
        steps=int(trainer.state.global_step),
        seconds=seconds,
        losses=losses,
        trainable_params=trainable,
        total_params=total,
        base_memory_bytes=base_memory,
        model=peft_model,
        tokenizer=tokenizer,
    )


def _quiet_progress_bars() -> None:
    """The job logs its own progress; per-map and per-load bars only clutter worker logs."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
