#!/usr/bin/env bash
# The multi-host cases of ctest (MultiHost.*): eplb demo on 2 hosts x 2 ranks
# made of namespaces (scripts/multihost_demo.sh), checked from its summary
# and its JSON report. Skips (exit 77, with the reason) where namespaces
# cannot be made (not root, no CAP_SYS_ADMIN, tools missing).
#
#   multihost_test.sh CASE EPLB
#
# CASE:
#   demo            the demo verifies every expert; the ranks see two hosts and
#                   listen on their own addresses only; bytes between hosts counted
#   shaped          the same with every link shaped to 10 Gbit/s, over gloo
#   link-cut-gloo   host 1's link cut in the middle of the first migration: host
#   link-cut-nixl   0's ranks fail within deadline + 1 s naming ranks 2 and 3, with
#                   every slot still holding what the placement in force names;
#                   host 1's ranks fail too, bounded
#   host-killed     every process of host 1 killed mid-migration: host 0's ranks
#                   fail within deadline + 1 s naming ranks 2 and 3, nothing half-written
set -uo pipefail
case_name=$1
eplb=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../../scripts/lib/multihost.sh
source "$root/scripts/lib/multihost.sh"
if ! why=$(mh_can_run); then
  echo "SKIPPED: cannot make hosts from namespaces here: $why"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/eplb-multihost-test-XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
get() { sed -n "s/^$1=//p" "$work/summary" | head -n 1; }
# The demo's default deadline: a shorter one fails healthy steps on a machine so
# loaded that a rank waits a second for the CPU (seen at load average 15 on 2 cores).
deadline_ms=5000

run() {
  echo "+ scripts/multihost_demo.sh $*"
  bash "$root/scripts/multihost_demo.sh" --eplb "$eplb" --summary "$work/summary" "$@" >"$work/stdout" 2>"$work/stderr"
  status=$?
  cat "$work/stderr"
  left=$(ip netns list 2>/dev/null | grep -c '^eplbmh-' || true)
  [ "$left" = 0 ] || fail "namespaces left behind: $(ip netns list | grep '^eplbmh-' | tr '\n' ' ')"
  [ -f "$work/summary" ] || { fail "no summary written (exit $status)"; return 1; }
  local wild
  wild=$(get wildcard_listeners)
  [ -z "$wild" ] || fail "a rank listened on every interface: $wild"
  for a in $(get listen_addresses); do
    [[ $a == "${MH_SUBNET}".* ]] || fail "a rank listened on $a, outside its host's subnet $MH_SUBNET.0/24"
  done
}

# A healthy run: exit 0, result OK, every expert verified, two hosts seen.
check_ok() {
  [ "$status" = 0 ] || fail "exit status $status, expected 0"
  /usr/bin/python3 - "$work/stdout" <<'EOF' || fail "the JSON report does not hold what it should (above)"
import json, sys
r = json.load(open(sys.argv[1]))
problems = []
def want(cond, what):
    if not cond: problems.append(what)
want(r["ok"] is True, "ok is not true")
want(r["mismatches"] == 0, f"{r['mismatches']} mismatches")
h = r["hosts"]
want(h["distinct"] == 2 and not h["simulated"], f"hosts: {h}")
want(h["host"][0] == h["host"][1] and h["host"][2] == h["host"][3] and h["host"][0] != h["host"][2],
     f"ranks 0-1 and 2-3 should share a host each: {h['host']}")
want(all(not l.startswith("127.") for l in h["listen"]), f"a rank listens on loopback: {h['listen']}")
ok = [c for c in r["rebalances"] if c["ok"]]
want(len(ok) >= 1, "no rebalance completed")
for c in ok:
    want(c["bytes_within_nodes"] + c["bytes_between_nodes"] == c["bytes_moved"],
         f"cycle {c['cycle']}: within + between != moved")
want(r["bytes_between_nodes"] > 0, "nothing moved between hosts")
want(r["bytes_within_nodes"] + r["bytes_between_nodes"] == r["bytes_moved"], "totals do not add up")
for p in problems: print("report:", p)
print(f"report: {len(ok)} rebalances, {r['bytes_moved']/1e6:.1f} MB moved, "
      f"{r['bytes_between_nodes']/1e6:.1f} MB between hosts, communicator {r['communicator']}")
sys.exit(1 if problems else 0)
EOF
}

