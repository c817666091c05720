#!/usr/bin/env bash
# The main job on a fresh machine: install, then generate a signed, watermarked, registered image and
# verify it. Until provgen ships its own small model (issue 6), the demo builds a tiny RANDOM model
# locally (its images are noise; the provenance is real). Pass --model PATH to use a real one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
MODEL=.demo/tiny-sd
if [ "${1:-}" = "--model" ]; then MODEL=$2; shift 2; fi
if [ ! -f "$MODEL/model_index.json" ]; then
    python -m provgen.core.tiny_models "$MODEL"
fi
provgen generate "a lighthouse at dusk" --model "$MODEL" --steps 20 --seed 7 --scheduler dpmpp_2m \
    --width 256 --height 256 --out .demo/out --json "$@" | tee .demo/last-generate.json
provgen verify .demo/out/*.png
