#include "policy/packing.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

namespace eplb::packing {

namespace {

// Loads are token counts; differences below this share of the layer total
// are noise and never justify a swap.
constexpr double kRelEps = 1e-12;

// Insertion sort of one rank's items (n is small) by weight, then expert id.
void SortRank(int32_t* items, double* weights, int n) {
  for (int i = 1; i < n; ++i) {
    const int32_t x = items[i];
    const double wx = weights[i];
    int j = i - 1;
    while (j >= 0 && (wx < weights[j] || (wx == weights[j] && x < items[j]))) {
      items[j + 1] = items[j];
      weights[j + 1] = weights[j];
      --j;
    }
    items[j + 1] = x;
    weights[j + 1] = wx;
  }
}

}  // namespace

void HomeNodes(std::span<const double> load, int num_groups, int num_nodes,
               std::vector<int>& home) {
  const int num_experts = static_cast<int>(load.size());
  const int group_size = num_experts / num_groups;
  const int per_node = num_groups / num_nodes;
  std::vector<double> group_load(num_groups, 0.0);
  for (int e = 0; e < num_experts; ++e) group_load[e / group_size] += load[e];
  std::vector<int> order(num_groups);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return group_load[a] > group_load[b]; });
  std::vector<int> node_of_group(num_groups, 0), fill(num_nodes, 0);
  std::vector<double> node_load(num_nodes, 0.0);
  for (int g : order) {
    int best = -1;
    for (int n = 0; n < num_nodes; ++n)
      if (fill[n] < per_node && (best < 0 || node_load[n] < node_load[best])) best = n;
    node_of_group[g] = best;
    node_load[best] += group_load[g];
    ++fill[best];
  }
  // Swap groups between the heaviest node and another while that lowers it.
  const double total = std::accumulate(group_load.begin(), group_load.end(), 0.0);
  const double eps = total * kRelEps;
  for (int iter = 0; iter < 4 * num_groups; ++iter) {
    int h = static_cast<int>(std::max_element(node_load.begin(), node_load.end()) -
                             node_load.begin());
    double best_peak = node_load[h];
    int best_a = -1, best_b = -1;
    for (int a = 0; a < num_groups; ++a) {
      if (node_of_group[a] != h) continue;
      for (int b = 0; b < num_groups; ++b) {
        int n = node_of_group[b];
        if (n == h) continue;
        double d = group_load[a] - group_load[b];
        double gap = node_load[h] - node_load[n];
        if (d <= eps || d >= gap - eps) continue;
        double peak = std::max(node_load[h] - d, node_load[n] + d);
        if (peak < best_peak) {
          best_peak = peak;
          best_a = a;
          best_b = b;
        }
      }
    }
    if (best_a < 0) break;
    int n = node_of_group[best_b];
    double d = group_load[best_a] - group_load[best_b];
    node_load[h] -= d;
    node_load[n] += d;
    node_of_group[best_a] = n;
    node_of_group[best_b] = h;
  }
  home.resize(num_experts);
  for (int e = 0; e < num_experts; ++e) home[e] = node_of_group[e / group_size];
}

void RankBins::Reset(int ranks, int slots_per_rank, int ranks_per_node_, int experts) {
  num_ranks = ranks;
  num_experts = experts;
  // The [rank][expert] table only where it is small; else copies_of scans.
  const size_t cells = static_cast<size_t>(ranks) * experts;
  copies.assign(cells <= kMaxCopiesTable ? cells : 0, 0);
  slots = slots_per_rank;
  ranks_per_node = ranks_per_node_;
  item.assign(static_cast<size_t>(ranks) * slots_per_rank, -1);
  weight.assign(item.size(), 0.0);
  fill.assign(ranks, 0);
  load.assign(ranks, 0.0);
}

void RankBins::Add(int rank, int expert, double w) {
  const size_t k = static_cast<size_t>(rank) * slots + fill[rank]++;
  item[k] = expert;
  weight[k] = w;
  load[rank] += w;
  if (!copies.empty()) ++copies[static_cast<size_t>(rank) * num_experts + expert];
}

int RankBins::copies_of(int rank, int expert) const {
  if (!copies.empty()) return copies[static_cast<size_t>(rank) * num_experts + expert];
  int n = 0;
  for (int k = 0; k < fill[rank]; ++k) n += items_of(rank)[k] == expert;
  return n;
}

