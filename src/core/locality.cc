#include "core/locality.h"

#include <string>

#include "eplb/error.h"

namespace eplb {

Locality ComputeLocality(const LoadMatrix& load, const Placement& placement, int num_groups,
                         int num_nodes) {
  const int E = placement.num_experts;
  if (load.num_layers != placement.num_layers || load.num_experts != E)
    throw InvalidArgument("locality: load is " + std::to_string(load.num_layers) + " x " +
                          std::to_string(load.num_experts) + " but the placement is " +
                          std::to_string(placement.num_layers) + " x " + std::to_string(E));
  if (num_groups <= 0 || E % num_groups != 0)
    throw InvalidArgument("locality: " + std::to_string(E) + " experts do not divide into " +
                          std::to_string(num_groups) + " groups");
  if (num_nodes <= 0 || placement.num_ranks % num_nodes != 0)
    throw InvalidArgument("locality: " + std::to_string(placement.num_ranks) +
                          " ranks do not divide into " + std::to_string(num_nodes) + " nodes");
  const int group_size = E / num_groups;
  const int slots_per_node = placement.num_slots / num_nodes;
  Locality out;
  out.home_share_per_layer.resize(placement.num_layers);
  out.nodes_per_group_per_layer.resize(placement.num_layers);
  // served[g][n]: load of group g served on node n; present[g][n]: any replica.
  std::vector<double> served(static_cast<size_t>(num_groups) * num_nodes);
  std::vector<char> present(served.size());
  double share_sum = 0, span_sum = 0;
  for (int l = 0; l < placement.num_layers; ++l) {
    std::fill(served.begin(), served.end(), 0.0);
    std::fill(present.begin(), present.end(), 0);
    double total = 0;
    for (int e = 0; e < E; ++e) total += load.at(l, e);
    for (int p = 0; p < placement.num_slots; ++p) {
      const int e = placement.expert_at(l, p);
      const size_t cell = static_cast<size_t>(e / group_size) * num_nodes + p / slots_per_node;
      served[cell] += load.at(l, e) / placement.replicas(l, e);
      present[cell] = 1;
    }
    double home = 0;
    int spans = 0;
    for (int g = 0; g < num_groups; ++g) {
      double best = 0;
      for (int n = 0; n < num_nodes; ++n) {
        const size_t cell = static_cast<size_t>(g) * num_nodes + n;
        best = std::max(best, served[cell]);
        spans += present[cell];
      }
      home += best;
    }
    const double share = total > 0 ? home / total : 1.0;
    const double span = static_cast<double>(spans) / num_groups;
    out.home_share_per_layer[l] = share;
    out.nodes_per_group_per_layer[l] = span;
    share_sum += share;
    span_sum += span;
  }
  if (placement.num_layers > 0) {
    out.home_share = share_sum / placement.num_layers;
    out.nodes_per_group = span_sum / placement.num_layers;
  }
  return out;
}

}  // namespace eplb
