#!/usr/bin/env bash
# Create ./.venv (if missing) and install provgen into it, CPU torch first so nothing pulls a CUDA build.
# Usage: bash scripts/install.sh        (idempotent; re-running only checks what is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch (or a package that asks for one) pulls a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev]"
python -m pip check >/dev/null || { python -m pip check; exit 1; }
