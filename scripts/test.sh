#!/usr/bin/env bash
# Install (if needed) and run the whole test suite. PostgreSQL tests run when a server answers at
# 127.0.0.1:5432 (or PROVGEN_TEST_POSTGRES_URL); with CI=true they fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
