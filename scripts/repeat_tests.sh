#!/usr/bin/env bash
# Repeats every multi-process test (ctest label "multiprocess": the suites
# that start rank processes) N times, optionally with every other core kept
# busy, and prints how often each one failed. A test that fails even once is
# a bug, in the code or in the test.
#
#   bash scripts/repeat_tests.sh [N] [--busy] [extra ctest arguments]
#
# N defaults to 30. --busy keeps nproc-1 cores spinning for the whole run
# (a machine also serving, or building). Builds first (scripts/build.sh);
# logs of failed runs go to ${EPLB_BUILD_DIR:-build}/repeat-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
n=30
busy=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --busy) busy=1 ;;
    ''|*[!0-9]*) extra+=("$arg") ;;
    *) n=$arg ;;
  esac
done
if [ "$n" -lt 1 ] || [ "$n" -gt 1000 ]; then
  echo "repeat_tests: N must be in [1, 1000], got $n" >&2
  exit 2
fi
build=${EPLB_BUILD_DIR:-build}
bash scripts/build.sh >/dev/null
logs="$build/repeat-logs"
rm -rf "$logs"
mkdir -p "$logs"

spinners=()
stop_spinners() {
  for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_spinners EXIT
if [ "$busy" = 1 ]; then
  cores=$(nproc)
  for _ in $(seq 1 $((cores > 1 ? cores - 1 : 1))); do
    (while :; do :; done) &
    spinners+=($!)
  done
fi

declare -A failures=()
total=$(ctest --test-dir "$build" -L multiprocess -N | awk '/Total Tests:/ {print $3}')
echo "repeat_tests: $total multi-process tests, $n runs$([ "$busy" = 1 ] && echo ", ${#spinners[@]} busy core(s)")"
for run in $(seq 1 "$n"); do
  out="$logs/run-$run.log"
  start=$(date +%s)
  if ctest --test-dir "$build" -L multiprocess -j "${EPLB_TEST_JOBS:-2}" --output-on-failure "${extra[@]}" >"$out" 2>&1; then
    rm -f "$out"
    status=ok
  else
    status=FAILED
    while read -r name; do
      failures[$name]=$(( ${failures[$name]:-0} + 1 ))
    done < <(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) .*(\(Failed\|Timeout\|SEGFAULT\|Subprocess aborted\|Exception\).*/\1/p' "$out")
  fi
  echo "run $run/$n: $status ($(( $(date +%s) - start )) s)"
done

if [ ${#failures[@]} -eq 0 ]; then
  echo "repeat_tests: every multi-process test passed $n of $n runs"
  exit 0
fi
echo "repeat_tests: failures (test: runs failed of $n; logs in $logs):"
for name in "${!failures[@]}"; do echo "  $name: ${failures[$name]}"; done
exit 1
