#include "policy/sequence.h"

#include "eplb/error.h"
#include "core/locality.h"
#include "core/transfer_count.h"

namespace eplb {

SequenceRun RunSequence(const Policy& policy, std::span<const LoadMatrix> loads,
                        const SequenceShape& shape, const Placement* initial) {
  if (loads.empty()) throw InvalidArgument("sequence: no loads given");
  SequenceRun run;
  run.placements.reserve(loads.size());  // `previous` points into it
  const Placement* previous = initial;
  double balance_sum = 0;
  for (size_t k = 0; k < loads.size(); ++k) {
    PolicyInput in;
    in.load = &loads[k];
    in.num_replicas = shape.num_replicas;
    in.num_groups = shape.num_groups;
    in.num_nodes = shape.num_nodes;
    in.num_ranks = shape.num_ranks;
    in.previous = previous;
    Placement next = ComputePlacement(policy, in);
    SequenceStep step;
    step.balancedness = ComputeBalancedness(loads[k], next).mean;
    // Locality needs groups that split the experts and nodes that split the
    // ranks; where they do not, the placement has no locality to report.
    if (loads[k].num_experts % shape.num_groups == 0 && shape.num_ranks % shape.num_nodes == 0) {
      const Locality loc = ComputeLocality(loads[k], next, shape.num_groups, shape.num_nodes);
      step.home_share = loc.home_share;
      step.nodes_per_group = loc.nodes_per_group;
    }
    if (previous != nullptr) step.transfers = CountTransfers(*previous, next);
    run.total_transfers += step.transfers;
    balance_sum += step.balancedness;
    run.steps.push_back(step);
    run.placements.push_back(std::move(next));
    previous = &run.placements.back();
  }
  run.mean_balancedness = balance_sum / static_cast<double>(loads.size());
  return run;
}

}  // namespace eplb
