#!/usr/bin/env bash
# Stalls or kills one rank of `eplb demo` during a migration and reports when
# every other rank reported the failure, and whom it named, against the
# deadline. The figures in BENCHMARKS.md ("Faults during migrations") come
# from it.
#
#   bash scripts/demo_faults.sh [--victim R] [--delay-ms MS] FAULT... [-- DEMO ARGS]
#
# FAULT is stop:SECONDS (SIGSTOP, SIGCONT after SECONDS) or kill (SIGKILL).
# The demo runs with --ranks 4 --deadline-ms 2000 unless DEMO ARGS say
# otherwise; the victim (default rank 2) is signalled --delay-ms (default
# 300) after it logs that the first cycle migrates. Uses the built eplb in
# ${EPLB_BUILD_DIR:-build}. Exit status 1 if any rank named a healthy rank or
# a survivor did not report within deadline + 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${EPLB_BUILD_DIR:-build}
victim=2
delay_ms=300
faults=()
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --victim) victim=$2; shift 2 ;;
    --delay-ms) delay_ms=$2; shift 2 ;;
    --) shift; demo_args=("$@"); break ;;
    stop:*|kill) faults+=("$1"); shift ;;
    *) echo "demo_faults: unknown argument $1 (FAULT is stop:SECONDS or kill)" >&2; exit 2 ;;
  esac
done
[ ${#faults[@]} -gt 0 ] || { echo "demo_faults: name at least one FAULT (stop:4, kill)" >&2; exit 2; }
[ -x "$build/eplb" ] || { echo "demo_faults: no $build/eplb (build first: scripts/build.sh)" >&2; exit 2; }
deadline_ms=2000
for ((i = 0; i < ${#demo_args[@]}; ++i)); do
  [ "${demo_args[$i]}" = --deadline-ms ] && deadline_ms=${demo_args[$((i + 1))]}
done

# Seconds since midnight of a local HH:MM:SS.mmm.
seconds_of() { awk -F: '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }' <<<"$1"; }

# The pid of rank $2 of the demo launched by pid $1 (its ranks carry
# EPLB_RUN_ID=demo-<launcher pid> and RANK in their environment).
rank_pid() {
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RANK=$2"; then echo "$p"; return 0; fi
  done
  return 1
}

status=0
for fault in "${faults[@]}"; do
  base=$(mktemp -d "${TMPDIR:-/tmp}/eplb-faults-XXXXXX")
  TMPDIR=$base "$build/eplb" demo --ranks 4 --deadline-ms "$deadline_ms" --no-progress --keep \
    "${demo_args[@]}" >"$base/out" 2>"$base/err" &
  launcher=$!
  dir=""
  for _ in $(seq 1 600); do
    dir=$(ls -d "$base"/eplb-demo-* 2>/dev/null | head -1 || true)
    [ -n "$dir" ] && grep -q "layers change; migrating" "$dir/rank$victim.log" 2>/dev/null && break
    sleep 0.05
  done
  if [ -z "$dir" ] || ! grep -q "layers change; migrating" "$dir/rank$victim.log" 2>/dev/null; then
    echo "demo_faults: $fault: rank $victim never started migrating" >&2
    kill "$launcher" 2>/dev/null || true
    status=1
    continue
  fi
  sleep "$(awk "BEGIN { print $delay_ms / 1000 }")"
  pid=$(rank_pid "$launcher" "$victim")
  at=$(date +%H:%M:%S.%3N)
  case "$fault" in
    stop:*)
      kill -STOP "$pid"
      sleep "${fault#stop:}"
      kill -CONT "$pid" 2>/dev/null || true
      ;;
    kill) kill -KILL "$pid" ;;
  esac
  code=0
  wait "$launcher" || code=$?
  echo "== $fault of rank $victim at $at (deadline $deadline_ms ms); eplb demo exit $code"
  grep -m1 "^eplb demo: FAILED" "$base/err" || echo "(no verdict line)"
  t0=$(seconds_of "$at")
  while IFS= read -r line; do
    rank=$(sed -n 's/^  rank \([0-9]*\) .*/\1/p' <<<"$line")
    when=$(sed -n 's/.*failed at \([0-9:.]*\)).*/\1/p' <<<"$line")
    what=$(sed 's/^[^)]*): //' <<<"$line")
    if [ -n "$when" ]; then
      after=$(awk "BEGIN { printf \"%.2f\", $(seconds_of "$when") - $t0 }")
    else
      after="-"
    fi
    if [ "$rank" = "$victim" ]; then
      role="victim  "
      grep -q "left behind" <<<"$what" || [ "$fault" = kill ] || { echo "   (the victim did not say it was left behind)"; }
    else
      role="survivor"
      if ! grep -q "^rank $victim stalled or died" <<<"$what"; then
        echo "   (rank $rank did not name rank $victim)"
        status=1
      fi
      if [ "$after" = "-" ] || awk "BEGIN { exit !($after > ($deadline_ms + 1000) / 1000) }"; then
        echo "   (rank $rank reported later than deadline + 1 s)"
        status=1
      fi
    fi
    printf '   rank %s (%s) +%s s: %s\n' "$rank" "$role" "$after" "${what:0:150}"
  done < <(grep "^  rank [0-9]* (" "$base/err")
  rm -rf "$base"
done
exit $status
