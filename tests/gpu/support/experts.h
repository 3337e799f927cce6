// One rank's expert weights and staging slots for the GPU scenarios, filled
// with a fresh pattern each round, and the checks that every byte that was
// meant to move did.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/runtime.h"
#include "eplb/communicator.h"

namespace eplb::test {

// The pattern rank `rank` fills its weights with in round `round`.
uint64_t Seed(int rank, int round);

class ExpertSlots {
 public:
  // `experts` weights of `expert_bytes` each, in a region that starts
  // `lead_bytes` into its allocation (as a tensor inside an allocator's
  // block does), and as many staging slots plus 4 KiB for odd-sized moves.
  ExpertSlots(int device, int experts, size_t expert_bytes, size_t lead_bytes = 0);

  // Registers weights (region 0) and staging (region 1). Collective.
  void Register(Communicator& communicator, Deadline deadline);

  // Weights <- pattern Seed(rank, round); staging <- 0xAB bytes. Ordered on
  // `stream`, which it then waits for.
  void Prepare(int rank, int round, cudaStream_t stream, Deadline deadline);

  // Wrong words/bytes among the transfers into `rank` (weights of the
  // source rank in `round` -> staging here).
  uint64_t CountWrong(const std::vector<Transfer>& transfers, int rank, int round,
                      cudaStream_t stream, Deadline deadline);

  size_t expert_bytes() const { return expert_bytes_; }
  int experts() const { return experts_; }
  size_t staging_bytes() const { return staging_.bytes(); }

 private:
  int device_;
  int experts_;
  size_t expert_bytes_;
  size_t lead_bytes_;
  cuda::DeviceBuffer weights_allocation_;
  cuda::DeviceBuffer staging_;
  cuda::DeviceBuffer mismatches_;
  char* weights() const { return weights_allocation_.as<char>() + lead_bytes_; }
};

// Every rank pulls `per_rank` whole experts from the others into staging
// slots 0..per_rank-1 (sources rotate with `round`), plus, when `odd`, one
// unaligned 1000-byte piece into the tail of staging. The same list on every
// rank, as a plan would give.
std::vector<Transfer> ExchangeTransfers(int size, int experts, size_t expert_bytes, int per_rank,
                                        int round, bool odd);

}  // namespace eplb::test
