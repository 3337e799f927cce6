// Policy "locality": DeepSeek's node locality where it costs no balance.
// Groups get home nodes as in the hierarchical policy; replicas, heaviest
// first, go to their home node unless it is clearly heavier than the lightest
// rank elsewhere; swap refinement prefers swaps that keep every replica's
// home status and serves load off its home node only where balance needs it;
// last, swaps that bring replicas home while every rank stays within the
// balance ceiling.
#include "policy/packing.h"
#include "policy/policies.h"

namespace eplb {
namespace {

// Balance comes first: refinement runs until the heaviest rank is within
// 0.5% of the mean rank load (balancedness 0.995); swaps back home then keep
// every rank under that ceiling. Greedy packing keeps a replica home while the
// home node's lightest rank is within 5% of a mean rank load of the lightest
// rank anywhere (more slack keeps more home but costs refinement time).
constexpr packing::BalanceOptions kOptions{
    .keep_locality = true, .goal = 5e-3, .slack = 0.05, .ceiling = 5e-3};

class LocalityPolicy final : public Policy {
 public:
  std::string_view name() const override { return "locality"; }
  std::string_view description() const override {
    return "balance near the bound, keeping each expert group on its home node except where "
           "balance needs replicas elsewhere (global balance when groups % nodes != 0)";
  }
  Placement Rebalance(const PolicyInput& in) const override {
    return packing::BalanceAllLayers(in, kOptions);
  }
};

}  // namespace

std::unique_ptr<Policy> MakeLocalityPolicy() { return std::make_unique<LocalityPolicy>(); }

}  // namespace eplb