int RankBins::HeaviestRank() const {
  return static_cast<int>(std::max_element(load.begin(), load.end()) - load.begin());
}

double RankBins::MaxLoad() const { return *std::max_element(load.begin(), load.end()); }

double RankBins::TotalLoad() const { return std::accumulate(load.begin(), load.end(), 0.0); }

void RankBins::SortItems() {
  for (int r = 0; r < num_ranks; ++r) {
    // Greedy packing adds items in decreasing weight: reversed, that is the
    // order already, and insertion sort then only confirms it.
    std::reverse(items_of(r), items_of(r) + fill[r]);
    std::reverse(weights_of(r), weights_of(r) + fill[r]);
    SortRank(items_of(r), weights_of(r), fill[r]);
  }
}

void RankBins::SwapItems(int a, int i, int b, int j) {
  int32_t* ap = items_of(a);
  int32_t* bp = items_of(b);
  double* aw = weights_of(a);
  double* bw = weights_of(b);
  const double d = aw[i] - bw[j];
  if (!copies.empty()) {
    --copies[static_cast<size_t>(a) * num_experts + ap[i]];
    --copies[static_cast<size_t>(b) * num_experts + bp[j]];
    ++copies[static_cast<size_t>(a) * num_experts + bp[j]];
    ++copies[static_cast<size_t>(b) * num_experts + ap[i]];
  }
  std::swap(ap[i], bp[j]);
  std::swap(aw[i], bw[j]);
  load[a] -= d;
  load[b] += d;
  SortRank(ap, aw, slots);
  SortRank(bp, bw, slots);
}

namespace {

// Expert ids by decreasing load (id ascending among loads equal to a relative
// 1e-6). Keys: the bits of a non-negative double order like its value, so
// ~bits orders by decreasing load; a stable LSD radix sort on the top 32 bits
// (sign, exponent, 20 mantissa bits) keeps equal keys in id order. No
// comparisons, so no branch mispredictions on real loads.
void ExpertsByLoad(std::span<const double> load, ReplicaScratch& scratch) {
  const size_t n = load.size();
  std::vector<uint64_t>& keys = scratch.keys;
  std::vector<uint64_t>& tmp = scratch.keys_tmp;
  std::vector<int32_t>& ids = scratch.by_load;
  std::vector<int32_t>& tmp_ids = scratch.ids_tmp;
  keys.resize(n);
  tmp.resize(n);
  tmp_ids.resize(n);
  ids.resize(n);
  for (size_t e = 0; e < n; ++e) {
    keys[e] = ~std::bit_cast<uint64_t>(load[e]);
    ids[e] = static_cast<int32_t>(e);
  }
  for (int shift = 32; shift < 64; shift += 8) {
    size_t bucket[257] = {};
    for (size_t i = 0; i < n; ++i) ++bucket[((keys[i] >> shift) & 0xff) + 1];
    // A digit every key shares (the top byte of loads of one magnitude)
    // leaves the order as it is.
    if (n > 0 && bucket[((keys[0] >> shift) & 0xff) + 1] == n) continue;
    for (int d = 0; d < 256; ++d) bucket[d + 1] += bucket[d];
    for (size_t i = 0; i < n; ++i) {
      const size_t at = bucket[(keys[i] >> shift) & 0xff]++;
      tmp[at] = keys[i];
      tmp_ids[at] = ids[i];
    }
    keys.swap(tmp);
    ids.swap(tmp_ids);
  }
}

}  // namespace

