// Counters shared by the ranks of one node through a POSIX shared-memory
// segment: the fence of the cuda_ipc communicator. A store round trip costs
// milliseconds; these flags are seen within microseconds, which matters when
// a layer's whole transfer takes about one millisecond over NVLink.
//
// Each rank writes only its own counters and reads everyone's. A rank keeps
// one counter of each kind per peer (pairs of ranks count their transfers
// separately, so ranks that have nothing to exchange need not meet). Counters
// only grow (they hold epoch numbers), so a reader waits for "at least n".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "eplb/deadline.h"
#include "eplb/store.h"

namespace eplb::cuda_ipc {

class NodeFlags {
 public:
  enum Counter : int {
    kReady = 0,   // [peer]: epoch with that peer whose sources this rank has made final
    kDone = 1,    // [peer]: epoch with that peer whose reads by this rank have landed
    kFailed = 2,  // [peer]: last epoch with that peer this rank abandoned
    kClosed = 3,  // [any]: 1 once this rank has unmapped its peers' memory
    kNumCounters = 4,
  };

  // Collective over `size` ranks. Rank 0 creates the segment and publishes its
  // name under `<key_prefix>/flags`; the others map it and check in under
  // `<key_prefix>/flags_attached/<rank>`; rank 0 then unlinks the name (the
  // mappings stay), so nothing is left behind in /dev/shm. A rank on another
  // node cannot map it: Join throws Error (layer "cuda_ipc") naming the rank
  // that failed; TimeoutError when a peer does not show up by `deadline`.
  static std::unique_ptr<NodeFlags> Join(Store& store, const std::string& key_prefix, int rank,
                                         int size, Deadline deadline);
  ~NodeFlags();
  NodeFlags(const NodeFlags&) = delete;
  NodeFlags& operator=(const NodeFlags&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Stores `value` into this rank's counter about `peer` (release order:
  // writes made before it are visible to a rank that reads the new value).
  void Set(Counter counter, int peer, uint64_t value);
  // `rank`'s counter about `peer`.
  uint64_t Get(int rank, Counter counter, int peer) const;

  // True when `rank`'s process is known to have exited. Only answerable when
  // both processes share a PID namespace; false when it cannot tell.
  bool PeerExited(int rank) const;

 private:
  struct Segment;
  NodeFlags(int rank, int size, void* mapping, size_t bytes);
  struct Slot;
  Slot slot(int rank) const;

  int rank_;
  int size_;
  void* mapping_;
  size_t bytes_;
};

}  // namespace eplb::cuda_ipc
