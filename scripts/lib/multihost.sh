# Hosts made of Linux namespaces on this machine, for running eplb's ranks as
# if on separate machines (sourced by scripts/multihost_demo.sh and
# tests/multihost/*.sh; needs root).
#
# Each host is a network namespace with one veth link ("eth0") to a bridge
# that lives in a namespace of its own (the switch), so nothing touches this
# machine's own network: the subnet (EPLB_MH_SUBNET, default 10.231.7) exists
# only inside these namespaces and has no route beyond the bridge. The
# processes of a host run in their own UTS namespace (their own host name:
# eplb's host identity tells the hosts apart), PID namespace and mount
# namespace (a /proc and a /dev/shm of their own: shared-memory segments,
# such as the cuda_ipc fence's, are not seen across hosts), as on separate
# machines: killing the host's first process kills every process of the
# host. The store (redis-server) runs on a host of its own.
#
#   mh_init HOSTS RANKS_PER_HOST     names, addresses, the run directory
#   mh_setup                         namespaces, bridge, links (mh_cleanup on exit)
#   mh_shape GBIT                    every host's link shaped both ways (tc tbf)
#   mh_start_store                   redis-server on the store host, waited for
#   mh_start_host H CMD...           CMD as host H's first process, in background
#   mh_rank_env RANK                 the launcher's environment of one rank
#   mh_link_down H                   cuts host H's link
#   mh_kill_host H                   kills every process of host H
#   mh_cleanup                       kills what was started, removes the namespaces

MH_SUBNET=${EPLB_MH_SUBNET:-10.231.7}
MH_STORE_PORT=6379
MH_NAMESPACES=()   # created, removed by mh_cleanup (in reverse)
MH_PIDS=()         # first processes of hosts and the store, killed by mh_cleanup
declare -A MH_HOST_PID=()

mh_log() { echo "multihost: $*" >&2; }

# Whether this process can make the namespaces; prints why not.
mh_can_run() {
  if [ "$(id -u)" != 0 ]; then echo "not root (network namespaces need CAP_SYS_ADMIN)"; return 1; fi
  local tool
  for tool in ip tc unshare redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool not found (scripts/setup.sh installs it)"; return 1; }
  done
  local probe="eplbmh-probe-$$" out
  if ! out=$(ip netns add "$probe" 2>&1); then echo "cannot create a network namespace: $out"; return 1; fi
  if ! out=$(ip netns exec "$probe" unshare --uts --pid --fork --mount-proc true 2>&1); then
    ip netns del "$probe" 2>/dev/null
    echo "cannot create UTS/PID/mount namespaces: $out"
    return 1
  fi
  ip netns del "$probe"
}

mh_init() {
  MH_HOSTS=$1
  MH_RANKS_PER_HOST=$2
  MH_WORLD=$((MH_HOSTS * MH_RANKS_PER_HOST))
  if [ "$MH_HOSTS" -lt 1 ] || [ "$MH_HOSTS" -gt 200 ]; then mh_log "--hosts must be in [1, 200]"; return 2; fi
  if [ "$MH_RANKS_PER_HOST" -lt 1 ]; then mh_log "--ranks-per-host must be at least 1"; return 2; fi
  # Names carry this shell's PID: runs side by side never share one, and a
  # run that was killed outright is recognised by a PID that is gone.
  MH_PREFIX="eplbmh-$$"
  MH_SWITCH="$MH_PREFIX-sw"
  MH_STORE_NS="$MH_PREFIX-store"
  MH_STORE_ADDR="$MH_SUBNET.250"
  MH_RUN_ID="multihost-$$"
  MH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/eplb-multihost-XXXXXX")
}

mh_host_ns() { echo "$MH_PREFIX-h$1"; }
mh_host_addr() { echo "$MH_SUBNET.$(($1 + 1))"; }
mh_host_name() { echo "eplb-host$1"; }

# Namespaces left by runs that were killed before they could clean up (their
# PID is gone): only names this script makes.
mh_remove_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^eplbmh-[0-9]+-' || true); do
    pid=${ns#eplbmh-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null && mh_log "removed $ns, left by a run that was killed (pid $pid)"
    fi
  done
}

mh_add_ns() {
  ip netns add "$1"
  MH_NAMESPACES+=("$1")
  ip -n "$1" link set lo up
}

# A veth from namespace $1 (as eth0, address $2) to the switch (as $3).
mh_add_link() {
  ip -n "$1" link add eth0 type veth peer name "$3" netns "$MH_SWITCH"
  ip -n "$MH_SWITCH" link set "$3" master br0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
}