void Replicas(std::span<const double> load, int num_slots, std::vector<int>& counts,
              std::vector<double>& weight, std::vector<int32_t>& order, ReplicaScratch& scratch) {
  const int n = static_cast<int>(load.size());
  ExpertsByLoad(load, scratch);
  const std::vector<int32_t>& by_load = scratch.by_load;
  counts.assign(n, 1);
  // Spare slots, one at a time, to the largest load per replica; on equal
  // values fewer replicas first (an all-zero layer spreads its spare slots
  // round-robin), then the lower id. Only the `extra` heaviest experts can
  // win one: any other has `extra` experts at least as heavy ahead of it at
  // every step.
  const int extra = num_slots - n;
  using Entry = ReplicaScratch::Entry;
  auto worse = [](const Entry& a, const Entry& b) {
    if (a.per_replica != b.per_replica) return a.per_replica < b.per_replica;
    if (a.count != b.count) return a.count > b.count;
    return a.expert > b.expert;
  };
  std::vector<Entry>& heap = scratch.heap;
  heap.clear();
  for (int k = 0; k < std::min(extra, n); ++k) heap.push_back({load[by_load[k]], 1, by_load[k]});
  // Experts tied with the last candidate may win instead of it: take them too.
  for (int k = std::min(extra, n); k < n && !heap.empty() && load[by_load[k]] >= heap.back().per_replica; ++k)
    heap.push_back({load[by_load[k]], 1, by_load[k]});
  std::make_heap(heap.begin(), heap.end(), worse);
  for (int k = 0; k < extra && !heap.empty(); ++k) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    Entry& top = heap.back();
    top.count = ++counts[top.expert];
    top.per_replica = load[top.expert] / top.count;
    std::push_heap(heap.begin(), heap.end(), worse);
  }
  // load / 1 is load: only the replicated experts need a division.
  weight.assign(load.begin(), load.end());
  for (const Entry& entry : heap) weight[entry.expert] = load[entry.expert] / counts[entry.expert];
  // Replicated experts, by decreasing weight (few: insertion sort), merged
  // with the single-replica ones, already in decreasing weight.
  auto heavier = [&](int32_t a, int32_t b) {
    return weight[a] > weight[b] || (weight[a] == weight[b] && a < b);
  };
  std::vector<int32_t>& replicated = scratch.replicated;
  replicated.clear();
  for (const Entry& entry : heap)
    if (counts[entry.expert] > 1) replicated.push_back(entry.expert);
  std::sort(replicated.begin(), replicated.end(), heavier);
  order.resize(std::max(num_slots, n));  // sum of counts: n + extra
  int32_t* out = order.data();
  size_t next = 0;
  for (int32_t e : by_load) {
    if (counts[e] > 1) continue;
    while (next < replicated.size() && heavier(replicated[next], e)) {
      out = std::fill_n(out, counts[replicated[next]], replicated[next]);
      ++next;
    }
    *out++ = e;
  }
  for (; next < replicated.size(); ++next)
    out = std::fill_n(out, counts[replicated[next]], replicated[next]);
  order.resize(out - order.data());
}

void PackGreedy(std::span<const int32_t> order, std::span<const double> w,
                const std::vector<int>* home, double slack, RankBins& bins) {
  const int rpn = bins.ranks_per_node;
  const int nodes = bins.num_ranks / rpn;
  const int S = bins.slots;
  constexpr double kFull = std::numeric_limits<double>::infinity();
  // Ranks are scanned in blocks of at most kBlock within a node; each block
  // caches its lightest rank with room (kFull when the block is full), and
  // only the block that took a replica is rescanned.
  constexpr int kBlock = 8;
  const int blocks_per_node = (rpn + kBlock - 1) / kBlock;
  const int blocks = nodes * blocks_per_node;
  std::vector<int> block_first(blocks + 1), block_min(blocks);
  std::vector<double> block_min_load(blocks);
  for (int n = 0; n < nodes; ++n)
    for (int k = 0; k < blocks_per_node; ++k)
      block_first[n * blocks_per_node + k] = n * rpn + std::min(rpn, k * kBlock);
  block_first[blocks] = bins.num_ranks;
  std::vector<int> block_end(blocks);
  for (int b = 0; b < blocks; ++b)
    block_end[b] = (b + 1) % blocks_per_node == 0 ? (b / blocks_per_node + 1) * rpn : block_first[b + 1];
  // Replicas of one expert are adjacent in `order`; mark[r] == e says rank r
  // already holds e. The lightest rank rarely does (it would have gained that
  // replica's weight); then the block's lightest other rank is taken.
  std::vector<int32_t> mark(bins.num_ranks, -1);
  const int* fill = bins.fill.data();
  const double* load = bins.load.data();
  auto lightest_rank = [&](int b, int32_t skip) {
    int best = -1;
    double best_load = kFull;
    for (int r = block_first[b], last = block_end[b]; r < last; ++r)
      if (fill[r] < S && mark[r] != skip && load[r] < best_load) best = r, best_load = load[r];
    return best;
  };
  auto rescan = [&](int b) {
    int best = -1;
    double best_load = kFull;
    // Written to compile to conditional moves: which rank is lightest is
    // data, and a branch on it mispredicts about every other time.
    for (int r = block_first[b], last = block_end[b]; r < last; ++r) {
      const double l = fill[r] < S ? load[r] : kFull;
      const bool lighter = l < best_load;
      best = lighter ? r : best;
      best_load = lighter ? l : best_load;
    }
    block_min[b] = best;
    block_min_load[b] = best_load;
  };
  for (int b = 0; b < blocks; ++b) rescan(b);
  auto lightest_block = [&](int first, int last) {
    int best = first;
    double best_load = block_min_load[first];
    for (int b = first + 1; b < last; ++b) {
      const bool lighter = block_min_load[b] < best_load;
      best = lighter ? b : best;
      best_load = lighter ? block_min_load[b] : best_load;
    }
    return best;
  };
  for (int32_t e : order) {
    int block = lightest_block(0, blocks);
    if (home != nullptr) {
      const int h = (*home)[e] * blocks_per_node;
      const int hb = blocks_per_node == 1 ? h : lightest_block(h, h + blocks_per_node);
      if (block_min_load[hb] <= block_min_load[block] + slack) block = hb;
    }
    int r = block_min[block];
    if (mark[r] == e) {
      const int other = lightest_rank(block, e);
      if (other >= 0) r = other;
    }
    bins.Add(r, e, w[e]);
    mark[r] = e;
    rescan(block);
  }
}

