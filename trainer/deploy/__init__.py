"""Deploy what was promoted: make the serving model use the registry's current adapter.

Two targets, chosen by ``SENTRYML_DEPLOY_TARGET``:

- ``llama_cpp`` — the local llama.cpp server (``scripts/llm-local``): the PEFT adapter is
  converted to a GGUF LoRA with llama.cpp's own ``convert_lora_to_gguf.py`` and the server
  is restarted with it (``--lora_path``), then probed;
- ``vllm`` — a vLLM server started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``: the PEFT
  folder is loaded through ``POST /v1/load_lora_adapter`` and the previous adapter
  unloaded, without a restart;
- ``none`` — nothing is deployed (the registry and events stay as the trainer left them).

:class:`DeployService` ties a deployer to the registry: ``sync(base_model)`` serves the
current adapter (or the base model alone after a rollback past the first adapter), marks
it ``deployed`` and publishes the ``deployed`` event with the served model's identity.
``sentryml deployer`` runs it on every ``promoted`` / ``rolled_back`` event and
``sentryml adapters rollback`` runs it after rolling back.

>>> settings = DeploySettings(target="llama_cpp", llama_dir=Path("demo-out/llm_local"))  # doctest: +SKIP
>>> service = DeployService(Registry(store), make_deployer(settings), events=publisher)  # doctest: +SKIP
>>> service.sync("smollm2-135m-instruct").served_model                                # doctest: +SKIP
'smollm2-135m-instruct'
"""

from __future__ import annotations

from trainer.deploy._convert import (
    ConvertedLora,
    base_model_dir,
    convert_lora,
    default_converter_dir,
    find_converter,
    inspect_lora_gguf,
)
from trainer.deploy._llama_cpp import LlamaCppDeployer
from trainer.deploy._service import DEPLOY_ON, DeployService, EventSink, check_weights
from trainer.deploy._settings import DeploySettings, Target
from trainer.deploy._types import BASE_ONLY, Deployer, Deployment, Desired
from trainer.deploy._vllm import VLLMDeployer
from trainer.deploy.exceptions import (
    AdapterIntegrityError,
    AdapterNotApplied,
    ConversionFailed,
    ConverterUnavailable,
    DeployError,
    InvalidDeploySettings,
    ServerRestartFailed,
    ServingRequestFailed,
)

__all__ = [
    "BASE_ONLY",
    "DEPLOY_ON",
    "AdapterIntegrityError",
    "AdapterNotApplied",
    "ConversionFailed",
    "ConvertedLora",
    "ConverterUnavailable",
    "DeployError",
    "DeployService",
    "DeploySettings",
    "Deployer",
    "Deployment",
    "Desired",
    "EventSink",
    "InvalidDeploySettings",
    "LlamaCppDeployer",
    "ServerRestartFailed",
    "ServingRequestFailed",
    "Target",
    "VLLMDeployer",
    "base_model_dir",
    "check_weights",
    "convert_lora",
    "default_converter_dir",
    "find_converter",
    "inspect_lora_gguf",
    "make_deployer",
]


def make_deployer(settings: DeploySettings) -> Deployer | None:
    """The deployer of ``settings.target``, or None for ``none``."""
    if settings.target == "llama_cpp":
        return LlamaCppDeployer(settings)
    if settings.target == "vllm":
        return VLLMDeployer(settings)
    return None
