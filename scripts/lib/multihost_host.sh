#!/usr/bin/env bash
# One host's launcher (the first process of a host made by scripts/lib/multihost.sh):
#   multihost_host.sh DIR FIRST COUNT CMD...
# starts ranks FIRST .. FIRST+COUNT-1 as CMD with the environment in
# DIR/rank<R>.env (one NAME=VALUE a line), waits for them and records each
# exit status in DIR/rank<R>.status. Rank 0's stdout is this script's (the
# report); the others' go to DIR/rank<R>.out, every rank's stderr to
# DIR/rank<R>.log. Exits 0 only if every rank did.
set -uo pipefail
dir=$1 first=$2 count=$3
shift 3
pids=()
for ((r = first; r < first + count; r++)); do
  mapfile -t vars <"$dir/rank$r.env"
  if [ "$r" = 0 ]; then
    env "${vars[@]}" "$@" 2>"$dir/rank$r.log" &
  else
    env "${vars[@]}" "$@" >"$dir/rank$r.out" 2>"$dir/rank$r.log" &
  fi
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  s=$?
  echo "$s" >"$dir/rank$((first + i)).status"
  [ "$s" = 0 ] || status=1
done
exit "$status"
