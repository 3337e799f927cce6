// Communicator: moves registered byte ranges between ranks. Knows nothing
// about experts, layers or placements (DESIGN.md layer 3).
//
// One interface serves two-sided backends (gloo, nccl: the sender posts a
// send, the receiver a receive) and one-sided ones (nixl, cuda_ipc: the
// receiver reads from the sender's registered memory, the sender stays
// passive). To make that possible every rank passes the *same global list* of
// transfers to Execute (every rank derives it from the same plan without
// talking); each backend picks out the transfers that concern it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "eplb/export.h"
#include "eplb/deadline.h"
#include "eplb/memory.h"

namespace eplb {

// Index of a registered region. Regions are registered collectively in the
// same order on every rank, so RegionId k names "the same" region everywhere:
// a one-sided backend resolves (peer, k) to the peer's memory.
using RegionId = int32_t;

// One contiguous piece of bytes moving from (src_rank, src_region, src_offset)
// to (dst_rank, dst_region, dst_offset). src_rank != dst_rank.
struct EPLB_EXPORT Transfer {
  int src_rank = -1;
  RegionId src_region = -1;
  uint64_t src_offset = 0;
  int dst_rank = -1;
  RegionId dst_region = -1;
  uint64_t dst_offset = 0;
  uint64_t bytes = 0;
};

// What a communicator can do, to ask before registering memory rather than
// learn it from a failed registration.
struct EPLB_EXPORT CommunicatorCapabilities {
  bool host_memory = false;  // registers MemoryKind::kHost
  bool cuda_memory = false;  // registers MemoryKind::kCuda
  // The receiver reads from the sender's registered memory (nixl,
  // cuda_ipc); otherwise both post (gloo, nccl).
  bool one_sided = false;
  bool accepts(MemoryKind k) const { return k == MemoryKind::kHost ? host_memory : cuda_memory; }
};

class EPLB_EXPORT Communicator {
 public:
  virtual ~Communicator() = default;

  virtual std::string_view name() const = 0;  // "gloo", "nccl", "nixl", ...
  // The built-in backends answer from their entry in the backend table (by
  // name(), so a wrapper that forwards name() answers alike); one of an
  // engine's own, named otherwise, overrides this (the default: both
  // memory kinds, two-sided; its RegisterRegion has the last word).
  virtual CommunicatorCapabilities Capabilities() const;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Registers memory that transfers read from or write to. Collective: every
  // rank calls it the same number of times in the same order (sizes may
  // differ). One-sided backends exchange memory descriptors here.
  virtual RegionId RegisterRegion(const MemoryRegion& region, Deadline deadline) = 0;

  // Executes this rank's part of `transfers` (the same global list on every
  // rank): returns once every transfer into this rank has landed and every
  // transfer out of this rank has been consumed, so the source may be
  // overwritten (the fence one-sided backends need). Collective among the
  // ranks that appear in the list; a rank with nothing to do may return at once.
  // The transfers of one call run concurrently, in no defined order: on each
  // rank the bytes read by its sends must not overlap the bytes written by its
  // receives, nor two receives each other (a source is read as it is during
  // the call, which a concurrent write into it would race with; the migration
  // executor reads weights and writes staging, which never overlap).
  // Throws TimeoutError / Error naming the peer and operation on a missed
  // deadline or a lost peer; after an error the communicator may be rebuilt
  // internally and is usable again for the next Execute.
  virtual void Execute(std::span<const Transfer> transfers, Deadline deadline) = 0;
};

}  // namespace eplb
