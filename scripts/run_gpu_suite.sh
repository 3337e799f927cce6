#!/usr/bin/env bash
# Runs a bundle made by scripts/gpu_bundle.sh on a GPU machine: the GPU suite
# (ctest -L gpu), then `eplb bench`. Logs go to $OUT (or ./gpu-logs) too.
# ctest files name the build folder's absolute path, so it is linked there.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$here/gpu-logs}
mkdir -p "$logs"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The bundle's NIXL (scripts/gpu_bundle.sh), found by the rule as a wheel;
# its tests must then run, not skip.
if [ -d "$here/nixl/site-packages" ] && [ -z "${EPLB_NIXL_DIR:-}" ]; then
  export EPLB_NIXL_DIR="$here/nixl/site-packages" EPLB_REQUIRE_NIXL=1
fi
build_dir=$(cat "$here/build_dir")
if [ ! -e "$build_dir" ]; then
  mkdir -p "$(dirname "$build_dir")"
  ln -s "$here/build" "$build_dir"
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>&1 | tee "$logs/gpus.txt"
nvidia-smi topo -m 2>&1 | tee -a "$logs/gpus.txt"
rc=0
ctest --test-dir "$build_dir" -L gpu --output-on-failure -V ${EPLB_CTEST_ARGS:-} >"$logs/ctest.log" 2>&1 || rc=$?
grep -E "^\s*[0-9]+/[0-9]+ Test|tests passed|copy-engine|cuda_ipc|GPU 0|rank . on|dead peer|check:" "$logs/ctest.log" | grep -v "^\s*[0-9]*: \[cuda_ipc rank" | tail -60
if [ "${EPLB_RUN_BENCH:-1}" = 1 ] && "$build_dir/eplb" --help 2>&1 | grep -qw bench; then
  "$build_dir/eplb" bench ${EPLB_BENCH_ARGS:-} 2>&1 | tee "$logs/bench.txt" || rc=$?
fi
exit $rc
