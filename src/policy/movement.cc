// Policy "movement": the placement in force, repaired just enough. Given the
// previous placement, each layer gets a placement whose balancedness is
// within a tolerance (default 0.5%) of the best this library finds (policy
// "balanced") and that sends as few experts over the wire as it can. Two
// candidates per layer, the one sending fewer experts wins:
//
//   repair:   start from the previous placement (nothing sent) and, while the
//             heaviest rank is over the target, take the action with the
//             lowest wire cost per unit of load it takes off that rank:
//             swapping two replicas between ranks, or turning a spare replica
//             of a cold expert into one more replica of a hot expert of the
//             heaviest rank. Cost counts experts a rank gains that it did not
//             hold before; moving an expert back where it was is free.
//   relabel:  the best placement with its ranks renamed to overlap the
//             previous placement most (an assignment problem, Hungarian
//             algorithm), which always meets the target.
//
// Without a previous placement it is "balanced".
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "policy/packing.h"
#include "policy/policies.h"

namespace eplb {
namespace {

constexpr packing::BalanceOptions kBest{.goal = 5e-4};
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr size_t kMaxRepairCells = size_t{1} << 22;
// The assignment is O(ranks^3): past this many ranks the best placement keeps
// its own rank order.
constexpr int kMaxRelabelRanks = 512;

// One layer's state during repair: items per rank and what each rank held
// before, so every action's wire cost is known exactly.
class Repair {
 public:
  Repair(std::span<const double> load, std::span<const int32_t> previous, int num_ranks)
      : W_(load),
        E_(static_cast<int>(load.size())),
        P_(num_ranks),
        S_(static_cast<int>(previous.size()) / num_ranks),
        item_(previous.begin(), previous.end()),
        count_(E_, 0),
        load_(P_, 0.0),
        prev_has_(static_cast<size_t>(P_) * E_, 0),
        has_(static_cast<size_t>(P_) * E_, 0) {
    for (int32_t e : item_) ++count_[e];
    for (int r = 0; r < P_; ++r)
      for (int k = 0; k < S_; ++k) {
        const int e = item_[r * S_ + k];
        prev_has_[Cell(r, e)] = 1;
        ++has_[Cell(r, e)];
      }
    RecomputeLoads();
  }

  // Repairs until the heaviest rank is at most `target`; returns whether it
  // got there.
  bool Run(double target, int max_actions) {
    const double total = std::accumulate(load_.begin(), load_.end(), 0.0);
    eps_ = total * 1e-12 + 1e-300;
    for (int step = 0; step < max_actions; ++step) {
      const int h = static_cast<int>(std::max_element(load_.begin(), load_.end()) - load_.begin());
      if (load_[h] <= target) return true;
      Action best;
      Lightest(8, light_);
      ConsiderSwaps(h, target, best);
      ConsiderReplicas(h, target, best);
      if (best.kind == Action::kNone) return false;
      Apply(best);
    }
    return *std::max_element(load_.begin(), load_.end()) <= target;
  }

  int transfers() const { return transfers_; }
  double max_load() const { return *std::max_element(load_.begin(), load_.end()); }
  const std::vector<int32_t>& items() const { return item_; }

 private:
  struct Action {
    enum Kind { kNone, kSwap, kReplicate } kind = kNone;
    int h = -1, i = -1, r = -1, j = -1;  // swap: slot i of h <-> slot j of r;
                                         // replicate: slot j of r becomes expert i
    int cost = 0;
    double peak = kInf;
    double score = kInf;
  };

  size_t Cell(int r, int e) const { return static_cast<size_t>(r) * E_ + e; }
  double Weight(int e) const { return W_[e] / count_[e]; }

  void RecomputeLoads() {
    std::fill(load_.begin(), load_.end(), 0.0);
    slot_w_.resize(item_.size());
    for (int r = 0; r < P_; ++r)
      for (int k = 0; k < S_; ++k) {
        slot_w_[r * S_ + k] = Weight(item_[r * S_ + k]);
        load_[r] += slot_w_[r * S_ + k];
      }
  }

  // Wire cost of rank r gaining / losing one copy of e.
  int Arrive(int r, int e) const { return has_[Cell(r, e)] == 0 && !prev_has_[Cell(r, e)]; }
  int Leave(int r, int e) const {
    return has_[Cell(r, e)] == 1 && !prev_has_[Cell(r, e)] ? -1 : 0;
  }

  // Lower is better: free actions first (by cost, then peak), then by cost
  // per unit of load taken off the heaviest rank (capped at what it needs).
  double Score(int cost, double peak, double lh, double target) const {
    if (cost <= 0) return cost - 1.0 + peak / (lh + 1e-300) * 1e-3;
    const double gain = lh - std::max(peak, target);
    return gain > eps_ ? cost / gain : kInf;
  }

  void Offer(const Action& a, Action& best) const {
    if (a.score < best.score || (a.score == best.score && a.peak < best.peak)) best = a;
  }

