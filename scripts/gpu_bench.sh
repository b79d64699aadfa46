#!/usr/bin/env bash
# Executor figures on a GPU machine (issue 5): SD 1.5's UNet architecture with seeded random weights,
# patch-parallel gangs of 1, 2 and 4 over NCCL, at 512 and 1024 px. Writes docs/bench/executor-cuda-*.json,
# which `eat results` puts into docs/results.md. Nothing is downloaded: the weights are random.
set -euo pipefail
cd "$(dirname "$0")/.."
EAT="${EAT:-.venv/bin/eat}"
mkdir -p docs/bench
for px in 512 1024; do
  "$EAT" bench executor --unet-config sd15 --resolution "$px" --device cuda \
    --work-dir "out/bench-executor-cuda-$px" --json "docs/bench/executor-cuda-$px.json"
done
