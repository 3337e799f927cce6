// Policy "movement": the placement in force, repaired just enough. Given the
// previous placement, each layer gets a placement whose balancedness is
// within a tolerance (default 0.5%) of the best this library finds (policy
// "balanced") and that sends as few experts over the wire as it can:
//
//   repair:   start from the previous placement (nothing sent) and, while the
//             heaviest rank is over the target, take the action with the
//             lowest wire cost per unit of load above the target it takes off
//             the ranks it changes: swapping two replicas between the heaviest
//             rank and another, or turning a spare replica of a cold expert
//             into one more replica of the heaviest rank's hottest expert.
//             Cost counts experts a rank gains that it did not hold before;
//             moving an expert back where it was is free. A swap that only
//             moves the excess to its partner takes nothing off; a conversion
//             unloads every holder of the hot expert (at 320 slots on 64
//             ranks: up to 28% fewer experts sent than counting the heaviest
//             rank alone).
//             The target is first the bound no placement beats (mean rank
//             load, hottest expert over its most replicas) / (1 - tolerance):
//             met, the best placement need not be computed at all. A swap
//             takes off at most what the heaviest rank holds above the
//             target, so the swaps that get it there at one cost are equal:
//             the first found is taken.
//   relabel:  only where the repair misses that: the best placement, which
//             sets the target it must meet instead, with its ranks renamed to
//             overlap the previous placement most (an assignment problem,
//             Hungarian algorithm); it always meets the target. Of the two,
//             the one sending fewer experts wins.
//
// Without a previous placement it is "balanced".
#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "policy/packing.h"
#include "policy/policies.h"
#include "policy/relabel.h"
#include "policy/repair.h"
#include "util/mutex.h"
namespace eplb {
namespace {

using movement_detail::Relabel;
using movement_detail::RepairSearch;

constexpr packing::BalanceOptions kBest{.goal = 5e-4};
// Repair keeps [rank][expert] tables: past this many cells only the
// relabelled best placement is offered.
constexpr size_t kMaxRepairCells = size_t{1} << 22;

class MovementPolicy final : public Policy {
 public:
  explicit MovementPolicy(double tolerance) : tolerance_(tolerance) {}

  std::string_view name() const override { return "movement"; }
  std::string_view description() const override {
    return "movement-aware: within 0.5% of the best balance found, send the fewest experts "
           "over the wire from the previous placement (\"balanced\" without one)";
  }

  Placement Rebalance(const PolicyInput& in) const override {
    if (in.previous == nullptr) return packing::BalanceAllLayers(in, kBest);
    const LoadMatrix& load = *in.load;
    const Placement& prev = *in.previous;
    Placement out = packing::ShapedPlacement(in);
    RunLayers(in, load.num_layers, [&](int begin, int end) {
      // Ranges may run at the same time: each takes buffers of its own, kept
      // by the policy across ranges and calls (allocating them per range
      // cost two threads 5% of a rebalance).
      std::unique_ptr<Scratch> scratch = TakeScratch();
      packing::Workspace& ws = scratch->ws;
      RepairSearch& repair = scratch->repair;
      std::vector<int32_t>& relabeled = scratch->relabeled;
      for (int l = begin; l < end; ++l) {
        const auto w = load.layer(l);
        const auto previous = prev.layer_phy2log(l);
        const auto chosen = out.layer_phy2log(l);
        const double total = std::accumulate(w.begin(), w.end(), 0.0);
        const double mean = total / in.num_ranks;
        // Repair keeps [rank][expert] tables; past kMaxRepairCells (absurd
        // shapes) only the relabelled best placement is offered.
        const bool small = static_cast<size_t>(in.num_ranks) * load.num_experts <= kMaxRepairCells;
        if (small) {
          // First towards a bound no placement beats: the mean rank load, and
          // the hottest expert over as many replicas as it can have. Meeting
          // it is within the tolerance of the best placement there is, so
          // the best one need not be computed.
          const double hottest = *std::max_element(w.begin(), w.end());
          const double bound =
              std::max(mean, hottest / (in.num_replicas - load.num_experts + 1));
          repair.Reset(w, previous, in.num_ranks);
          if (repair.Run(bound / (1 - tolerance_), 8 * in.num_ranks)) {
            std::copy(repair.items().begin(), repair.items().end(), chosen.begin());
            continue;
          }
        }
        // Otherwise the best placement found sets the target, and is a
        // candidate itself, relabelled.
        packing::BalanceLayer(w, in.num_replicas, in.num_ranks, in.num_groups, in.num_nodes, kBest,
                              ws);
        // balancedness >= best * (1 - tolerance)  <=>  max <= best_max / (1 - tolerance)
        const double target = std::max(ws.bins.MaxLoad() / (1 - tolerance_), mean);
        const int relabel_sends = Relabel(ws.bins, previous, load.num_experts, relabeled);
        const bool repaired = small && repair.max_load() <= target;
        const std::vector<int32_t>& items =
            repaired && repair.transfers() <= relabel_sends ? repair.items() : relabeled;
        std::copy(items.begin(), items.end(), chosen.begin());
      }
      GiveScratch(std::move(scratch));
    });
    out.Derive();
    return out;
  }

 private:
  // A range's buffers; the policy keeps as many as ranges ever ran at once.
  struct Scratch {
    packing::Workspace ws;
    RepairSearch repair;
    std::vector<int32_t> relabeled;
  };
  std::unique_ptr<Scratch> TakeScratch() const {
    util::MutexLock lock(&mu_);
    if (free_.empty()) return std::make_unique<Scratch>();
    auto s = std::move(free_.back());
    free_.pop_back();
    return s;
  }
  void GiveScratch(std::unique_ptr<Scratch> s) const {
    util::MutexLock lock(&mu_);
    free_.push_back(std::move(s));
  }
  mutable util::Mutex mu_;
  mutable std::vector<std::unique_ptr<Scratch>> free_ GUARDED_BY(mu_);
  double tolerance_;
};

}  // namespace

std::unique_ptr<Policy> MakeMovementPolicy(double tolerance) {
  return std::make_unique<MovementPolicy>(tolerance);
}

}  // namespace eplb