namespace {

// Whether swapping item i of rank a with item j of rank b leaves no rank with
// two replicas of one expert it did not have before: a second copy on a rank
// serves nothing the first could not, and takes a slot from another expert.
bool Distinct(const RankBins& bins, int a, int i, int b, int j) {
  const int32_t x = bins.items_of(a)[i], y = bins.items_of(b)[j];
  return bins.copies_of(b, x) == 0 && bins.copies_of(a, y) == 0;
}

// Partner ranks a swap search looks at: the lightest quarter, at least 8.
int Partners(int num_ranks) { return std::max(8, num_ranks / 4); }

struct Swap {
  int i = -1, r = -1, j = -1;  // item i of the heaviest rank <-> item j of rank r
  double peak = 0;
};

// Change of the load served on home nodes when item a (weight wa, on node
// na) and item b (wb, on nb) trade places.
double HomeGain(const std::vector<int>& home, int32_t a, double wa, int na, int32_t b, double wb,
                int nb) {
  const int ha = home[a], hb = home[b];
  return wa * ((ha == nb) - (ha == na)) + wb * ((hb == na) - (hb == nb));
}

// First index of the ascending weights[0, n) that is >= x.
// A rank holds a handful of items: counting beats a binary search.
int LowerBound(const double* weights, int n, double x) {
  int count = 0;
  for (int k = 0; k < n; ++k) count += weights[k] < x;
  return count;
}

// A swap of an item of h with one of another rank that leaves both at or
// under `goal`, preferring one that loses no home-served load.
Swap FitSwap(const std::vector<int>* home, int h, double goal, double eps,
             const std::vector<int>& by_load, const RankBins& bins) {
  const int S = bins.slots;
  const double excess = bins.load[h] - goal;
  const int32_t* hi = bins.items_of(h);
  const double* hw = bins.weights_of(h);
  const int nh = bins.node_of(h);
  Swap fallback;
  // The ranks with the most room are where a fit is likeliest; a few suffice.
  const int partners = Partners(bins.num_ranks);
  int tried = 0;
  for (int r : by_load) {  // most room first
    const double room = goal - bins.load[r];
    if (room < excess || tried++ == partners) break;
    const int32_t* ri = bins.items_of(r);
    const double* rw = bins.weights_of(r);
    const int nr = bins.node_of(r);
    const bool cross = home != nullptr && nr != nh;
    // Partners of item i weigh within [wa - room, wa - excess]; both bounds
    // fall as i does, so the first candidate j only moves down.
    int j0 = S;
    for (int i = S - 1; i >= 0 && hw[i] >= excess; --i) {
      const double lo_w = hw[i] - room, hi_w = hw[i] - excess;
      while (j0 > 0 && rw[j0 - 1] >= lo_w) --j0;
      // A few candidates per item: enough to find a home-neutral one.
      for (int j = j0, n = 0; j < S && rw[j] <= hi_w && n < 3; ++j, ++n) {
        if (hw[i] - rw[j] <= eps) continue;
        const bool neutral = !cross || HomeGain(*home, hi[i], hw[i], nh, ri[j], rw[j], nr) >= -eps;
        if ((!neutral && fallback.i >= 0) || !Distinct(bins, h, i, r, j)) continue;
        if (neutral) return {i, r, j, 0};
        fallback = {i, r, j, 0};
      }
    }
  }
  return fallback;
}

// The swap between h and another rank giving the lowest new peak
// max(load[h] - d, load[r] + d), d = wa - wb in (0, gap), whatever it does
// to locality (the fit search already preferred home-neutral swaps).
Swap LevelSwap(int h, double eps, const std::vector<int>& by_load, int partners,
               const RankBins& bins) {
  const int S = bins.slots;
  const double lh = bins.load[h];
  const double* hw = bins.weights_of(h);
  Swap best;
  best.peak = lh;
  // The lightest `partners` ranks, which level h best.
  int tried = 0;
  for (int r : by_load) {  // lightest first
    const double lr = bins.load[r];
    const double gap = lh - lr;
    // No swap with r, or any heavier rank, goes below (lh + lr) / 2.
    if (gap <= eps || (lh + lr) / 2 >= best.peak || tried++ == partners) break;
    const double* rw = bins.weights_of(r);
    int j = S;  // first partner at or above the level point; falls with i
    for (int i = S - 1; i >= 0 && hw[i] > eps; --i) {
      const double level = hw[i] - gap / 2;  // the partner that levels h and r
      while (j > 0 && rw[j - 1] >= level) --j;
      for (int k = std::max(0, j - 1); k <= std::min(S - 1, j); ++k) {
        const double d = hw[i] - rw[k];
        if (d <= eps || d >= gap - eps) continue;
        const double peak = std::max(lh - d, lr + d);
        if (peak >= best.peak) continue;
        if (!Distinct(bins, h, i, r, k)) continue;
        best = {i, r, k, peak};
      }
    }
  }
  return best;
}

}  // namespace

