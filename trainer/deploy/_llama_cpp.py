"""Deploy to the local llama.cpp server (``scripts/llm-local``): GGUF LoRA + restart.

llama-cpp-python's server applies a LoRA only at load time (``--lora_path``), so a new
adapter means: convert the PEFT folder to a GGUF LoRA (cached per weights digest), restart
the server in its folder with the same port, threads and context and the new adapter
(``llm_local.py restart``, the one place that knows how to launch it), wait until it
answers ``/v1/models``, and check that the adapter is applied: the greedy probe completion
(text and token log-probabilities, which any change of the weights moves) must differ from
the base model's, recorded whenever the base model serves alone (``base_probe.json``;
before one is recorded, from the model it replaces). A restart that fails, or an adapter
that changes nothing, restores the previous adapter.

Deployments in one server folder are serialized with a file lock (the deployer process and
``sentryml adapters rollback`` may both act on one event); what was deployed last is kept
in ``deployed.json`` beside the server's ``server.json``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from trainer.deploy._convert import (
    ConvertedLora,
    base_model_dir,
    convert_lora,
    gguf_architecture,
    inspect_lora_gguf,
)
from trainer.deploy._settings import DeploySettings
from trainer.deploy._types import Deployment, Desired
from trainer.deploy.exceptions import (
    AdapterNotApplied,
    ConversionFailed,
    InvalidDeploySettings,
    ServerRestartFailed,
    ServingRequestFailed,
)

log = logging.getLogger(__name__)

STATE_FILE = "deployed.json"
#: The base model's probe (text and log-probabilities), recorded whenever it serves alone.
BASE_PROBE_FILE = "base_probe.json"


def default_script() -> Path:
    """``scripts/llm_local.py`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "scripts" / "llm_local.py"


class LlamaCppDeployer:
    """Serve an adapter by restarting the llama.cpp server in ``settings.llama_dir``.

    ``client`` (an ``httpx.Client``) is injectable for tests; the probe and the health
    checks use it.
    """

    target = "llama_cpp"

    def __init__(self, settings: DeploySettings, *, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.dir = settings.llama_dir.expanduser().resolve()
        self.script = (settings.llama_script or default_script()).expanduser()
        if not self.script.is_file():
            raise InvalidDeploySettings(
                f"the llama.cpp server script {self.script} does not exist: set "
                "SENTRYML_DEPLOY_LLAMA_SCRIPT to scripts/llm_local.py of a SentryML checkout"
            )
        self.http = client or httpx.Client(timeout=60.0)

    # --- the contract --------------------------------------------------------------------
    def deploy(self, desired: Desired, managed: Sequence[str] = ()) -> Deployment:
        """Serve ``desired`` (``managed`` is unused: one server serves one adapter)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / "deploy.lock"):
            return self._deploy(desired)

    def served(self) -> dict[str, Any]:
        """What this folder's deployer deployed last (``deployed.json``), or ``{}``."""
        return _read_json(self.dir / STATE_FILE)

    # --- steps ---------------------------------------------------------------------------
    def _deploy(self, desired: Desired) -> Deployment:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        lora = None if desired.base_only else self._convert(desired)
        if lora is not None:
            timings["convert_s"] = 0.0 if lora.reused else lora.seconds
        wanted = str(lora.path) if lora else None
        spec = _read_json(self.dir / "server.json")
        state = self.served()
        base_url = self._base_url()
        up = base_url is not None and self._models(base_url) is not None
        artifact_sha = lora.sha256 if lora else ""
        if (
            up
            and base_url is not None
            and spec.get("lora") == wanted
            and state.get("version") == desired.version
            and state.get("artifact_sha256") == artifact_sha
        ):
            return self._deployment(desired, base_url, lora, state, changed=False, timings={})
        previous = spec.get("lora") if up else None
        before = self._probe_before(base_url) if up and base_url else None
        if before is not None and previous is None:
            self._save_base_probe(before)
        clock = time.perf_counter()
        try:
            self._restart(wanted)
        except ServerRestartFailed:
            if up:
                self._restore(previous)
            raise
        timings["restart_s"] = round(time.perf_counter() - clock, 3)
        base_url = self._base_url()
        if base_url is None:
            raise ServerRestartFailed(f"the server in {self.dir} wrote no base_url after start")
        try:
            verified = self._verify(wanted, previous, before, self._probe(base_url))
        except (AdapterNotApplied, ServingRequestFailed):
            self._restore(previous)
            raise
        timings["deploy_s"] = round(time.perf_counter() - started, 3)
        deployment = self._deployment(
            desired, base_url, lora, state, changed=True, timings=timings, verified=verified
        )
        (self.dir / STATE_FILE).write_text(
            json.dumps(
                {
                    "base_model": desired.base_model,
                    "version": desired.version,
                    "source_sha256": desired.sha256,
                    "artifact": deployment.artifact,
                    "artifact_sha256": deployment.artifact_sha256,
                    "served_model": deployment.served_model,
                    "endpoint": deployment.endpoint,
                    "deployed_at": datetime.now(UTC).isoformat(),
                },
                indent=2,
            )
            + "\n"
        )
        log.info(
            "llama.cpp in %s now serves %s/%s (%s) in %.1fs: %s",
            self.dir,
            desired.base_model,
            desired.version,
            deployment.served_model,
            timings["deploy_s"],
            verified,
        )
        return deployment

    def _verify(
        self,
        wanted: str | None,
        previous: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any],
    ) -> str:
        """How the new model was seen to serve; raise :class:`AdapterNotApplied` when an
        adapter answers the probe exactly as the base model does (or, with no base probe
        recorded yet, exactly as the adapter it replaced)."""
        if wanted is None:
            self._save_base_probe(after)
            return f"serving the base model alone; probe {after['text']!r}"
        base = self._base_probe()
        if base is not None:
            if after == base:
                raise AdapterNotApplied(
                    f"with {wanted} the server answers the probe exactly as the base model "
                    f"does ({after['text']!r}): the adapter changes nothing; the previous "
                    f"adapter ({previous or 'none'}) was restored"
                )
            return f"probe differs from the base model's: {base['text']!r} -> {after['text']!r}"
        if before is not None and previous != wanted:
            if after == before:
                raise AdapterNotApplied(
                    f"with {wanted} the server answers the probe exactly as it did with "
                    f"{previous} ({after['text']!r}); the previous adapter was restored"
                )
            return f"probe changed: {before['text']!r} -> {after['text']!r}"
        return "server started with the adapter (a failed load stops it) and answered the probe"

    def _base_probe_key(self) -> dict[str, Any]:
        """What the base model's probe depends on: the model file and how it runs."""
        spec = _read_json(self.dir / "server.json")
        return {
            "model": spec.get("model"),
            "threads": spec.get("threads"),
            "ctx": spec.get("ctx"),
            "prompt": self.settings.probe_prompt,
            "tokens": self.settings.probe_tokens,
        }

    def _save_base_probe(self, probe: dict[str, Any]) -> None:
        record = {"key": self._base_probe_key(), "probe": probe}
        (self.dir / BASE_PROBE_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _base_probe(self) -> dict[str, Any] | None:
        record = _read_json(self.dir / BASE_PROBE_FILE)
        if record.get("key") != self._base_probe_key():
            return None
        probe = record.get("probe")
        return probe if isinstance(probe, dict) else None

    def _deployment(
        self,
        desired: Desired,
        base_url: str,
        lora: ConvertedLora | None,
        state: dict[str, Any],
        *,
        changed: bool,
        timings: dict[str, float],
        verified: str = "already serving",
    ) -> Deployment:
        models = self._models(base_url) or []
        return Deployment(
            target=self.target,
            base_model=desired.base_model,
            adapter_version=desired.version,
            served_model=models[0] if models else "",
            endpoint=base_url,
            artifact=str(lora.path) if lora else "",
            artifact_sha256=lora.sha256 if lora else "",
            replaced=str(state.get("version", "")) if changed else "",
            changed=changed,
            verified=verified,
            timings=timings,
        )

    def _convert(self, desired: Desired) -> ConvertedLora:
        if desired.adapter_dir is None:
            raise ConversionFailed(f"adapter {desired.version} has no folder in the registry")
        safe = desired.base_model.replace("/", "_")
        out = self.dir / "loras" / safe / f"{desired.version}.gguf"
        lora = convert_lora(
            desired.adapter_dir,
            out,
            base_dir=base_model_dir(desired.adapter_dir, self.settings.base_model_path),
            source_sha256=desired.sha256,
            converter_dir=self.settings.converter_dir,
            outtype=self.settings.llama_outtype,
            timeout_s=self.settings.convert_timeout_s,
        )
        info = inspect_lora_gguf(lora.path)
        model = _read_json(self.dir / "server.json").get("model")
        served_arch = gguf_architecture(Path(model)) if model and Path(model).is_file() else None
        if served_arch and info["architecture"] != served_arch:
            raise ConversionFailed(
                f"adapter {desired.version} is a LoRA for {info['architecture']!r} but the server "
                f"in {self.dir} serves a {served_arch!r} model ({model}); deploy it to a "
                "server of its base model"
            )
        return lora

    def _restart(self, lora: str | None) -> None:
        cmd = [sys.executable, str(self.script), "restart", "--dir", str(self.dir),
               "--timeout", str(self.settings.restart_timeout_s)]  # fmt: skip
        if not (self.dir / "server.json").exists():
            cmd += ["--port", str(self.settings.llama_port)]
        cmd += ["--lora", lora] if lora else ["--no-lora"]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=self.settings.restart_timeout_s + 30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerRestartFailed(
                f"restarting the llama.cpp server in {self.dir} took more than "
                f"{self.settings.restart_timeout_s:.0f}s"
            ) from exc
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise ServerRestartFailed(
                f"the llama.cpp server in {self.dir} did not start with "
                f"{lora or 'no adapter'} (exit {proc.returncode}); see {self.dir / 'server.log'}:"
                f"\n{tail}"
            )

    def _restore(self, lora: str | None) -> None:
        log.warning("restoring the llama.cpp server in %s to %s", self.dir, lora or "no adapter")
        try:
            self._restart(lora)
        except ServerRestartFailed as exc:
            log.error("could not restore the previous adapter: %s", exc)

    # --- HTTP ----------------------------------------------------------------------------
    def _base_url(self) -> str | None:
        try:
            return (self.dir / "base_url").read_text().strip() or None
        except OSError:
            return None

    def _models(self, base_url: str) -> list[str] | None:
        """The model ids the server lists, or None when it does not answer."""
        try:
            resp = self.http.get(f"{base_url}/models", timeout=5.0)
            resp.raise_for_status()
            return [str(m["id"]) for m in resp.json()["data"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _probe(self, base_url: str) -> dict[str, Any]:
        """A greedy completion of the probe prompt: its text and token log-probabilities,
        which any change of the weights moves even when the text stays the same."""
        models = self._models(base_url) or [""]
        body = {
            "model": models[0],
            "prompt": self.settings.probe_prompt,
            "max_tokens": self.settings.probe_tokens,
            "temperature": 0.0,
            "logprobs": 1,
            "seed": 0,
        }
        try:
            resp = self.http.post(f"{base_url}/completions", json=body, timeout=120.0)
            resp.raise_for_status()
            choice = resp.json()["choices"][0]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            raise ServingRequestFailed(
                f"the llama.cpp server at {base_url} did not answer the probe completion: {exc}"
            ) from exc
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        return {"text": choice.get("text", ""), "logprobs": [float(x) for x in logprobs]}

    def _probe_before(self, base_url: str) -> dict[str, Any] | None:
        """The probe of the model serving now; None (nothing to compare with) when it fails,
        so a sick server can still be replaced."""
        try:
            return self._probe(base_url)
        except ServingRequestFailed as exc:
            log.warning("no probe of the model serving before the deployment: %s", exc)
            return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
