#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the eplb demo:
# 4 rank processes serve a scaled-down DeepSeek-V3 (58 MoE layers x 256
# experts, 288 slots) under a drifting skewed load and rebalance it live over
# Gloo, verifying every expert. Extra arguments go to `eplb demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${EPLB_BUILD_DIR:-build}
exec "$build/eplb" demo "$@"
