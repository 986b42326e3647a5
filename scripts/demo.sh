#!/usr/bin/env bash
# `make demo`: the main job end to end. `sentryml demo` starts (and always stops) the local
# Kafka broker, the llama.cpp server, the shared chDB store, the worker and the trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/sentryml demo "$@"
