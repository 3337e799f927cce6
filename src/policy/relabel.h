// The relabel step of policy "movement": the best placement found, with its
// ranks renamed to overlap the placement in force most (an assignment
// problem, solved with the Hungarian algorithm).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "policy/packing.h"

namespace eplb::movement_detail {

// Minimum-cost perfect assignment of rows to columns of an n x n matrix
// (row-major `cost`), O(n^3). Returns the column of each row.
std::vector<int> Assign(const std::vector<double>& cost, int n);

// The best placement's ranks renamed to overlap `previous` most. Writes the
// relabeled items to `out` and returns the experts it sends.
int Relabel(const packing::RankBins& best, std::span<const int32_t> previous, int num_experts,
            std::vector<int32_t>& out);

}  // namespace eplb::movement_detail
