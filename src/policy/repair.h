// The repair search of policy "movement" (movement.cc says what it does and
// why): starting from the placement in force, the cheapest swaps and replica
// conversions that bring a layer's heaviest rank under a target.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace eplb::movement_detail {

class RepairSearch {
 public:
  RepairSearch();
  ~RepairSearch();
  RepairSearch(RepairSearch&&) noexcept;
  RepairSearch& operator=(RepairSearch&&) noexcept;

  // Starts from `previous` ([ranks][slots] expert ids) under `load` (one per
  // expert). Buffers are kept from one layer to the next.
  void Reset(std::span<const double> load, std::span<const int32_t> previous, int num_ranks);
  // Takes at most `max_actions` actions; true when the heaviest rank is at
  // or under `target`.
  bool Run(double target, int max_actions);
  int transfers() const;   // experts sent by the actions taken
  double max_load() const;  // the heaviest rank's load now
  const std::vector<int32_t>& items() const;  // the placement now

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eplb::movement_detail
