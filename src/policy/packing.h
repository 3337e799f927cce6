// Building blocks of the balancing policies (balanced, locality, movement):
// replica counts, home nodes of expert groups, and packing of replicas onto
// ranks that each hold a fixed number of slots, refined by swaps.
//
// Internal to src/policy. Pure and deterministic: every loop runs in index
// order and every tie goes to the lowest index, so all ranks agree.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/placement.h"
#include "eplb/policy.h"

namespace eplb::packing {

// Replicas per expert for `num_slots` slots: one each, then every extra slot
// to the expert with the largest load per replica (on equal values the one
// with fewer replicas, then the lowest index). This minimises the largest
// replica load, which bounds balance whatever the packing: a layer cannot
// beat mean / max(mean, max W/c). Also gives each expert's load per replica
// (`weight`) and the replicas, one entry each, by decreasing weight (`order`).
struct ReplicaScratch;
void Replicas(std::span<const double> load, int num_slots, std::vector<int>& counts,
              std::vector<double>& weight, std::vector<int32_t>& order, ReplicaScratch& scratch);

// Buffers of Replicas, kept across layers so it allocates nothing per layer.
struct ReplicaScratch {
  std::vector<uint64_t> keys, keys_tmp;  // sort keys of ExpertsByLoad
  std::vector<int32_t> by_load, ids_tmp;
  std::vector<int32_t> replicated;
  struct Entry {
    double per_replica;
    int count;
    int expert;
  };
  std::vector<Entry> heap;
};

// Node of each expert's group when groups are packed onto nodes as DeepSeek's
// hierarchical step does (heaviest group first onto the lightest node with
// room, num_groups / num_nodes groups a node), then improved by swapping
// groups between the heaviest node and another. Requires
// num_groups % num_nodes == 0. home[e] is the node of expert e.
void HomeNodes(std::span<const double> load, int num_groups, int num_nodes,
               std::vector<int>& home);

// Ranks with `slots` slots each. Items are experts; a replica of expert e
// weighs w[e] (its load / its replica count).
struct RankBins {
  int num_ranks = 0;
  int slots = 0;           // per rank
  int ranks_per_node = 0;  // num_ranks when nodes do not matter
  std::vector<int32_t> item;  // [rank][slot] expert, -1 while empty
  std::vector<double> weight; // [rank][slot] weight of that item
  std::vector<int> fill;      // items placed on each rank
  std::vector<double> load;   // sum of item weights on each rank
  int num_experts = 0;
  // [rank][expert] replicas of that expert on that rank, kept while the
  // table has at most kMaxCopiesTable cells (else empty).
  static constexpr size_t kMaxCopiesTable = size_t{1} << 22;
  std::vector<uint16_t> copies;

  void Reset(int ranks, int slots_per_rank, int ranks_per_node_, int experts);
  int copies_of(int rank, int expert) const;
  int node_of(int rank) const { return rank / ranks_per_node; }
  int32_t* items_of(int rank) { return item.data() + static_cast<size_t>(rank) * slots; }
  const int32_t* items_of(int rank) const {
    return item.data() + static_cast<size_t>(rank) * slots;
  }
  double* weights_of(int rank) { return weight.data() + static_cast<size_t>(rank) * slots; }
  const double* weights_of(int rank) const {
    return weight.data() + static_cast<size_t>(rank) * slots;
  }
  void Add(int rank, int expert, double w);
  int HeaviestRank() const;
  double MaxLoad() const;
  double TotalLoad() const;
  // Sorts each rank's items by weight ascending (expert id on ties); the
  // refinement searches rely on it.
  void SortItems();
  // Swaps item i of rank a with item j of rank b, keeping loads and order.
  void SwapItems(int a, int i, int b, int j);
};

// Greedy packing in decreasing weight: each replica to the lightest rank with
// room, one not already holding that expert where possible. With `home`
// (expert -> node), a replica goes to the lightest rank of its home node
// instead when that rank is at most `slack` heavier than the lightest rank.
// slack = 0 is plain greedy; a huge slack is DeepSeek's hierarchical packing.
void PackGreedy(std::span<const int32_t> order, std::span<const double> w,
                const std::vector<int>* home, double slack, RankBins& bins);

// Swap refinement towards `goal` (a rank load): while the heaviest rank is
// above it, swap one of its items with one of another rank. First choice:
// a swap that brings both ranks to the goal or under, and with `home` one
// that keeps each replica's home-node status (or improves it) over one that
// serves load off its home node; otherwise the swap that levels the pair
// best, whatever it does to locality (RestoreLocality repairs that after
// refinement). Stops after
// `max_iterations` swaps or when no swap lowers the heaviest rank. Items must
// be sorted (SortItems).
void RefineSwaps(const std::vector<int>* home, double goal, int max_iterations,
                 RankBins& bins);

// Locality repair: swaps that bring a replica back to its home node without
// raising any rank above `ceiling` (or above the heaviest rank, if heavier),
// at most num_ranks / 2 of them. Items must be sorted.
void RestoreLocality(const std::vector<int>& home, double ceiling, RankBins& bins);

// How BalanceLayer trades balance for locality.
struct BalanceOptions {
  bool keep_locality = false;
  // Refinement stops once the heaviest rank is within this share of the mean
  // rank load (1e-4: balancedness 0.9999).
  double goal = 1e-4;
  // Greedy home preference, in mean rank loads (see PackGreedy).
  double slack = 0;
  // RestoreLocality may fill ranks up to mean * (1 + ceiling).
  double ceiling = 0;
};

// Scratch space reused across layers so a rebalance allocates once.
struct Workspace {
  std::vector<int> counts;     // replicas per expert
  std::vector<double> weight;  // load per replica of each expert
  std::vector<int> home;       // expert -> home node (locality only)
  std::vector<int32_t> order;  // replicas by decreasing weight
  ReplicaScratch replica_scratch;
  RankBins bins;
};

// Whether locality can be kept for this shape: several nodes and whole
// groups per node, the case where DeepSeek packs hierarchically.
bool LocalityApplies(int num_groups, int num_nodes);

// One layer: replica counts, greedy packing (home node first with
// locality), swap refinement and, with locality, swaps back home that stay
// under the ceiling. The result is in ws.bins: rank r's items fill slots
// r * slots .. r * slots + slots - 1.
void BalanceLayer(std::span<const double> load, int num_slots, int num_ranks, int num_groups,
                  int num_nodes, const BalanceOptions& options, Workspace& ws);

// Every layer of in.load through BalanceLayer.
Placement BalanceAllLayers(const PolicyInput& in, const BalanceOptions& options);

// A placement of in's shape with phy2log sized, for a policy to fill layer
// by layer (then Derive).
Placement ShapedPlacement(const PolicyInput& in);

}  // namespace eplb::packing
