// Node locality of a placement: how much of each expert group's load is
// served on one node. Group-limited routing sends a token to a few groups;
// when each group's replicas sit on one node, the token's all-to-all touches
// few nodes and stays on the fast intra-node link.
#pragma once

#include <vector>

#include "eplb/load.h"
#include "eplb/placement.h"

namespace eplb {

struct Locality {
  // Per layer: share of the layer's load served on its group's home node,
  // the node that serves the most of that group (a replica serves
  // load / replicas). 1.0 when every group is served by one node, as
  // DeepSeek's hierarchical placement does; an all-zero layer counts as 1.0.
  std::vector<double> home_share_per_layer;
  double home_share = 1.0;  // mean over layers
  // Per layer: mean over groups of the number of nodes holding at least one
  // replica of one of the group's experts (1.0 at best).
  std::vector<double> nodes_per_group_per_layer;
  double nodes_per_group = 1.0;  // mean over layers
};

// Throws InvalidArgument when experts do not divide into num_groups or ranks
// do not divide into num_nodes, or the load and placement disagree in shape.
Locality ComputeLocality(const LoadMatrix& load, const Placement& placement, int num_groups,
                         int num_nodes);

}  // namespace eplb
