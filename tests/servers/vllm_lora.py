"""A stand-in for vLLM's runtime-LoRA routes, on 127.0.0.1 (stdlib ``http.server``).

A real vLLM server needs a GPU (or a CPU build this machine does not have), so the vLLM
deployer is tested against this one. It enforces the request shape vLLM documents
(docs/features/lora.md, "Dynamically serving LoRA Adapters") and answers as vLLM's
``OpenAIServingModels`` does:

- routes exist only when ``runtime_updating`` is on (vLLM registers them only with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); otherwise FastAPI's 404 ``{"detail": "Not Found"}``;
- ``POST /v1/load_lora_adapter`` needs ``Content-Type: application/json`` and a JSON body
  with non-empty ``lora_name`` and ``lora_path`` (400 otherwise); a name already loaded is
  400; a path without ``adapter_config.json`` is 404 (vLLM's ``LoRAAdapterNotFoundError``);
  success is 200 with the text ``Success: LoRA adapter '<name>' added successfully.``;
- ``POST /v1/unload_lora_adapter`` needs ``lora_name``; an unknown name is 404; success 200;
- ``GET /v1/models`` lists the base model (``parent: null``) and every loaded LoRA
  (``root`` = its path, ``parent`` = the base);
- ``POST /v1/completions`` answers for a listed ``model`` only (404 otherwise);
- with ``api_key`` set, every ``/v1`` route needs ``Authorization: Bearer <key>`` (401).

Every request is recorded in :attr:`calls` (method, path, headers, parsed body, status).

    with FakeVLLM(base_model="smollm2-135m-instruct") as server:
        VLLMDeployer(DeploySettings(vllm_base_url=server.base_url)).deploy(...)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class FakeVLLM:
    base_model: str = "base"
    api_key: str | None = None
    runtime_updating: bool = True
    calls: list[Call] = field(default_factory=list)
    loaded: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeVLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path == f"/v1/{route}"]

    # --- what vLLM answers -----------------------------------------------------------------
    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": "Unauthorized"}
        lora_route = path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
        if method == "GET" and path == "/v1/models":
            return 200, self._models()
        if method != "POST" or (lora_route and not self.runtime_updating):
            return 404, {"detail": "Not Found"}
        if (headers.get("content-type") or "").split(";")[0].strip() != "application/json":
            return 400, _error("Unsupported Media Type: Only 'application/json' is allowed", 400)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, _error("the body is not JSON", 400)
        if not isinstance(body, dict):
            return 400, _error("the body must be a JSON object", 400)
        with self._lock:
            if path == "/v1/load_lora_adapter":
                return self._load(body)
            if path == "/v1/unload_lora_adapter":
                return self._unload(body)
            if path == "/v1/completions":
                return self._complete(body)
        return 404, {"detail": "Not Found"}

    def _load(self, body: dict[str, Any]) -> tuple[int, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path or not isinstance(name, str) or not isinstance(path, str):
            return 400, _error("Both 'lora_name' and 'lora_path' must be provided.", 400)
        if name in self.loaded and not body.get("load_inplace"):
            return 400, _error(
                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                "adapter in place, set 'load_inplace' to True.",
                400,
            )
        if not (Path(path) / "adapter_config.json").is_file():
            return 404, _error(f"Loading lora {name} failed: No adapter found for {path}", 404)
        self.loaded[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        if not name:
            return 400, _error("'lora_name' needs to be provided to unload a LoRA adapter.", 400)
        if name not in self.loaded:
            return 404, _error(f"The lora adapter '{name}' cannot be found.", 404)
        del self.loaded[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        model = body.get("model")
        if model != self.base_model and model not in self.loaded:
            return 404, _error(f"The model `{model}` does not exist.", 404)
        return 200, {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": model,
            "choices": [{"index": 0, "text": f" answer from {model}", "finish_reason": "length"}],
        }

    def _models(self) -> dict[str, Any]:
        cards = [{"id": self.base_model, "object": "model", "root": "/models/base", "parent": None}]
        cards += [
            {"id": name, "object": "model", "root": path, "parent": self.base_model}
            for name, path in self.loaded.items()
        ]
        return {"object": "list", "data": cards}


def _error(message: str, code: int) -> dict[str, Any]:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(code, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(server: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = server.answer(self.command, self.path, headers, raw)
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            server.calls.append(Call(self.command, self.path, headers, body, status))
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = text.encode()
            self.send_response(status)
            kind = "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

    return Handler
