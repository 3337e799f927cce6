// CountNodeTraffic (transfer_plan.h): a plan's wire moves within and
// between nodes.
#include "eplb/transfer_plan.h"

namespace eplb {

NodeTraffic& NodeTraffic::operator+=(const NodeTraffic& o) {
  experts_within_nodes += o.experts_within_nodes;
  experts_between_nodes += o.experts_between_nodes;
  bytes_within_nodes += o.bytes_within_nodes;
  bytes_between_nodes += o.bytes_between_nodes;
  return *this;
}

NodeTraffic CountNodeTraffic(const LayerPlan& plan, int ranks_per_node) {
  NodeTraffic t;
  for (const WireMove& m : plan.wire) {
    const bool between = ranks_per_node > 0 && m.src_rank / ranks_per_node != m.dst_rank / ranks_per_node;
    (between ? t.experts_between_nodes : t.experts_within_nodes) += 1;
    (between ? t.bytes_between_nodes : t.bytes_within_nodes) += plan.bytes_per_expert;
  }
  return t;
}

}  // namespace eplb