void RefineSwaps(const std::vector<int>* home, double goal, int max_iterations,
                 RankBins& bins) {
  const double eps = bins.TotalLoad() * kRelEps + 1e-300;
  const int P = bins.num_ranks;
  // Ranks by load ascending (index on ties); after a swap only two ranks
  // move, so one insertion pass restores the order.
  std::vector<int> by_load(bins.num_ranks);
  std::iota(by_load.begin(), by_load.end(), 0);
  auto lighter = [&](int a, int b) {
    return bins.load[a] < bins.load[b] || (bins.load[a] == bins.load[b] && a < b);
  };
  std::sort(by_load.begin(), by_load.end(), lighter);
  for (int iter = 0; iter < max_iterations; ++iter) {
    const int h = by_load.back();
    if (bins.load[h] <= goal) break;
    Swap s = FitSwap(home, h, goal, eps, by_load, bins);
    if (s.i < 0) s = LevelSwap(h, eps, by_load, Partners(P), bins);
    if (s.i < 0) s = LevelSwap(h, eps, by_load, P, bins);
    if (s.i < 0) break;
    bins.SwapItems(h, s.i, s.r, s.j);
    // h got lighter, r heavier: move each to its place.
    for (int moved : {h, s.r}) {
      int i = static_cast<int>(std::find(by_load.begin(), by_load.end(), moved) - by_load.begin());
      for (; i > 0 && lighter(by_load[i], by_load[i - 1]); --i) std::swap(by_load[i], by_load[i - 1]);
      for (; i + 1 < P && lighter(by_load[i + 1], by_load[i]); ++i)
        std::swap(by_load[i], by_load[i + 1]);
    }
  }
}

