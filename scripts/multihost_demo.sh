#!/usr/bin/env bash
# eplb demo with its ranks on separate hosts: every host a set of Linux
# namespaces on this machine (scripts/lib/multihost.sh: its own network stack
# on a private bridge, host name, PIDs, /proc and /dev/shm), the store a
# redis-server on a host of its own, and on each host its ranks started the
# way a launcher starts them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
# MASTER_ADDR, EPLB_STORE=redis://...). Rank 0 prints the demo's report.
# Needs root; creates its namespaces and always removes them (also when
# interrupted). Exit status: the demo's (0 only if every expert verified on
# every rank), 2 on bad options, 77 when namespaces cannot be made here.
#
#   sudo bash scripts/multihost_demo.sh [--hosts 2] [--ranks-per-host 2] [--link-gbit G]
#       [--timeout 600] [--eplb build/eplb] [--keep] [--summary FILE]
#       [--cut-link H | --kill-host H] [--fault-delay 0.3] [demo options...]
#
# --link-gbit G   shape every host's link to G Gbit/s each way (tc tbf)
# --cut-link H    take host H's link down (ip link set eth0 down) --fault-delay
#                 seconds after the first rebalance started moving weights
# --kill-host H   kill every process of host H at that moment instead
# --summary FILE  key=value lines: each rank's exit status and when it ended
#                 (seconds after the fault), the fault's time, the run's outcome
# Anything else goes to `eplb demo` (--steps, --layers, --communicator, ...);
# --nodes is the number of hosts and --ranks the number of ranks.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib/multihost.sh
source "$here/lib/multihost.sh"

hosts=2 per_host=2 link_gbit="" timeout_s=600 keep=0 summary="" fault="" fault_host="" fault_delay=0.3
eplb="$root/${EPLB_BUILD_DIR:-build}/eplb"
demo_args=()
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
need() { [ $# -ge 2 ] || { echo "multihost_demo: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) need "$@"; hosts=$2; shift 2 ;;
    --ranks-per-host) need "$@"; per_host=$2; shift 2 ;;
    --link-gbit) need "$@"; link_gbit=$2; shift 2 ;;
    --timeout) need "$@"; timeout_s=$2; shift 2 ;;
    --eplb) need "$@"; eplb=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --summary) need "$@"; summary=$2; shift 2 ;;
    --cut-link | --kill-host) need "$@"; fault=${1#--}; fault_host=$2; shift 2 ;;
    --fault-delay) need "$@"; fault_delay=$2; shift 2 ;;
    --nodes | --ranks) echo "multihost_demo: $1 follows from --hosts and --ranks-per-host" >&2; exit 2 ;;
    -h | --help) usage ;;
    *) demo_args+=("$1"); shift ;;
  esac
