#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the eplb demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${EPLB_BUILD_DIR:-build}
exec "$build/eplb" plan --load data/loads/deepseek-v3-prefill_in1024.json \
  --replicas 288 --groups 8 --nodes 4 --ranks 32 "$@"
