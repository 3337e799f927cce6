#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest, the clang
# thread-safety check ThreadSafety.* among them), then fuzzes
# the file parsers for 60 s (scripts/fuzz.sh; a finding fails the script).
# GPU tests (label "gpu") skip themselves with the reason where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${EPLB_BUILD_DIR:-build}
# Where setup installed NIXL, its tests must run: a skip is then a failure.
if compgen -G ".deps/nixl/site-packages/.eplb-installed-*" >/dev/null; then export EPLB_REQUIRE_NIXL=1; fi
# The multi-host cases (MultiHost.*) need namespaces: say before the run
# whether they will run or be skipped, and why.
source scripts/lib/multihost.sh
if why=$(mh_can_run); then
  echo "test: the multi-host tests (MultiHost.*) run: hosts are made of namespaces here"
else
  echo "test: the multi-host tests (MultiHost.*) will be SKIPPED: $why"
fi
ctest --test-dir "$build" --output-on-failure -j "${EPLB_TEST_JOBS:-2}" "$@"
bash scripts/fuzz.sh 60