# A fault on host 1: host 0's ranks fail in time, naming ranks 2 and 3,
# with every slot still as the placement in force says.
check_fault() {
  local bound_ms=$1
  [ "$status" != 0 ] || fail "the run succeeded although host 1 was lost"
  [ -n "$(get fault_time)" ] || { fail "the fault never happened (no migration started?)"; return; }
  local r after err
  for r in 0 1; do
    [ "$(get "rank${r}_status")" = 1 ] || fail "rank $r: status $(get "rank${r}_status"), expected 1 (failed)"
    after=$(get "rank${r}_after_fault")
    err=$(get "rank${r}_error")
    if [ -z "$after" ] || ! awk -v a="$after" -v b="$bound_ms" 'BEGIN { exit !(a * 1000 <= b) }'; then
      fail "rank $r ended ${after:-?} s after the fault, more than $bound_ms ms"
    fi
    # Named as lost (a step's timeout or lost connection), or as not
    # arriving with no note (a rebuild the failure led to).
    [[ $err == *"ranks 2, 3 "* ]] || fail "rank $r's error does not name ranks 2 and 3: $err"
    # The fault came in the middle of the first migration: the rank failed
    # with it in flight, or its balancer abandoned it before the engine's
    # step noticed (both wait the deadline); then every slot as the maps say.
    grep -qE "a migration in flight: cycle 1,|rebalance cycle 1 abandoned in the migration of MoE layer" \
      "$MH_DIR_KEPT/rank$r.log" 2>/dev/null || fail "rank $r: the fault did not come during the first migration"
    grep -q "every slot checked after the failure: [0-9]* slots, 0 hold another" "$MH_DIR_KEPT/rank$r.log" \
      2>/dev/null || fail "rank $r: no check after the failure that found every slot as the maps say"
  done
}

kept_dir() { sed -n 's/.*kept in \(.*\)$/\1/p' "$work/stderr" | tail -n 1; }
common=(--hosts 2 --ranks-per-host 2 --timeout 120)
case "$case_name" in
  demo)
    run "${common[@]}" --steps 500 --interval 200 --layers 16 --json
    check_ok
    ;;
  shaped)
    run "${common[@]}" --link-gbit 10 --communicator gloo --steps 500 --interval 200 --layers 16 --json
    check_ok
    ;;
  link-cut-gloo | link-cut-nixl)
    comm=${case_name#link-cut-}
    if [ "$comm" = nixl ] && ! "$eplb" info --json | /usr/bin/python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["nixl"]["available"] else 1)'; then
      echo "SKIPPED: NIXL is not installed (scripts/setup.sh installs it)"
      [ "${EPLB_REQUIRE_NIXL:-0}" = 1 ] && { echo "FAIL: EPLB_REQUIRE_NIXL=1 but NIXL is missing"; exit 1; }
      exit 77
    fi
    # 1 Gbit/s links: the first migration (about 190 MB, 120 MB of it between
    # the hosts) takes about 2 s, so the cut 0.3 s after it starts lands in it.
    run "${common[@]}" --communicator "$comm" --link-gbit 1 --deadline-ms "$deadline_ms" --cut-link 1 --fault-delay 0.3
    MH_DIR_KEPT=$(kept_dir)
    check_fault $((deadline_ms + 1000))
    # Host 1 cannot reach the store either: its ranks fail at the deadline,
    # plus the store's own 5 s command timeout when they record leaving.
    for r in 2 3; do
      s=$(get "rank${r}_status") after=$(get "rank${r}_after_fault")
      [ "$s" = 1 ] || fail "rank $r (the host cut off): status $s, expected 1"
      awk -v a="${after:-999}" -v b=$((deadline_ms + 7000)) 'BEGIN { exit !(a * 1000 <= b) }' ||
        fail "rank $r (the host cut off) ended ${after:-?} s after the cut, more than deadline + 7 s"
    done
    [ -n "$MH_DIR_KEPT" ] && rm -rf "$MH_DIR_KEPT"
    ;;
  host-killed)
    run "${common[@]}" --communicator gloo --link-gbit 1 --deadline-ms "$deadline_ms" --kill-host 1 --fault-delay 0.3
    MH_DIR_KEPT=$(kept_dir)
    check_fault $((deadline_ms + 1000))
    for r in 2 3; do
      [ "$(get "rank${r}_status")" = killed ] || fail "rank $r should have been killed with its host"
    done
    [ -n "$MH_DIR_KEPT" ] && rm -rf "$MH_DIR_KEPT"
    ;;
  *)
    echo "unknown case '$case_name'" >&2
    exit 2
    ;;
esac
if [ "$failures" != 0 ]; then
  echo "--- the demo's stdout:"
  tail -n 30 "$work/stdout"
  echo "$case_name: $failures check(s) failed"
  exit 1
fi
echo "$case_name: every check passed"