  // Ranks by load, lightest first (index on ties): the first `n`, into `ranks`.
  void Lightest(int n, std::vector<int>& ranks) const {
    ranks.resize(P_);
    std::iota(ranks.begin(), ranks.end(), 0);
    n = std::min(n, P_);
    std::partial_sort(ranks.begin(), ranks.begin() + n, ranks.end(), [&](int a, int b) {
      return load_[a] < load_[b] || (load_[a] == load_[b] && a < b);
    });
    ranks.resize(n);
  }

  // Swap partners: the eight lightest ranks, where the heaviest rank's load
  // can go, and every rank that held one of h's experts before, where one
  // may go back for free.
  void ConsiderSwaps(int h, double target, Action& best) const {
    const double lh = load_[h];
    std::vector<int>& partners = partners_;
    partners.assign(light_.begin(), light_.end());
    std::vector<char>& listed = listed_;
    listed.assign(P_, 0);
    for (int r : partners) listed[r] = 1;
    for (int i = 0; i < S_; ++i)
      for (int r = 0; r < P_; ++r)
        if (!listed[r] && prev_has_[Cell(r, item_[h * S_ + i])]) listed[r] = 1, partners.push_back(r);
    for (int r : partners) {
      const double gap = lh - load_[r];
      if (r == h || gap <= eps_) continue;
      // A partner slot j needs wa - gap + eps < w[j] < wa - eps: items of h
      // outside the range of r's weights have none.
      const double* rw = &slot_w_[r * S_];
      const auto [min_it, max_it] = std::minmax_element(rw, rw + S_);
      const double min_w = *min_it, max_w = *max_it;
      for (int i = 0; i < S_; ++i) {
        const int a = item_[h * S_ + i];
        const double wa = slot_w_[h * S_ + i];
        if (wa <= eps_) continue;
        if (wa - min_w <= eps_ || wa - max_w >= gap - eps_ || has_[Cell(r, a)] != 0) continue;
        for (int j = 0; j < S_; ++j) {
          const double d = wa - slot_w_[r * S_ + j];
          if (d <= eps_ || d >= gap - eps_) continue;
          const int b = item_[r * S_ + j];
          // No swap that gives a rank a second copy of an expert it holds.
          if (a == b || has_[Cell(h, b)] != 0) continue;
          const double peak = std::max(lh - d, load_[r] + d);
          const int cost = Leave(h, a) + Arrive(r, a) + Leave(r, b) + Arrive(h, b);
          Action act{Action::kSwap, h, i, r, j, cost, peak, Score(cost, peak, lh, target)};
          Offer(act, best);
        }
      }
    }
  }

  // Slot j of rank r (a spare replica of x) becomes one more replica of y,
  // an expert of the heaviest rank h; every holder of x or y changes load.
  void ConsiderReplicas(int h, double target, Action& best) const {
    const double lh = load_[h];
    // Candidate ranks: the four lightest, and those that held y before.
    // (the lightest ranks in order: the first four of the eight)
    const std::span<const int> light(light_.data(), std::min<size_t>(4, light_.size()));
    // The three heaviest distinct experts of h.
    int ys[3], n_ys = 0;
    for (int pick = 0; pick < 3; ++pick) {
      int best_i = -1;
      for (int i = 0; i < S_; ++i) {
        const int e = item_[h * S_ + i];
        bool taken = false;
        for (int k = 0; k < n_ys; ++k) taken |= ys[k] == e;
        if (!taken && (best_i < 0 || slot_w_[h * S_ + i] > slot_w_[h * S_ + best_i])) best_i = i;
      }
      if (best_i < 0) break;
      ys[n_ys++] = item_[h * S_ + best_i];
    }
    for (int t = 0; t < n_ys; ++t) {
      const int y = ys[t];
      if (W_[y] <= eps_) continue;
      std::vector<int>& ranks = ranks_;
      ranks.assign(light.begin(), light.end());
      for (int r = 0; r < P_; ++r)
        if (prev_has_[Cell(r, y)] && std::find(ranks.begin(), ranks.end(), r) == ranks.end())
          ranks.push_back(r);
      const double dy = W_[y] / (count_[y] + 1) - Weight(y);
      for (int r : ranks) {
        if (has_[Cell(r, y)] != 0) continue;
        // The spare replica whose removal raises its expert's replicas least.
        int j = -1;
        double j_new = kInf;
        for (int k = 0; k < S_; ++k) {
          const int x = item_[r * S_ + k];
          if (x == y || count_[x] < 2) continue;
          const double wx_new = W_[x] / (count_[x] - 1);
          if (wx_new < j_new) j = k, j_new = wx_new;
        }
        if (j >= 0) {
          const int x = item_[r * S_ + j];
          const double wx_new = j_new;
          const double dx = wx_new - Weight(x);
          double peak = 0;
          for (int q = 0; q < P_; ++q) {
            double l = load_[q] + has_[Cell(q, y)] * dy + has_[Cell(q, x)] * dx;
            if (q == r) l += W_[y] / (count_[y] + 1) - wx_new;
            peak = std::max(peak, l);
          }
          if (peak >= lh - eps_) continue;
          const int cost = Leave(r, x) + Arrive(r, y);
          Action act{Action::kReplicate, h, y, r, j, cost, peak, Score(cost, peak, lh, target)};
          Offer(act, best);
        }
      }
    }
  }

