// Uses the installed libeplb.so through its public headers only: a placement
// from a small skewed load, its balancedness, and an eplb::InvalidArgument
// thrown inside the library and caught here (the type information crosses
// the library's boundary). Prints "consumer: OK" and exits 0 when all hold.
#include <cstdio>

#include "eplb/error.h"
#include "eplb/load.h"
#include "eplb/placement.h"
#include "eplb/policy.h"

int main() {
  eplb::LoadMatrix load(2, 16);
  for (int l = 0; l < 2; ++l)
    for (int e = 0; e < 16; ++e) load.at(l, e) = 1.0 + (e == 3 ? 40.0 : 0.0) + l;
  eplb::PolicyInput in;
  in.load = &load;
  in.num_replicas = 24;
  in.num_groups = 4;
  in.num_nodes = 2;
  in.num_ranks = 4;
  auto policy = eplb::MakePolicy("deepseek");
  eplb::Placement placement = eplb::ComputePlacement(*policy, in);
  const double balancedness = eplb::ComputeBalancedness(load, placement).mean;
  if (placement.num_slots != 24 || !(balancedness > 0.5)) {
    std::printf("consumer: bad placement (%d slots, balancedness %.3f)\n", placement.num_slots, balancedness);
    return 1;
  }
  try {
    eplb::PolicyInput bad = in;
    bad.num_replicas = 7;  // does not split over 4 ranks
    eplb::ComputePlacement(*policy, bad);
    std::printf("consumer: bad input was accepted\n");
    return 1;
  } catch (const eplb::InvalidArgument& e) {
    std::printf("consumer: bad input refused: %s\n", e.what());
  }
  std::printf("consumer: OK (24 slots, balancedness %.3f)\n", balancedness);
  return 0;
}
