#!/usr/bin/env bash
# Headless Chromium (Debian's `chromium` package) for the report rendering test.
# Idempotent: does nothing when chromium is on PATH; uses root (or passwordless sudo) only
# to install. Exits non-zero when it cannot install; the test then skips and says why.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get on this machine; install Chromium to run the report test" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_chromium: installing Chromium needs root: run 'apt-get install -y chromium' as root" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh image has no package lists yet: fetch them once, only when chromium has no candidate.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  "${SUDO[@]}" apt-get update -qq
fi
echo "install_chromium: installing Debian's chromium (headless report test)" >&2
"${SUDO[@]}" apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
