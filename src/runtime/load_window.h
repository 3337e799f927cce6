// The sliding window of expert loads a Balancer keeps: per-step token counts
// of the last `window_steps` steps and their running sum.
//
// Each step's counts are added into an open step (Add), which CloseStep pushes
// into a ring, subtracting the step that leaves the window from the sum. One
// pass over [layers][experts] per step; memory 4 * window * layers * experts
// bytes (counts of one step and expert fit 32 bits).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace eplb::runtime {

class LoadWindow {
 public:
  // Throws InvalidArgument unless every size is positive.
  LoadWindow(int num_layers, int num_experts, int window_steps);

  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  int window_steps() const { return window_; }
  // Closed steps in the window (window_steps once full).
  int steps() const { return filled_; }

  // Adds counts of one layer to the open step. Throws InvalidArgument on a
  // layer out of range, a wrong number of counts, or a count outside
  // [0, 2^32).
  void Add(int layer, std::span<const int64_t> counts);
  // Closes the open step into the window.
  void CloseStep();
  // Sum over the window, [layers][experts].
  std::span<const int64_t> sum() const { return sum_; }

 private:
  int num_layers_, num_experts_, window_;
  size_t cells_;
  std::vector<uint32_t> open_;  // the step being recorded
  std::vector<uint32_t> ring_;  // [window][cells]
  std::vector<int64_t> sum_;
  int next_ = 0;    // ring position the next closed step goes to
  int filled_ = 0;
};

}  // namespace eplb::runtime
