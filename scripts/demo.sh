#!/usr/bin/env bash
# The main job on a fresh machine: install, then generate a signed, watermarked, registered image with the
# model provgen ships (`shapes`, 64x64, see docs/models/shapes.md) and verify it. Extra arguments go to
# `provgen generate` (e.g. `--model PATH` for another local diffusers model, `--steps 20`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
rm -rf .demo/out
mkdir -p .demo
provgen generate "a red circle on a blue background" --seed 7 --out .demo/out --json "$@" \
    | tee .demo/last-generate.json
provgen verify .demo/out/*
