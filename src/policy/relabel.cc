#include "policy/relabel.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace eplb::movement_detail {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// The assignment is O(ranks^3): past this many ranks the best placement keeps
// its own rank order.
constexpr int kMaxRelabelRanks = 512;

}  // namespace

std::vector<int> Assign(const std::vector<double>& cost, int n) {
  std::vector<double> u(n + 1, 0), v(n + 1, 0), way_min(n + 1);
  std::vector<int> p(n + 1, 0), way(n + 1, 0);
  std::vector<char> used(n + 1);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::fill(way_min.begin(), way_min.end(), kInf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int i0 = p[j0];
      double delta = kInf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double c = cost[static_cast<size_t>(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
        if (c < way_min[j]) way_min[j] = c, way[j] = j0;
        if (way_min[j] < delta) delta = way_min[j], j1 = j;
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          way_min[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> col_of_row(n);
  for (int j = 1; j <= n; ++j) col_of_row[p[j] - 1] = j - 1;
  return col_of_row;
}

int Relabel(const packing::RankBins& best, std::span<const int32_t> previous, int num_experts,
            std::vector<int32_t>& out) {
  const int P = best.num_ranks, S = best.slots;
  // The distinct experts of each rank of `best`.
  std::vector<int32_t> distinct_items;
  std::vector<int> first(P + 1, 0);
  std::vector<int64_t> seen(num_experts, -1);
  for (int i = 0; i < P; ++i) {
    first[i] = static_cast<int>(distinct_items.size());
    const int32_t* items = best.items_of(i);
    for (int k = 0; k < S; ++k)
      if (seen[items[k]] != i) seen[items[k]] = i, distinct_items.push_back(items[k]);
  }
  first[P] = static_cast<int>(distinct_items.size());
  // overlap(i, j): distinct experts of best rank i that previous rank j held.
  std::vector<int64_t> prev_stamp(num_experts, -1);
  auto overlap = [&](int i, int j) {
    int n = 0;
    for (int k = first[i]; k < first[i + 1]; ++k) n += prev_stamp[distinct_items[k]] == j;
    return n;
  };
  std::vector<int> to(P);
  std::iota(to.begin(), to.end(), 0);
  if (P <= kMaxRelabelRanks) {
    std::vector<double> cost(static_cast<size_t>(P) * P, 0.0);
    for (int j = 0; j < P; ++j) {
      for (int k = 0; k < S; ++k) prev_stamp[previous[j * S + k]] = j;
      for (int i = 0; i < P; ++i) cost[static_cast<size_t>(i) * P + j] = -overlap(i, j);
    }
    to = Assign(cost, P);
  }
  // Experts sent: each rank's distinct experts that its previous self lacked.
  std::vector<int> from(P);
  for (int i = 0; i < P; ++i) from[to[i]] = i;
  out.assign(static_cast<size_t>(P) * S, -1);
  int sends = 0;
  std::fill(prev_stamp.begin(), prev_stamp.end(), -1);
  for (int j = 0; j < P; ++j) {
    for (int k = 0; k < S; ++k) prev_stamp[previous[j * S + k]] = j;
    const int i = from[j];
    sends += (first[i + 1] - first[i]) - overlap(i, j);
    std::copy(best.items_of(i), best.items_of(i) + S, out.begin() + static_cast<size_t>(j) * S);
  }
  return sends;
}

}  // namespace eplb::movement_detail