mh_setup() {
  mh_remove_stale
  mh_add_ns "$MH_SWITCH"
  ip -n "$MH_SWITCH" link add br0 type bridge
  ip -n "$MH_SWITCH" link set br0 up
  local h
  for ((h = 0; h < MH_HOSTS; h++)); do
    mh_add_ns "$(mh_host_ns "$h")"
    mh_add_link "$(mh_host_ns "$h")" "$(mh_host_addr "$h")" "h$h"
  done
  mh_add_ns "$MH_STORE_NS"
  mh_add_link "$MH_STORE_NS" "$MH_STORE_ADDR" store
}

# Every host's link limited to $1 Gbit/s in both directions: host -> switch
# on the host's eth0, switch -> host on the switch's port. The bucket holds
# 1 ms at that rate (at least 256 KiB: a GSO packet of 64 KiB must fit).
mh_shape() {
  local gbit=$1 burst h
  burst=$(awk -v g="$gbit" 'BEGIN { b = g * 1e9 / 8 / 1000; if (b < 262144) b = 262144; printf "%d", b }')
  for ((h = 0; h < MH_HOSTS; h++)); do
    tc -n "$(mh_host_ns "$h")" qdisc add dev eth0 root tbf rate "${gbit}gbit" burst "$burst" latency 50ms
    tc -n "$MH_SWITCH" qdisc add dev "h$h" root tbf rate "${gbit}gbit" burst "$burst" latency 50ms
  done
}

# The store: redis-server on the store host, in a PID namespace of its own.
mh_start_store() {
  ip netns exec "$MH_STORE_NS" unshare --pid --fork --kill-child --mount-proc \
    redis-server --bind "$MH_STORE_ADDR" --port "$MH_STORE_PORT" --save '' --appendonly no \
    --protected-mode no --daemonize no >"$MH_DIR/redis.log" 2>&1 &
  MH_PIDS+=($!)
  local i
  for ((i = 0; i < 100; i++)); do
    if ip netns exec "$(mh_host_ns 0)" timeout 2 redis-cli -h "$MH_STORE_ADDR" -p "$MH_STORE_PORT" ping \
        2>/dev/null | grep -q PONG; then
      return 0
    fi
    sleep 0.1
  done
  mh_log "redis-server on $MH_STORE_ADDR:$MH_STORE_PORT did not answer within 10 s:"
  tail -n 5 "$MH_DIR/redis.log" >&2
  return 1
}

# The environment a launcher gives rank $1 (torchrun's variables and eplb's
# store): everything a rank learns about the run comes from here.
mh_rank_env() {
  local rank=$1 host=$(($1 / MH_RANKS_PER_HOST))
  echo "RANK=$rank"
  echo "WORLD_SIZE=$MH_WORLD"
  echo "LOCAL_RANK=$((rank % MH_RANKS_PER_HOST))"
  echo "LOCAL_WORLD_SIZE=$MH_RANKS_PER_HOST"
  echo "GROUP_RANK=$host"
  echo "MASTER_ADDR=$(mh_host_addr 0)"
  echo "EPLB_STORE=redis://$MH_STORE_ADDR:$MH_STORE_PORT"
  echo "EPLB_RUN_ID=$MH_RUN_ID"
}

# Runs CMD... as host $1's first process (its own host name, PID and mount
# namespaces inside the host's network namespace), in the background; the
# PID is MH_HOST_PID[$1]. When it ends every process of the host is killed.
mh_start_host() {
  local h=$1
  shift
  ip netns exec "$(mh_host_ns "$h")" unshare --uts --pid --fork --kill-child --mount-proc \
    bash -c 'hostname "$1" && mount -t tmpfs -o mode=1777 tmpfs /dev/shm && shift && exec "$@"' \
    host "$(mh_host_name "$h")" "$@" &
  MH_HOST_PID[$h]=$!
  MH_PIDS+=($!)
}

mh_link_down() { ip -n "$(mh_host_ns "$1")" link set eth0 down; }

mh_kill_host() {
  local pid=${MH_HOST_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true  # reaped here: bash reports the kill on this stderr
}

mh_cleanup() {
  local pid i
  for pid in "${MH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 30; i++)); do
    local alive=0
    for pid in "${MH_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${MH_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${MH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  MH_PIDS=()
  for ((i = ${#MH_NAMESPACES[@]} - 1; i >= 0; i--)); do
    local ns=${MH_NAMESPACES[$i]}
    # Processes started in the namespace by other means (none should be left).
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || mh_log "could not remove namespace $ns"
  done
  MH_NAMESPACES=()
}
