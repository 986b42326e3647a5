#!/usr/bin/env bash
# `make demo`: start the local broker (unless SENTRYML_KAFKA_BOOTSTRAP points at one), run the
# main job on the embedded defaults, and stop what we started, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-.sentryml/demo}
PORT=${DEMO_KAFKA_PORT:-19092}
mkdir -p "$DEMO_DIR"
started=0
cleanup() {
  if [ "$started" = 1 ]; then python3 scripts/kafka_local.py stop --dir "$DEMO_DIR/kafka" >/dev/null || true; fi
}
trap cleanup EXIT INT TERM
if [ -z "${SENTRYML_KAFKA_BOOTSTRAP:-}" ]; then
  python3 scripts/kafka_local.py start --port "$PORT" --dir "$DEMO_DIR/kafka"
  started=1
  export SENTRYML_KAFKA_BOOTSTRAP="127.0.0.1:$PORT"
fi
export SENTRYML_STORE_URL=${SENTRYML_STORE_URL:-chdb://$PWD/$DEMO_DIR/chdb}
.venv/bin/sentryml demo "$@"
