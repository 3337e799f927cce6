#!/usr/bin/env bash
# Membership events on `eplb demo` (the default model: 58 MoE layers x 256
# experts, 4 ranks, host weights): one row per run with the time from the
# event to every expert served again, the experts restored from the source
# against those moved between ranks, and the balancedness before, on the
# slots left in force, just after the change and after the next rebalance.
#
#   scripts/elastic_figures.sh [build/eplb] [extra demo flags...]
#
# Prints a Markdown table (BENCHMARKS.md, "Elastic EP").
set -euo pipefail
eplb=${1:-build/eplb}
shift || true
command -v python3 >/dev/null || { echo "elastic_figures: python3 is needed to read the JSON" >&2; exit 2; }
echo "| event | --deadline-ms | changed at step | served again (s) | from the source: experts (MB) | over the wire: experts (MB) | balancedness: before / slots left / just after / next rebalance | result |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
row() {
  local deadline=$1
  shift
  local out
  out=$("$eplb" demo --json --deadline-ms "$deadline" "$@") || { echo "| $* | $deadline | run failed (exit $?) | | | | | |"; return; }
  python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
m = j["membership"]
f = lambda k: "%.3f" % m[k] if isinstance(m.get(k), (int, float)) else "n/a"
print("| %s of rank %d at step %d | %s | %d | %.3f | %d (%.1f) | %d (%.1f) | %s / %s / %s / %s | %s |" % (
    m["event"], m["rank"], m["at_step"], sys.argv[1], m["changed_at_step"], m["served_again_seconds"],
    m["experts_from_source"], m["bytes_from_source"] / 1e6, m["experts_over_wire"], m["bytes_over_wire"] / 1e6,
    f("balancedness_before_event"), f("balancedness_live_slots_before_change"), f("balancedness_after_change"),
    f("balancedness_after_next_rebalance"), "OK" if j["ok"] else "FAILED"))
' "$deadline" <<<"$out"
}
for d in 1000 5000; do row "$d" --kill-rank 2 --kill-at 500 "$@"; done
row 5000 --kill-rank 1 --kill-at 150 "$@"   # during the first cycle's migration
row 5000 --leave-rank 1 --leave-at 500 "$@"
row 5000 --join-at 500 "$@"