done
int() { [[ $2 =~ ^[0-9]+$ ]] || { echo "multihost_demo: $1 must be a whole number, not '$2'" >&2; exit 2; }; }
int --hosts "$hosts"
int --ranks-per-host "$per_host"
int --timeout "$timeout_s"
if [ -n "$link_gbit" ] && ! [[ $link_gbit =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "multihost_demo: --link-gbit must be a number of Gbit/s, not '$link_gbit'" >&2
  exit 2
fi
if [ -n "$fault" ]; then
  int "--$fault" "$fault_host"
  [ "$fault_host" -lt "$hosts" ] || { echo "multihost_demo: --$fault $fault_host: there are $hosts hosts" >&2; exit 2; }
  [[ $fault_delay =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "multihost_demo: --fault-delay must be seconds" >&2; exit 2; }
fi
[ -x "$eplb" ] || { echo "multihost_demo: $eplb not found: build first (scripts/build.sh)" >&2; exit 2; }
if ! why=$(mh_can_run); then
  echo "multihost_demo: SKIPPED: cannot make hosts from namespaces here: $why" >&2
  exit 77
fi

mh_init "$hosts" "$per_host" || exit 2
cleanup() {
  mh_cleanup
  if [ "$keep" = 1 ] || [ "${outcome:-1}" != 0 ]; then
    echo "multihost: run directory (ranks' logs, store log) kept in $MH_DIR" >&2
  else
    rm -rf "$MH_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Bad demo options fail here, before any namespace exists (the demo's own checks).
if ! "$eplb" demo --nodes "$hosts" --ranks "$MH_WORLD" "${demo_args[@]}" --check-only >"$MH_DIR/check.log" 2>&1; then
  cat "$MH_DIR/check.log" >&2
  outcome=2
  exit 2
fi

mh_setup || { echo "multihost_demo: could not set up the namespaces" >&2; exit 1; }
[ -n "$link_gbit" ] && { mh_shape "$link_gbit" || exit 1; }
mh_start_store || exit 1
for ((r = 0; r < MH_WORLD; r++)); do mh_rank_env "$r" >"$MH_DIR/rank$r.env"; done
echo "multihost: $hosts hosts x $per_host ranks (namespaces $MH_PREFIX-*, subnet $MH_SUBNET.0/24${link_gbit:+, links shaped to $link_gbit Gbit/s}); store redis://$MH_STORE_ADDR:$MH_STORE_PORT" >&2
start=$(date +%s.%N)
for ((h = 0; h < hosts; h++)); do
  mh_start_host "$h" bash "$here/lib/multihost_host.sh" "$MH_DIR" $((h * per_host)) "$per_host" \
    "$eplb" demo --nodes "$hosts" --ranks "$MH_WORLD" --timeout "$timeout_s" "${demo_args[@]}"
done

# The fault: once a rank logged that the first cycle runs, plus --fault-delay.
fault_time=""
poll=0
alive() {
  local h
  for ((h = 0; h < hosts; h++)); do kill -0 "${MH_HOST_PID[$h]}" 2>/dev/null && return 0; done
  return 1
}
limit=$(awk -v s="$start" -v t="$timeout_s" 'BEGIN { printf "%d", s + t + 30 }')
while alive; do
  now=$(date +%s)
  if [ "$now" -ge "$limit" ]; then
    echo "multihost: the ranks still run after --timeout $timeout_s s + 30 s: killing them" >&2
    break
  fi
  # What the ranks listen on, every ~0.5 s: never every interface.
  if [ $((poll++ % 10)) = 0 ]; then
    for ((h = 0; h < hosts; h++)); do
      ip netns exec "$(mh_host_ns "$h")" ss -Hltnp 2>/dev/null | awk '/"eplb"/ { print $4 }' >>"$MH_DIR/listeners"
    done
  fi
  if [ -n "$fault" ] && [ -z "$fault_time" ] && grep -qs "cycle 1 (step [0-9]*): [0-9]* of [0-9]* layers change; migrating" "$MH_DIR"/rank*.log; then
    sleep "$fault_delay"
    fault_start=$(date +%s.%N)
    if [ "$fault" = cut-link ]; then mh_link_down "$fault_host"; else mh_kill_host "$fault_host"; fi
    # The fault is in force once the command returns (taking a shaped link
    # down waits for the kernel to drain it; on a loaded machine that can
    # take a while): times after the fault count from here.
    fault_time=$(date +%s.%N)
    echo "fault_took=$(awk -v a="$fault_time" -v b="$fault_start" 'BEGIN { printf "%.3f", a - b }')" >"$MH_DIR/fault"
    echo "multihost: fault: $fault $fault_host ($(mh_host_name "$fault_host"), ranks $((fault_host * per_host))-$(((fault_host + 1) * per_host - 1))) at +$(awk -v a="$fault_time" -v b="$start" 'BEGIN { printf "%.2f", a - b }') s" >&2
  fi
  sleep 0.05
done
mh_cleanup  # what is left (the store, a host past the limit)

# Every rank's outcome.
outcome=0
{
  echo "hosts=$hosts"
  echo "ranks_per_host=$per_host"
  echo "fault=$fault"
  echo "fault_host=$fault_host"
  echo "fault_time=$fault_time"
  cat "$MH_DIR/fault" 2>/dev/null
} >"$MH_DIR/summary"
for ((r = 0; r < MH_WORLD; r++)); do
  status=killed ended=""
  if [ -f "$MH_DIR/rank$r.status" ]; then read -r status ended <"$MH_DIR/rank$r.status"; fi
  [ "$status" = 0 ] || outcome=1
  after=""
  [ -n "$fault_time" ] && [ -n "$ended" ] && after=$(awk -v a="$ended" -v b="$fault_time" 'BEGIN { printf "%.3f", a - b }')
  err=$(grep -h "failed: " "$MH_DIR/rank$r.log" 2>/dev/null | tail -n 1 | cut -c1-600)
  {
    echo "rank${r}_status=$status"
    echo "rank${r}_after_fault=$after"
    echo "rank${r}_error=$err"
  } >>"$MH_DIR/summary"
  if [ "$status" != 0 ]; then
    what="exit status $status"
    [ "$status" = killed ] && what="killed (no status: its host was killed)"
    echo "multihost: rank $r (host $((r / per_host))): $what${after:+, ${after} s after the fault}${err:+: $err}" >&2
  fi
done
# Listening sockets seen (address:port), and those on every interface.
listen_addrs=$(sed 's/:[0-9]*$//' "$MH_DIR/listeners" 2>/dev/null | sort -u | tr '\n' ' ')
wildcard=$(grep -E '^(0\.0\.0\.0|\*|\[::\]):' "$MH_DIR/listeners" 2>/dev/null | sort -u | tr '\n' ' ')
echo "listen_addresses=$listen_addrs" >>"$MH_DIR/summary"
echo "wildcard_listeners=$wildcard" >>"$MH_DIR/summary"
if [ -n "$wildcard" ]; then
  echo "multihost: a rank listened on every interface: $wildcard" >&2
  outcome=1
fi
echo "outcome=$outcome" >>"$MH_DIR/summary"
[ -n "$summary" ] && cp "$MH_DIR/summary" "$summary"
if [ "$outcome" != 0 ]; then
  for ((r = 0; r < MH_WORLD; r++)); do
    echo "--- rank $r ($MH_DIR/rank$r.log), last lines:" >&2
    tail -n 4 "$MH_DIR/rank$r.log" >&2 2>/dev/null
  done
fi
left=$(ip netns list 2>/dev/null | grep -c "^$MH_PREFIX-" || true)
echo "multihost: $hosts hosts x $per_host ranks: $([ "$outcome" = 0 ] && echo "every rank exited 0" || echo FAILED); namespaces left: $left" >&2
exit "$outcome"
