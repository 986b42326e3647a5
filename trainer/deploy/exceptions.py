"""Deployer errors: each says what failed and what the operator should do.

A failed deployment leaves the server as it was before (the deployer restores the previous
adapter when a restart or a verification fails), so after any of these the previous model
still serves; nothing is marked ``deployed``.
"""

from __future__ import annotations

from trainer.exceptions import TrainerError


class DeployError(TrainerError):
    """Base of every deployer error."""


class InvalidDeploySettings(DeployError, ValueError):
    """A ``SENTRYML_DEPLOY_*`` setting is missing or wrong; the message names it."""


class AdapterIntegrityError(DeployError):
    """The adapter's weights on disk are not the ones the registry promoted (SHA-256 differs)
    or are missing.

    The folder changed after promotion: restore it from a backup, or roll back
    (``sentryml adapters rollback``) and retrain. Nothing is deployed from it.
    """


class ConverterUnavailable(DeployError):
    """llama.cpp's ``convert_lora_to_gguf.py`` (or a package it needs) is not installed.

    ``make setup`` keeps the converter from the llama-cpp-python sdist in
    ``~/.cache/sentryml/llama-convert-<version>/``; or point
    ``SENTRYML_DEPLOY_CONVERTER_DIR`` at a llama.cpp source checkout.
    """


class ConversionFailed(DeployError):
    """llama.cpp's converter refused the PEFT adapter or wrote no LoRA GGUF; the message has
    the tail of its output (an unsupported architecture or target module, a base model
    folder without ``config.json``: set ``SENTRYML_DEPLOY_BASE_MODEL_PATH``)."""


class ServerRestartFailed(DeployError):
    """The model server did not come back serving the new adapter; the previous one was
    restored. The message has the tail of the server log."""


class AdapterNotApplied(DeployError):
    """The server restarted with the adapter but answers exactly as before it, so the
    adapter changes nothing (all-zero weights, or a server that ignored it). The previous
    model was restored; inspect the adapter (``lora_B`` tensors) before promoting it again."""


class ServingRequestFailed(DeployError):
    """The serving engine refused a request of the deployer (vLLM's LoRA endpoints, a
    probe completion); the message has its status code and answer."""
