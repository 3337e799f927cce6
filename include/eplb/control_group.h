// ControlGroup: small host-memory collectives among the ranks of a run, each
// with a deadline. The runtime sums expert loads over ranks with it and agrees
// that every rank is ready before committing a migration. Not for bulk data:
// expert weights move through a Communicator.
//
// Every call is collective: every rank of the group makes the same calls in
// the same order. A rank that calls something else (or with another element
// count) makes every rank of that call fail with an Error naming it. A missed
// deadline or a lost peer throws TimeoutError / Error naming the peer and the
// operation; the group is then rebuilt at the next call (collectively), so a
// stalled peer costs one failed call, not the group.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "eplb/export.h"
#include "eplb/deadline.h"

namespace eplb {

class EPLB_EXPORT ControlGroup {
 public:
  virtual ~ControlGroup() = default;

  virtual std::string_view name() const = 0;  // backend: "gloo", ...
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Returns once every rank has entered the barrier.
  virtual void Barrier(Deadline deadline) = 0;

  // values[i] <- sum over ranks of values[i]. Every rank passes the same
  // count. Summed in rank order, so every rank gets the same bits.
  virtual void AllReduceSum(std::span<double> values, Deadline deadline) = 0;
  virtual void AllReduceSum(std::span<int64_t> values, Deadline deadline) = 0;

  // Every rank's blob, indexed by rank; blobs may differ in size.
  virtual std::vector<std::vector<uint8_t>> AllGather(std::span<const uint8_t> blob,
                                                      Deadline deadline) = 0;
};

}  // namespace eplb
