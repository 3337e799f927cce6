#include "core/transfer_count.h"

#include <string>

#include "eplb/error.h"

namespace eplb {

std::vector<int64_t> CountTransfersPerLayer(const Placement& before, const Placement& after) {
  if (before.num_layers != after.num_layers || before.num_experts != after.num_experts ||
      before.num_slots != after.num_slots || before.num_ranks != after.num_ranks)
    throw InvalidArgument("transfers: placements differ in shape (" +
                          std::to_string(before.num_layers) + "x" +
                          std::to_string(before.num_slots) + " on " +
                          std::to_string(before.num_ranks) + " ranks vs " +
                          std::to_string(after.num_layers) + "x" +
                          std::to_string(after.num_slots) + " on " +
                          std::to_string(after.num_ranks) + ")");
  const int per_rank = before.slots_per_rank();
  std::vector<int64_t> out(before.num_layers, 0);
  // held[e] == stamp: the rank being counted held (or already gained) e.
  std::vector<int64_t> held(before.num_experts, -1);
  int64_t stamp = 0;
  for (int l = 0; l < before.num_layers; ++l) {
    for (int r = 0; r < before.num_ranks; ++r, ++stamp) {
      for (int k = 0; k < per_rank; ++k) held[before.expert_at(l, r * per_rank + k)] = stamp;
      for (int k = 0; k < per_rank; ++k) {
        const int e = after.expert_at(l, r * per_rank + k);
        if (held[e] != stamp) {
          held[e] = stamp;
          ++out[l];
        }
      }
    }
  }
  return out;
}

int64_t CountTransfers(const Placement& before, const Placement& after) {
  int64_t total = 0;
  for (int64_t v : CountTransfersPerLayer(before, after)) total += v;
  return total;
}

}  // namespace eplb
