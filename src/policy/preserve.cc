#include "policy/preserve.h"

#include <string>
#include <vector>

#include "eplb/error.h"

namespace eplb {

Placement PreserveSlots(const Placement& previous, const Placement& next) {
  auto shape = [](const Placement& p) {
    return std::to_string(p.num_layers) + " layers x " + std::to_string(p.num_experts) +
           " experts, " + std::to_string(p.num_slots) + " slots on " +
           std::to_string(p.num_ranks) + " ranks";
  };
  if (previous.num_layers != next.num_layers || previous.num_experts != next.num_experts ||
      previous.num_slots != next.num_slots || previous.num_ranks != next.num_ranks) {
    throw InvalidArgument("previous placement has " + shape(previous) + ", the new one has " +
                          shape(next) + "; slots can only be preserved between equal shapes");
  }
  Placement out = next;
  const int per_rank = next.slots_per_rank();
  // Per expert, a queue of the rank's new positions holding it, as a linked
  // list: head[e] -> link[j] -> ... ; head is reset only for experts touched.
  std::vector<int32_t> head(next.num_experts, -1), tail(next.num_experts, -1);
  std::vector<int32_t> link(per_rank);
  std::vector<char> claimed(per_rank), kept(per_rank);
  for (int l = 0; l < next.num_layers; ++l) {
    auto old_row = previous.layer_phy2log(l);
    auto new_row = next.layer_phy2log(l);
    auto out_row = out.layer_phy2log(l);
    for (int first = 0; first < next.num_slots; first += per_rank) {
      const int32_t* old_local = old_row.data() + first;
      const int32_t* new_local = new_row.data() + first;
      int32_t* out_local = out_row.data() + first;
      for (int j = 0; j < per_rank; ++j) {
        const int e = new_local[j];
        link[j] = -1;
        if (head[e] < 0) head[e] = j; else link[tail[e]] = j;
        tail[e] = j;
        claimed[j] = kept[j] = 0;
      }
      // Pass 1: every old slot keeps its expert if the rank still holds a copy.
      for (int s = 0; s < per_rank; ++s) {
        const int e = old_local[s];
        if (e < 0 || e >= next.num_experts || head[e] < 0) continue;
        const int j = head[e];
        head[e] = link[j];
        claimed[j] = kept[s] = 1;
        out_local[s] = e;
      }
      // Pass 2: the arriving experts, in order, fill the freed slots in order.
      int s = 0;
      for (int j = 0; j < per_rank; ++j) {
        if (claimed[j]) continue;
        while (kept[s]) ++s;
        out_local[s++] = new_local[j];
      }
      for (int j = 0; j < per_rank; ++j) head[new_local[j]] = -1;
    }
  }
  out.Derive();
  return out;
}

}  // namespace eplb
