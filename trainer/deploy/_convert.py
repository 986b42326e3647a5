"""PEFT adapter → GGUF LoRA, with llama.cpp's own converter (``convert_lora_to_gguf.py``).

The converter is part of llama.cpp's source tree, not of any wheel. ``make setup`` keeps it
from the llama-cpp-python sdist (which vendors llama.cpp) in
``~/.cache/sentryml/llama-convert-<version>/``, with the ``conversion/`` package it imports
and the ``gguf-py`` it is written against: the PyPI ``gguf`` release lags behind the tree
(0.19.0 has no ``gguf.LazyChunkedTensor``, which this converter needs), so the converter
runs with its own copy, as llama.cpp intends. The PyPI ``gguf`` package reads the result
back (:func:`inspect_lora_gguf`): the GGUF *format* is stable, its writer's helpers are not.

The converter needs only the base model's ``config.json`` (``--base``), never its weights,
and runs offline. A conversion is cached next to its output and reused while the PEFT
weights' SHA-256 is unchanged, so a rollback to an earlier adapter only restarts the server.

>>> convert_lora(Path("adapters/ft-1"), Path("loras/ft-1.gguf"),
...              base_dir=ensure_demo_model())                   # doctest: +SKIP
ConvertedLora(path=PosixPath('loras/ft-1.gguf'), sha256='…', seconds=6.4, reused=False, …)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.deploy.exceptions import ConversionFailed, ConverterUnavailable

log = logging.getLogger(__name__)

CONVERTER = "convert_lora_to_gguf.py"
#: Python packages the converter imports (sentencepiece only matters for full-model
#: conversion: a LoRA conversion skips the vocabulary).
CONVERTER_PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "numpy": "numpy",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
}


def default_converter_dir() -> Path:
    """``~/.cache/sentryml/llama-convert-<installed llama-cpp-python version>``: the copy
    ``make setup`` keeps, matching the llama.cpp that serves (the GGUF LoRA layout changes
    between llama.cpp versions)."""
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConverterUnavailable(
            "llama-cpp-python is not installed, so the matching llama.cpp converter cannot be "
            "found: run `make setup` (or pip install 'llama-cpp-python[server]'), or set "
            "SENTRYML_DEPLOY_CONVERTER_DIR to a llama.cpp source checkout"
        ) from exc
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "sentryml" / f"llama-convert-{version}"


def find_converter(given: Path | None = None) -> Path:
    """The folder holding ``convert_lora_to_gguf.py`` (``given``, else the default), after
    checking that the packages it imports are installed."""
    folder = (given or default_converter_dir()).expanduser()
    if not (folder / CONVERTER).is_file():
        raise ConverterUnavailable(
            f"llama.cpp's {CONVERTER} is not in {folder}: run `make setup` (it keeps the "
            "converter from the llama-cpp-python sdist there), or set "
            "SENTRYML_DEPLOY_CONVERTER_DIR to a llama.cpp source checkout"
        )
    missing = [
        pip for mod, pip in CONVERTER_PACKAGES.items() if importlib.util.find_spec(mod) is None
    ]
    if missing:
        raise ConverterUnavailable(
            f"llama.cpp's converter needs {', '.join(missing)}: "
            f"pip install {' '.join(missing)} (the trainer extra has them)"
        )
    return folder


def base_model_dir(adapter_dir: Path, given: Path | None = None) -> Path:
    """The Hugging Face folder of the adapter's base model: ``given``, else the adapter's
    ``base_model_name_or_path`` when it is a local folder, else the converted demo model."""
    if given is not None:
        folder = given.expanduser()
    else:
        named = _adapter_config(adapter_dir).get("base_model_name_or_path")
        if named and Path(named).is_dir():
            folder = Path(named)
        else:
            from trainer.demo_model import ensure_demo_model

            folder = ensure_demo_model()
    if not (folder / "config.json").is_file():
        raise ConversionFailed(
            f"the base model folder {folder} has no config.json: set "
            "SENTRYML_DEPLOY_BASE_MODEL_PATH to the Hugging Face folder the adapter was trained on"
        )
    return folder


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConversionFailed(
            f"{path} is missing or not JSON: {adapter_dir} is not a saved PEFT adapter"
        ) from exc
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise ConversionFailed(f"{path} is not a LoRA adapter config; only LoRA converts to GGUF")
    return config


@dataclass(frozen=True)
class ConvertedLora:
    """A GGUF LoRA and where it came from (the sidecar ``<name>.json`` holds the same)."""

    path: Path
    sha256: str
    source_sha256: str
    outtype: str
    seconds: float
    reused: bool = False


def convert_lora(
    adapter_dir: Path,
    out: Path,
    *,
    base_dir: Path,
    source_sha256: str = "",
    converter_dir: Path | None = None,
    outtype: str = "f16",
    timeout_s: float = 900.0,
) -> ConvertedLora:
    """Convert the PEFT adapter in ``adapter_dir`` to the GGUF LoRA ``out``.

    Reuses ``out`` when its sidecar says it was made from weights with ``source_sha256``
    and the same ``outtype`` and the file still has its recorded digest. The output is
    written to a temporary name and renamed, so a killed conversion leaves nothing half
    written.
    """
    sidecar = out.with_suffix(".json")
    cached = _cached(out, sidecar, source_sha256, outtype)
    if cached is not None:
        return cached
    folder = find_converter(converter_dir)
    _adapter_config(adapter_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [
        sys.executable, str(folder / CONVERTER), "--base", str(base_dir),
        "--outfile", str(tmp), "--outtype", outtype, str(adapter_dir),
    ]  # fmt: skip
    # The converter must use its own gguf-py (NO_LOCAL_GGUF would switch to PyPI's gguf,
    # which lacks what it needs); it reads only local files.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise ConversionFailed(
            f"converting {adapter_dir} to GGUF took more than {timeout_s:.0f}s; raise "
            "SENTRYML_DEPLOY_CONVERT_TIMEOUT_S or free the machine"
        ) from exc
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ConversionFailed(
            f"llama.cpp's converter failed on {adapter_dir} (exit {proc.returncode}):\n{tail}"
        )
    os.replace(tmp, out)
    result = ConvertedLora(
        path=out,
        sha256=file_sha256(out),
        source_sha256=source_sha256,
        outtype=outtype,
        seconds=round(seconds, 3),
    )
    record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    sidecar.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("converted %s to %s in %.1fs (%s)", adapter_dir, out, seconds, result.sha256[:12])
    return result


def _cached(out: Path, sidecar: Path, source_sha256: str, outtype: str) -> ConvertedLora | None:
    if not source_sha256 or not out.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if record.get("source_sha256") != source_sha256 or record.get("outtype") != outtype:
        return None
    digest = file_sha256(out)
    if digest != record.get("sha256"):
        return None
    return ConvertedLora(
        path=out,
        sha256=digest,
        source_sha256=source_sha256,
        outtype=outtype,
        seconds=float(record.get("seconds", 0.0)),
        reused=True,
    )


def inspect_lora_gguf(path: Path) -> dict[str, Any]:
    """The header of a GGUF LoRA, read with the PyPI ``gguf`` package: ``architecture``,
    ``alpha``, ``tensors`` (count), ``type`` (must be ``adapter``/``lora``)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> Any:
        item = reader.fields.get(key)
        return item.contents() if item is not None else None

    info = {
        "type": f"{value('general.type')}/{value('adapter.type')}",
        "architecture": value("general.architecture"),
        "alpha": value("adapter.lora.alpha"),
        "tensors": len(reader.tensors),
    }
    if info["type"] != "adapter/lora" or not info["tensors"]:
        raise ConversionFailed(f"{path} is not a GGUF LoRA adapter: {info}")
    return info


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of any GGUF file (the base model the server loads). The
    reader parses every tensor's header (2 s for the 135M demo model), so it is cached per
    file version."""
    stat = path.stat()
    return _architecture(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _architecture(path: str, _size: int, _mtime_ns: int) -> str | None:
    from gguf import GGUFReader

    item = GGUFReader(path).fields.get("general.architecture")
    return str(item.contents()) if item is not None else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
