// Whether a peer's process still exists, as seen from this process: how a
// rank learns within a fraction of a second that a peer died in the middle
// of a transfer, when the transport itself would only notice at the deadline
// (Gloo's TCP pair fails the operations queued for a closed connection, not
// a receive it is already filling).
//
// A process is identified by its host and boot (as in host_identity.h), its
// PID namespace, its PID and the time it started, so a PID the kernel has
// handed to another process since is not taken for the peer. Only a process
// of the same host, boot and PID namespace can be checked; for any other the
// answer is kUnknown and the deadline decides.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace eplb::comm {

struct ProcessIdentity {
  std::string host;
  std::string boot_id;
  std::string pid_namespace;  // "pid:[4026531836]", or "" where unreadable
  int32_t pid = 0;
  uint64_t start_ticks = 0;   // /proc/<pid>/stat field 22: start time after boot

  std::vector<uint8_t> Encode() const;
  // Throws eplb::Error (layer `layer`, operation `operation`) naming `rank`
  // and `peer` on a malformed record.
  static ProcessIdentity Decode(std::span<const uint8_t> bytes, const std::string& layer,
                                const std::string& operation, int rank, int peer);
};

ProcessIdentity ThisProcess();

enum class Liveness {
  kAlive,    // the process exists and is not a zombie
  kGone,     // it exited (or is a zombie, or its PID belongs to another process now)
  kUnknown,  // on another host, boot or PID namespace: cannot be checked from here
};
Liveness CheckProcess(const ProcessIdentity& process);
const char* LivenessName(Liveness liveness);

}  // namespace eplb::comm
