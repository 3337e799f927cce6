#!/usr/bin/env bash
# Prints one digest line per (load file, shape, policy, previous placement):
# the sha256 of the placement `eplb plan` computes. Run it before and after a
# change that must not change placements (a refactor, a speed-up) and diff
# the two outputs.
#
#   scripts/placement_digest.sh [EPLB_BINARY] > before.txt
set -euo pipefail
cd "$(dirname "$0")/.."
eplb=${1:-build/eplb}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
digest() { /usr/bin/python3 -c 'import json,sys,hashlib; d=json.load(open(sys.argv[1])); print(hashlib.sha256(json.dumps([d["phy2log"],d["logcnt"]]).encode()).hexdigest()[:16])' "$1"; }
# Shapes: DeepSeek-V3 at 288/32/4 and 320/64/8, Qwen at 1.5x slots.
for load in data/loads/*.json; do
  experts=$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["load"][0]))' "$load")
  case $experts in
    256) shapes=("288 8 4 32" "320 8 8 64") ;;
    *) shapes=("$((experts * 3 / 2)) 1 2 16") ;;
  esac
  for shape in "${shapes[@]}"; do
    read -r replicas groups nodes ranks <<<"$shape"
    args=(--load "$load" --replicas "$replicas" --groups "$groups" --nodes "$nodes" --ranks "$ranks" --repeat 1 --threads 1)
    "$eplb" plan "${args[@]}" --policy deepseek --output "$work/prev.json" >/dev/null
    for policy in deepseek balanced locality movement; do
      "$eplb" plan "${args[@]}" --policy "$policy" --output "$work/p.json" >/dev/null
      fresh=$(digest "$work/p.json")
      "$eplb" plan "${args[@]}" --policy "$policy" --previous "$work/prev.json" --output "$work/p.json" >/dev/null
      echo "$(basename "$load") $shape $policy $fresh $(digest "$work/p.json")"
    done
  done
done
