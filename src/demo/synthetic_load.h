// Synthetic expert loads that drift over time, for demos, simulations and
// tests: a skewed distribution per layer whose hot experts move slowly, so a
// placement balanced now is unbalanced later and rebalancing has work to do.
//
// Each layer has a base distribution over its experts: Zipf(skew) over a
// random permutation (seeded per layer), or a measured row (a load file).
// At step t the share of expert e is the base share of expert
// (e + shift) mod E, where shift = layer_offset + t / drift_period_steps moves
// one expert per period (interpolated linearly in between). Counts of one
// step are tokens_per_step * share with a deterministic +-noise per (step,
// rank, layer, expert), so every call with the same arguments gives the same
// numbers and ranks see different but similar loads.
//
// Pure: no clocks, no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/load.h"

namespace eplb {

struct SyntheticLoadOptions {
  int num_layers = 1;
  int num_experts = 1;
  double skew = 1.0;              // Zipf exponent of the base distribution
  double tokens_per_step = 4096;  // expert choices per layer per step (tokens x top-k)
  double drift_period_steps = 100;  // steps for the hot set to move by one expert; <= 0: no drift
  double noise = 0.1;             // relative +- noise of each count
  uint64_t seed = 1;
  // Measured loads to use as the base distribution instead of Zipf: row l
  // (modulo its layers) for layer l. Must have num_experts columns.
  const LoadMatrix* base = nullptr;
};

class SyntheticLoad {
 public:
  // Throws InvalidArgument on non-positive sizes, a negative skew / noise or
  // tokens, or a base matrix of another width (or all zero in a row).
  explicit SyntheticLoad(const SyntheticLoadOptions& options);

  int num_layers() const { return options_.num_layers; }
  int num_experts() const { return options_.num_experts; }

  // Expected share of each expert of `layer` at `step` (sums to 1).
  void Shares(int64_t step, int layer, std::span<double> out) const;
  // Token counts of one step on one rank (out: num_experts values).
  void Counts(int64_t step, int rank, int layer, std::span<int64_t> out) const;
  // Expected load of every layer at `step`, [layers][experts] in tokens.
  LoadMatrix Expected(int64_t step) const;

 private:
  SyntheticLoadOptions options_;
  std::vector<double> base_;  // [layers][experts], each row sums to 1
};

}  // namespace eplb
