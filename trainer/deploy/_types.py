"""What a deployer is asked to serve, what it reports back, and the contract it follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: ``adapter_version`` of "the base model alone" (as in the registry and the events).
BASE_ONLY = "none"


@dataclass(frozen=True)
class Desired:
    """The model one base model should serve: an adapter of the registry, or the base alone.

    ``sha256`` is the registry's digest of the PEFT weights (``weights_sha256``); the
    deployer refuses a folder whose weights no longer match it.
    """

    base_model: str
    version: str = BASE_ONLY
    adapter_dir: Path | None = None
    sha256: str = ""
    parent_version: str = BASE_ONLY
    job_id: str = ""

    @property
    def base_only(self) -> bool:
        return self.version == BASE_ONLY


@dataclass(frozen=True)
class Deployment:
    """What serves after a deployment, as clients see it.

    ``served_model`` is the ``model`` a request names to get it (llama.cpp: the server's
    alias; vLLM: the LoRA's name, or the base model's); ``artifact`` / ``artifact_sha256``
    are the file the server loaded (llama.cpp: the converted GGUF LoRA; vLLM: the PEFT
    folder and its weights' digest). ``changed`` is False when it was serving already.
    """

    target: str
    base_model: str
    adapter_version: str
    served_model: str
    endpoint: str
    artifact: str = ""
    artifact_sha256: str = ""
    replaced: str = ""
    changed: bool = True
    verified: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class Deployer(Protocol):
    """Puts one :class:`Desired` model into service and reports the :class:`Deployment`.

    Idempotent: asked for what already serves, it returns ``changed=False`` without a
    restart or a reload. On failure it raises a :class:`~trainer.deploy.DeployError` and
    leaves the previous model serving. ``managed`` names every adapter version of this
    base model the registry knows, so a deployer may retire the ones it loaded before
    without touching adapters that others serve from the same engine.
    """

    target: str

    def deploy(self, desired: Desired, managed: Sequence[str] = ()) -> Deployment: ...