void RestoreLocality(const std::vector<int>& home, double ceiling, RankBins& bins) {
  const int S = bins.slots;
  const int rpn = bins.ranks_per_node;
  ceiling = std::max(ceiling, bins.MaxLoad());
  const double total = bins.TotalLoad();
  const double eps = total * kRelEps;
  // Replicas under 0.5% of a mean rank load are not worth a search: all of
  // them together move little load.
  const double small = total / bins.num_ranks * 0.005;
  // Swaps (each strictly raises the home-served load): half a swap per rank
  // keeps most of the gain (about 98% on the DeepSeek-V3 loads) at half the
  // time; each rank offers its heaviest replicas first.
  int budget = std::max(1, bins.num_ranks / 2);
  for (int r = 0; r < bins.num_ranks && budget > 0; ++r) {
    const int nr = bins.node_of(r);
    for (int i = S - 1; i >= 0 && budget > 0; --i) {
      const int32_t a = bins.items_of(r)[i];
      const int ha = home[a];
      const double wa = bins.weights_of(r)[i];
      if (ha == nr || wa < small) continue;
      // A partner b weighs at most wa + (ceiling - load[r]) and at least
      // wa - (ceiling - load[s]).
      const double b_max = wa + ceiling - bins.load[r];
      double best_gain = eps;
      int best_s = -1, best_j = -1;
      for (int s = ha * rpn; s < (ha + 1) * rpn; ++s) {
        const int32_t* si = bins.items_of(s);
        const double* sw = bins.weights_of(s);
        const double b_min = wa - (ceiling - bins.load[s]);
        if (sw[S - 1] < b_min || sw[0] > b_max) continue;  // no partner on s
        for (int j = LowerBound(sw, S, b_min); j < S && sw[j] <= b_max; ++j) {
          const double gain = HomeGain(home, a, wa, nr, si[j], sw[j], ha);
          if (gain > best_gain && Distinct(bins, r, i, s, j))
            best_gain = gain, best_s = s, best_j = j;
        }
      }
      if (best_s < 0) continue;
      bins.SwapItems(r, i, best_s, best_j);
      --budget;
    }
  }
}

bool LocalityApplies(int num_groups, int num_nodes) {
  return num_nodes > 1 && num_groups >= num_nodes && num_groups % num_nodes == 0;
}

void BalanceLayer(std::span<const double> load, int num_slots, int num_ranks, int num_groups,
                  int num_nodes, const BalanceOptions& options, Workspace& ws) {
  Replicas(load, num_slots, ws.counts, ws.weight, ws.order, ws.replica_scratch);
  const bool locality = options.keep_locality && LocalityApplies(num_groups, num_nodes);
  ws.bins.Reset(num_ranks, num_slots / num_ranks, locality ? num_ranks / num_nodes : num_ranks,
                static_cast<int>(load.size()));
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / num_ranks;
  const std::vector<int>* home = nullptr;
  if (locality) {
    HomeNodes(load, num_groups, num_nodes, ws.home);
    home = &ws.home;
  }
  PackGreedy(ws.order, ws.weight, home, options.slack * mean, ws.bins);
  ws.bins.SortItems();
  RefineSwaps(home, mean * (1 + options.goal), 4 * num_ranks, ws.bins);
  if (locality && options.ceiling >= 0) RestoreLocality(ws.home, mean * (1 + options.ceiling), ws.bins);
}

Placement ShapedPlacement(const PolicyInput& in) {
  Placement out;
  out.num_layers = in.load->num_layers;
  out.num_experts = in.load->num_experts;
  out.num_slots = in.num_replicas;
  out.num_ranks = in.num_ranks;
  out.phy2log.resize(static_cast<size_t>(out.num_layers) * in.num_replicas);
  return out;
}

Placement BalanceAllLayers(const PolicyInput& in, const BalanceOptions& options) {
  const LoadMatrix& load = *in.load;
  Placement out = ShapedPlacement(in);
  RunLayers(in, load.num_layers, [&](int begin, int end) {
    Workspace ws;  // one per range: ranges may run at the same time
    for (int l = begin; l < end; ++l) {
      BalanceLayer(load.layer(l), in.num_replicas, in.num_ranks, in.num_groups, in.num_nodes,
                   options, ws);
      std::copy(ws.bins.item.begin(), ws.bins.item.end(), out.layer_phy2log(l).begin());
    }
  });
  out.Derive();
  return out;
}

}  // namespace eplb::packing
