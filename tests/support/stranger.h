// A stranger on the machine, for the security tests: a process that is not
// part of a run but does what any local user can do to it. /proc/net/tcp
// lists every TCP socket of the host with its state and its owner's uid, so
// any user sees the loopback ports a run listens on the moment they open;
// anyone may connect to them, write bytes and keep the connection open.
//
// To leave other processes of the test machine alone (other test runs of the
// same user), the stranger here only touches the listening sockets of one
// process tree, found through /proc/<pid>/fd. A real stranger of another uid
// cannot map sockets to processes, but it needs no such map: every new
// listening port owned by the run's uid is a rank's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "eplb/deadline.h"

namespace eplb::test {

// `root` and every process below it (from /proc/*/stat).
std::vector<pid_t> ProcessTree(pid_t root);

// A loopback TCP socket in LISTEN state and its inode.
struct ListeningSocket {
  int port = 0;
  unsigned long inode = 0;
};
// The loopback listening sockets of the host (/proc/net/tcp).
std::vector<ListeningSocket> LoopbackListeners();
// The socket inodes `pid` has open (/proc/<pid>/fd).
std::vector<unsigned long> SocketInodes(pid_t pid);

enum class StrangerMode {
  kFrame,    // one crafted Gloo frame: data for a slot no rank posted
  kGarbage,  // 4 KiB of random bytes
  kHold,     // connect and keep the connection open, sending nothing
  kEcho,     // play the peer: answer every receive the rank posts with the
             // bytes the rank itself sent in that slot (its sync tokens pass,
             // since every rank sends the same ones), as a Gloo peer would
};
StrangerMode ParseStrangerMode(const std::string& name);  // "frame", "garbage", "hold", "echo"

// Gloo 0.0~git20220518's TCP frame header (gloo/transport/tcp/pair.h, six
// size_t) announcing `length` bytes of data for unbound buffer slot `slot`,
// followed by that many bytes.
std::vector<char> CraftedGlooFrame(size_t slot, size_t length);

struct StrangerReport {
  int listeners_seen = 0;  // listening sockets of the tree noticed
  int connected = 0;       // connections made
  int sent = 0;            // connections written to
  std::string Describe() const;
};

// Until `until`: polls the host's listening sockets every `poll`, and
// connects to each new one of the process tree under `root`, then writes (or
// holds) as `mode` says. Ends at `until` or when `root` is gone; held
// connections stay open until then.
StrangerReport RunStranger(pid_t root, StrangerMode mode, Deadline until,
                           std::chrono::microseconds poll = std::chrono::microseconds(200),
                           const std::function<void(const std::string&)>& log = {});

}  // namespace eplb::test
