// SwapBars: the bars of the repair search (repair.cc) by the cost of a swap,
// with checked indices.
#pragma once

#include <cassert>
#include <limits>

namespace eplb::movement_detail {

// The bars of the repair search (Repair::SetBars) by the cost of a swap. A
// swap has two sides; each costs -1..1 (-1: it leaves a slot whose expert
// returns, +1: it arrives where its expert was not), so a swap costs -2..2.
// kBarred is the cost of a side that may not move at all; every sum with it
// reads -inf, which no peak is under. The search reads bars by sums of side
// costs, so indices are checked here (in debug builds: the inner loop is hot).
class SwapBars {
 public:
  static constexpr int kMinSide = -1, kMaxSide = 1;
  static constexpr int8_t kBarred = 4;
  static constexpr int kMinCost = 2 * kMinSide, kMaxCost = 2 * kMaxSide;
  static_assert(kBarred + kMinSide > kMaxCost, "a barred side must never read a real bar");

  SwapBars() {
    for (int i = 0; i < kSize; ++i) bar_[i] = i <= kMaxCost - kMinCost ? 0 : -std::numeric_limits<double>::infinity();
  }
  // The bar of swaps of `cost` (-2..2), or -inf for a sum with kBarred.
  double of(int cost) const {
    assert(cost >= kMinCost && cost <= kBarred + kMaxSide);
    return bar_[cost - kMinCost];
  }
  void set(int cost, double bar) {
    assert(cost >= kMinCost && cost <= kMaxCost);
    bar_[cost - kMinCost] = bar;
  }
  // Bars of the swaps whose first side costs `side`, indexed by the second
  // side's cost (kMinSide..kMaxSide or kBarred).
  const double* Row(int side) const {
    assert(side >= kMinSide && side <= kMaxSide);
    return bar_ + side - kMinCost;
  }

 private:
  static constexpr int kSize = kBarred + kMaxSide - kMinCost + 1;
  double bar_[kSize];
};

// One layer's state during repair: items per rank and what each rank held
// before, so every action's wire cost is known exactly. Buffers are kept
// across layers (Reset), so a repair allocates nothing per layer.

}  // namespace eplb::movement_detail
