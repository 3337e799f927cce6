// A policy run over a sequence of loads, as the online balancer runs it:
// each step's placement (after slot preservation) is the next step's previous
// placement. What `eplb simulate` and the policy comparison bench print.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/load.h"
#include "eplb/placement.h"
#include "eplb/policy.h"

namespace eplb {

struct SequenceShape {
  int num_replicas = 0;
  int num_groups = 1;
  int num_nodes = 1;
  int num_ranks = 1;
};

struct SequenceStep {
  double balancedness = 1.0;     // model figure of the new placement under this step's load
  double home_share = 1.0;       // Locality::home_share of the new placement
  double nodes_per_group = 1.0;  // Locality::nodes_per_group
  int64_t transfers = 0;         // experts sent from the previous placement (transfer_count.h)
};

struct SequenceRun {
  std::vector<SequenceStep> steps;
  std::vector<Placement> placements;  // one per step
  int64_t total_transfers = 0;        // over all steps
  double mean_balancedness = 1.0;     // over all steps
};

// Runs `policy` (through ComputePlacement, so with slot preservation) on
// loads[0], loads[1], ... Step 0 starts from `initial` when given (its
// transfers count), else from nothing (0 transfers). Every load must have the
// same shape. Throws InvalidArgument on bad input, as ComputePlacement does.
SequenceRun RunSequence(const Policy& policy, std::span<const LoadMatrix> loads,
                        const SequenceShape& shape, const Placement* initial = nullptr);

}  // namespace eplb
