// Placement of logical experts onto physical slots, for every MoE layer.
//
// Slot p lives on rank p / slots_per_rank(). phy2log is the source of truth;
// logcnt and log2phy are derived from it (Derive()) so they cannot disagree.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/export.h"
#include "eplb/load.h"

namespace eplb {

struct EPLB_EXPORT Placement {
  int num_layers = 0;
  int num_experts = 0;  // logical experts E
  int num_slots = 0;    // physical slots R (>= E)
  int num_ranks = 0;    // R % num_ranks == 0

  std::vector<int32_t> phy2log;  // [L][R]: logical expert held by slot p
  std::vector<int32_t> logcnt;   // [L][E]: replicas of expert e (derived)
  int max_replicas = 0;          // width of log2phy (derived)
  std::vector<int32_t> log2phy;  // [L][E][max_replicas]: slots holding e, ascending, -1 padded

  int slots_per_rank() const { return num_slots / num_ranks; }
  int rank_of_slot(int slot) const { return slot / slots_per_rank(); }

  std::span<const int32_t> layer_phy2log(int l) const {
    return {phy2log.data() + static_cast<size_t>(l) * num_slots, static_cast<size_t>(num_slots)};
  }
  std::span<int32_t> layer_phy2log(int l) {
    return {phy2log.data() + static_cast<size_t>(l) * num_slots, static_cast<size_t>(num_slots)};
  }
  int32_t expert_at(int l, int slot) const { return phy2log[static_cast<size_t>(l) * num_slots + slot]; }
  int32_t replicas(int l, int e) const { return logcnt[static_cast<size_t>(l) * num_experts + e]; }

  // Builds logcnt and log2phy from phy2log.
  void Derive();

  // Throws InvalidArgument unless sizes agree, every slot holds an expert in
  // [0, E) and every expert has at least one replica.
  void Validate() const;

  // A placement with the given shape: phy2log from a flat [L][R] array.
  static Placement FromPhy2Log(int num_layers, int num_experts, int num_ranks,
                               std::vector<int32_t> phy2log);

  // Identity placement: slot p holds expert p % E (redundant slots repeat
  // experts round-robin). The state of a freshly loaded model.
  static Placement Identity(int num_layers, int num_experts, int num_slots, int num_ranks);

  friend bool operator==(const Placement& a, const Placement& b) {
    return a.num_layers == b.num_layers && a.num_experts == b.num_experts &&
           a.num_slots == b.num_slots && a.num_ranks == b.num_ranks && a.phy2log == b.phy2log;
  }
};

// Balancedness of one layer: mean rank load / max rank load, where a replica
// carries load[e] / logcnt[e]. 1.0 is perfect; an all-zero layer counts as 1.0.
EPLB_EXPORT double LayerBalancedness(const LoadMatrix& load, const Placement& placement, int layer);

struct EPLB_EXPORT Balancedness {
  std::vector<double> per_layer;
  double mean = 1.0;  // mean over layers: the model figure
};
EPLB_EXPORT Balancedness ComputeBalancedness(const LoadMatrix& load, const Placement& placement);

// Rank loads of one layer (size num_ranks), replica load = load / logcnt.
EPLB_EXPORT std::vector<double> RankLoads(const LoadMatrix& load, const Placement& placement, int layer);

}  // namespace eplb
