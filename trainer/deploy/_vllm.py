"""Deploy to a vLLM server through its runtime LoRA endpoints, without a restart.

vLLM loads PEFT folders as they are (no conversion). The server must run with
``--enable-lora`` (and ``--max-lora-rank`` at least the adapters' rank) and with the
environment variable ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; without it the two routes
do not exist and answer 404. vLLM documents (docs/features/lora.md, "Dynamically serving
LoRA Adapters"):

- ``POST /v1/load_lora_adapter`` with JSON ``{"lora_name": ..., "lora_path": ...}``: 200 and
  the text ``Success: LoRA adapter '<name>' added successfully.``; an error object with 400
  (a field missing, or the name already loaded) or 404/500 (the adapter cannot be loaded);
- ``POST /v1/unload_lora_adapter`` with ``{"lora_name": ...}``: 200, or 404 when no adapter
  of that name is loaded.

Each adapter is loaded under its version as ``lora_name``; requests then name that version
as their ``model``. A deployment loads the new adapter, checks that ``/v1/models`` lists it
and that a completion through it answers, and only then unloads the adapters of the same
base model it loaded before, so the previous one keeps serving until the new one works.
Some vLLM releases accepted a load and failed only at the first request (a wrong path), and
some did not list runtime-loaded adapters: the completion is the check that counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from trainer.deploy._settings import DeploySettings
from trainer.deploy._types import Deployment, Desired
from trainer.deploy.exceptions import ServingRequestFailed

log = logging.getLogger(__name__)


class VLLMDeployer:
    """Serve an adapter by loading it into a running vLLM server at ``settings.vllm_base_url``.

    ``client`` (an ``httpx.Client``) is injectable for tests.
    """

    target = "vllm"

    def __init__(self, settings: DeploySettings, *, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.base_url = settings.vllm_base_url
        self.http = client or httpx.Client(timeout=settings.vllm_timeout_s)
        key = settings.vllm_api_key
        self.headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def deploy(self, desired: Desired, managed: Sequence[str] = ()) -> Deployment:
        """Load ``desired`` (or nothing, for the base model alone), check it answers, then
        unload the other adapters of ``managed`` that this server has loaded."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        cards = self._models()
        loaded = {str(c.get("id")): c for c in cards}
        changed = False
        path = ""
        if desired.base_only:
            served = self._base_name(cards, desired.base_model)
        else:
            if desired.adapter_dir is None:
                raise ServingRequestFailed(
                    f"adapter {desired.version} has no folder in the registry"
                )
            served = desired.version
            path = self.server_path(desired.adapter_dir)
            card = loaded.get(served)
            root = card.get("root") if card else None
            if card is not None and root and root != path:
                raise ServingRequestFailed(
                    f"vLLM at {self.base_url} already serves a LoRA named {served!r} from {root}, "
                    f"not {path}; unload it (POST /v1/unload_lora_adapter) and deploy again"
                )
            if card is None:
                clock = time.perf_counter()
                self._post("load_lora_adapter", {"lora_name": served, "lora_path": path})
                timings["load_s"] = round(time.perf_counter() - clock, 3)
                changed = True
                listed = {str(c.get("id")) for c in self._models()}
                if served not in listed:
                    log.warning(
                        "vLLM accepted LoRA %s but does not list it in /v1/models; "
                        "the probe completion decides",
                        served,
                    )
        clock = time.perf_counter()
        try:
            text = self._complete(served)
        except ServingRequestFailed:
            if changed:  # leave the engine as it was: the previous adapter still serves
                self._post("unload_lora_adapter", {"lora_name": served}, missing_ok=True)
            raise
        timings["probe_s"] = round(time.perf_counter() - clock, 3)
        retired = [v for v in managed if v in loaded and v != desired.version]
        for version in retired:
            self._post("unload_lora_adapter", {"lora_name": version}, missing_ok=True)
            changed = True
        timings["deploy_s"] = round(time.perf_counter() - started, 3)
        log.info(
            "vLLM at %s serves %s/%s as %r%s",
            self.base_url,
            desired.base_model,
            desired.version,
            served,
            f"; unloaded {', '.join(retired)}" if retired else "",
        )
        return Deployment(
            target=self.target,
            base_model=desired.base_model,
            adapter_version=desired.version,
            served_model=served,
            endpoint=self.base_url,
            artifact=path,
            artifact_sha256=desired.sha256,
            replaced=",".join(retired),
            changed=changed,
            verified=f"completion through {served!r} answered {text!r}",
            timings=timings,
        )

    def server_path(self, folder: Path) -> str:
        """The adapter folder as the vLLM host sees it (``vllm_path_map``, longest prefix)."""
        path = str(folder)
        for local in sorted(self.settings.vllm_path_map, key=len, reverse=True):
            if path == local or path.startswith(local.rstrip("/") + "/"):
                return (
                    self.settings.vllm_path_map[local].rstrip("/") + path[len(local.rstrip("/")) :]
                )
        return path

    # --- HTTP ----------------------------------------------------------------------------
    def _models(self) -> list[dict[str, Any]]:
        resp = self._request("GET", "models")
        if resp.status_code != 200:
            raise ServingRequestFailed(
                f"vLLM at {self.base_url} answered {resp.status_code} to GET /models: "
                f"{_message(resp)}"
            )
        try:
            data = resp.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServingRequestFailed(
                f"{self.base_url}/models is not an OpenAI model list: {resp.text[:200]!r}"
            ) from exc
        return [c for c in data if isinstance(c, dict)]

    @staticmethod
    def _base_name(cards: list[dict[str, Any]], base_model: str) -> str:
        bases = [str(c.get("id")) for c in cards if not c.get("parent")]
        if base_model in bases:
            return base_model
        if not bases:
            raise ServingRequestFailed("vLLM lists no base model in /v1/models")
        return bases[0]

    def _post(self, route: str, body: dict[str, str], *, missing_ok: bool = False) -> str:
        resp = self._request("POST", route, json=body)
        if resp.status_code == 200:
            return resp.text
        message = _message(resp)
        name = body.get("lora_name", "")
        if resp.status_code == 404 and message == "Not Found":
            raise ServingRequestFailed(
                f"vLLM at {self.base_url} has no /{route} endpoint: start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment and --enable-lora"
            )
        if route == "load_lora_adapter" and resp.status_code == 400 and "already" in message:
            return message  # loaded meanwhile (another deployer acting on the same event)
        if route == "unload_lora_adapter" and resp.status_code == 404 and missing_ok:
            return message
        if resp.status_code == 401:
            raise ServingRequestFailed(
                f"vLLM at {self.base_url} refused the API key: set SENTRYML_DEPLOY_VLLM_API_KEY "
                "to the server's --api-key"
            )
        raise ServingRequestFailed(
            f"vLLM at {self.base_url} answered {resp.status_code} to /{route} for {name!r}: "
            f"{message}"
        )

    def _complete(self, model: str) -> str:
        body = {
            "model": model,
            "prompt": self.settings.probe_prompt,
            "max_tokens": self.settings.probe_tokens,
            "temperature": 0.0,
        }
        resp = self._request("POST", "completions", json=body)
        try:
            if resp.status_code != 200:
                raise ValueError(f"{resp.status_code}: {_message(resp)}")
            return str(resp.json()["choices"][0]["text"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ServingRequestFailed(
                f"a completion through {model!r} at {self.base_url} failed ({exc}); the "
                "adapter may not load on this server (rank above --max-lora-rank, a path "
                "the vLLM host cannot read: see SENTRYML_DEPLOY_VLLM_PATH_MAP)"
            ) from exc

    def _request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}/{route}"
        try:
            return self.http.request(method, url, headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ServingRequestFailed(f"vLLM at {self.base_url} is unreachable: {exc}") from exc


def _message(resp: httpx.Response) -> str:
    """The message of a vLLM / FastAPI error body (``{"error": {"message"}}``, the older
    ``{"message"}``, or ``{"detail"}``), else the raw text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if key in body:
                return str(body[key])
    return resp.text[:500]
