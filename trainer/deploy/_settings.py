"""The deployer's settings: ``SENTRYML_DEPLOY_*`` environment variables.

Flat on purpose, so the same class reads ``SENTRYML_DEPLOY_TARGET`` standalone and as a
``deploy`` section of a process's root settings (``SENTRYML_`` + ``DEPLOY_`` + field).

>>> DeploySettings(target="vllm", vllm_base_url="http://gpu-1:8000/v1").vllm_base_url
'http://gpu-1:8000/v1'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where the deployer sends adapters: the local llama.cpp server, a vLLM server, or nowhere.
Target = Literal["llama_cpp", "vllm", "none"]

DEFAULT_PROBE_PROMPT = "Question: how do I reset my password?\nAnswer:"


class DeploySettings(BaseSettings):
    """Where promoted adapters are deployed, and how the deployment is checked."""

    model_config = SettingsConfigDict(env_prefix="SENTRYML_DEPLOY_", frozen=True, extra="ignore")

    target: Target = Field(
        "none",
        description="llama_cpp (restart the local llama.cpp server with a GGUF LoRA), vllm "
        "(load the PEFT folder through vLLM's runtime LoRA endpoints) or none (record only)",
    )
    # --- llama.cpp ---------------------------------------------------------------------
    llama_dir: Path = Field(
        Path(".sentryml/llm"),
        description="Folder of the llama.cpp server (scripts/llm-local --dir): its pid, log, "
        "launch arguments (server.json) and the converted GGUF LoRAs (loras/)",
    )
    llama_port: int = Field(
        8080, ge=1, le=65535, description="Port when no server has run in llama_dir yet"
    )
    llama_script: Path | None = Field(
        None,
        description="scripts/llm_local.py, which starts and stops the server. Empty: the one "
        "in the source tree this package runs from",
    )
    llama_outtype: Literal["f32", "f16", "bf16", "q8_0"] = Field(
        "f16", description="Tensor type of the converted GGUF LoRA"
    )
    converter_dir: Path | None = Field(
        None,
        description="Folder with llama.cpp's convert_lora_to_gguf.py. Empty: the copy make "
        "setup keeps in ~/.cache/sentryml/llama-convert-<llama-cpp-python version>",
    )
    base_model_path: Path | None = Field(
        None,
        description="Hugging Face folder of the base model (config.json) for the converter. "
        "Empty: the adapter's base_model_name_or_path, else the converted demo model",
    )
    convert_timeout_s: float = Field(900.0, gt=0, description="Limit of one conversion")
    restart_timeout_s: float = Field(
        180.0, gt=0, description="How long a restarted server may take to answer /v1/models"
    )
    # --- vLLM --------------------------------------------------------------------------
    vllm_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="vLLM's OpenAI-compatible base URL; the server runs with --enable-lora and "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
    )
    vllm_api_key: SecretStr | None = Field(
        None, description="vLLM's --api-key (sent as a Bearer token)"
    )
    vllm_path_map: dict[str, str] = Field(
        default_factory=dict,
        description="Adapter path prefixes as the vLLM host sees them, e.g. "
        '{"/data/adapters": "/mnt/adapters"}; paths are sent unchanged otherwise',
    )
    vllm_timeout_s: float = Field(
        300.0, gt=0, description="Limit of one vLLM request (a load reads the adapter)"
    )
    # --- verification ------------------------------------------------------------------
    probe_prompt: str = Field(
        DEFAULT_PROBE_PROMPT,
        description="Prompt of the greedy probe completion sent before and after a deployment",
    )
    probe_tokens: int = Field(8, ge=1, le=256, description="Tokens of the probe completion")
    # --- the deployer process (`sentryml deployer`) ------------------------------------
    consumer_group: str = Field("sentryml-deployer", description="Kafka group of the deployers")
    poll_timeout_s: float = Field(1.0, gt=0, le=60, description="Consumer poll timeout")

    @field_validator("vllm_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("vllm_base_url must start with http:// or https://")
        return value.rstrip("/")