  void Set(int r, int k, int e) {
    const int old = item_[r * S_ + k];
    transfers_ -= (has_[Cell(r, old)] == 1 && !prev_has_[Cell(r, old)]);
    --has_[Cell(r, old)];
    --count_[old];
    transfers_ += (has_[Cell(r, e)] == 0 && !prev_has_[Cell(r, e)]);
    ++has_[Cell(r, e)];
    ++count_[e];
    item_[r * S_ + k] = e;
  }

  void Apply(const Action& a) {
    if (a.kind == Action::kSwap) {
      // Replica counts stay: only the two ranks' slots and loads change.
      const int x = item_[a.h * S_ + a.i], y = item_[a.r * S_ + a.j];
      Set(a.h, a.i, y);
      Set(a.r, a.j, x);
      std::swap(slot_w_[a.h * S_ + a.i], slot_w_[a.r * S_ + a.j]);
      RecomputeLoad(a.h);
      RecomputeLoad(a.r);
    } else {
      Set(a.r, a.j, a.i);
      RecomputeLoads();
    }
  }

  // Sums in slot order, as RecomputeLoads does, so both give the same bits.
  void RecomputeLoad(int r) {
    double l = 0.0;
    for (int k = 0; k < S_; ++k) l += slot_w_[r * S_ + k];
    load_[r] = l;
  }

  std::span<const double> W_;
  int E_, P_, S_;
  std::vector<int32_t> item_;
  std::vector<int> count_;
  std::vector<double> load_;
  std::vector<double> slot_w_;  // weight of each slot's replica
  std::vector<uint8_t> prev_has_;
  std::vector<uint16_t> has_;
  int transfers_ = 0;
  double eps_ = 0;
  // Scratch of one step (mutable: the Consider* searches only reuse them).
  std::vector<int> light_;  // the eight lightest ranks, lightest first
  mutable std::vector<int> partners_, ranks_;
  mutable std::vector<char> listed_;
};

// Minimum-cost perfect assignment of rows to columns of an n x n matrix
// (Hungarian algorithm, O(n^3)). Returns column of each row.
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

// The best placement's ranks renamed to overlap `previous` most. Writes the
// relabeled items to `out` and returns the experts it sends.
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
    Placement out;
    out.num_layers = load.num_layers;
    out.num_experts = load.num_experts;
    out.num_slots = in.num_replicas;
    out.num_ranks = in.num_ranks;
    out.phy2log.resize(static_cast<size_t>(load.num_layers) * in.num_replicas);
    RunLayers(in, load.num_layers, [&](int begin, int end) {
      packing::Workspace ws;  // one per range: ranges may run at the same time
      std::vector<int32_t> relabeled;
      for (int l = begin; l < end; ++l) {
        const auto w = load.layer(l);
        packing::BalanceLayer(w, in.num_replicas, in.num_ranks, in.num_groups, in.num_nodes, kBest,
                              ws);
        const double best_max = ws.bins.MaxLoad();
        const double mean = std::accumulate(w.begin(), w.end(), 0.0) / in.num_ranks;
        // balancedness >= best * (1 - tolerance)  <=>  max <= best_max / (1 - tolerance)
        const double target = std::max(best_max / (1 - tolerance_), mean);
        const int relabel_sends = Relabel(ws.bins, prev.layer_phy2log(l), load.num_experts, relabeled);
        // Repair keeps [rank][expert] tables; past kMaxRepairCells (absurd
        // shapes) only the relabelled best placement is offered.
        const bool small = static_cast<size_t>(in.num_ranks) * load.num_experts <= kMaxRepairCells;
        std::vector<int32_t> repaired_items;
        bool repaired = false;
        int repair_sends = 0;
        if (small) {
          Repair repair(w, prev.layer_phy2log(l), in.num_ranks);
          repaired = repair.Run(target, 8 * in.num_ranks);
          repair_sends = repair.transfers();
          repaired_items = repair.items();
        }
        const std::vector<int32_t>& chosen =
            repaired && repair_sends <= relabel_sends ? repaired_items : relabeled;
        std::copy(chosen.begin(), chosen.end(), out.layer_phy2log(l).begin());
      }
    });
    out.Derive();
    return out;
  }

 private:
  double tolerance_;
};

}  // namespace

std::unique_ptr<Policy> MakeMovementPolicy(double tolerance) {
  return std::make_unique<MovementPolicy>(tolerance);
}

}  // namespace eplb
