#!/usr/bin/env bash
# One host's launcher (the first process of a host made by scripts/lib/multihost.sh):
#   multihost_host.sh DIR FIRST COUNT CMD...
# starts ranks FIRST .. FIRST+COUNT-1 as CMD with the environment in
# DIR/rank<R>.env (one NAME=VALUE a line), waits for them and records each
# one's exit status and when it ended (seconds since the epoch) in
# DIR/rank<R>.status, as each ends. Rank 0's stdout is this script's (the
# report); the others' go to DIR/rank<R>.out, every rank's stderr to
# DIR/rank<R>.log. Exits 0 only if every rank did.
set -uo pipefail
dir=$1 first=$2 count=$3
shift 3
declare -A rank_of=()
for ((r = first; r < first + count; r++)); do
  mapfile -t vars <"$dir/rank$r.env"
  if [ "$r" = 0 ]; then
    env "${vars[@]}" "$@" 2>"$dir/rank$r.log" &
  else
    env "${vars[@]}" "$@" >"$dir/rank$r.out" 2>"$dir/rank$r.log" &
  fi
  rank_of[$!]=$r
done
status=0
for ((i = 0; i < count; i++)); do
  wait -n -p pid "${!rank_of[@]}"
  s=$?
  echo "$s $(date +%s.%N)" >"$dir/rank${rank_of[$pid]}.status"
  unset "rank_of[$pid]"
  [ "$s" = 0 ] || status=1
done
exit "$status"
