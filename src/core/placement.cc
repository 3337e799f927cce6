#include "eplb/placement.h"

#include <algorithm>
#include <string>

#include "eplb/error.h"

namespace eplb {

void Placement::Derive() {
  logcnt.assign(static_cast<size_t>(num_layers) * num_experts, 0);
  for (int l = 0; l < num_layers; ++l) {
    for (int p = 0; p < num_slots; ++p) {
      int e = expert_at(l, p);
      if (e >= 0 && e < num_experts) ++logcnt[static_cast<size_t>(l) * num_experts + e];
    }
  }
  max_replicas = logcnt.empty() ? 0 : *std::max_element(logcnt.begin(), logcnt.end());
  log2phy.assign(static_cast<size_t>(num_layers) * num_experts * max_replicas, -1);
  std::vector<int> filled(num_experts);
  for (int l = 0; l < num_layers; ++l) {
    std::fill(filled.begin(), filled.end(), 0);
    for (int p = 0; p < num_slots; ++p) {
      int e = expert_at(l, p);
      if (e < 0 || e >= num_experts) continue;
      log2phy[(static_cast<size_t>(l) * num_experts + e) * max_replicas + filled[e]++] = p;
    }
  }
}

void Placement::Validate() const {
  auto fail = [](const std::string& m) { throw InvalidArgument("placement: " + m); };
  if (num_layers <= 0 || num_experts <= 0 || num_ranks <= 0) fail("empty shape");
  if (num_slots < num_experts)
    fail(std::to_string(num_slots) + " slots cannot hold " + std::to_string(num_experts) +
         " experts");
  if (num_slots % num_ranks != 0)
    fail(std::to_string(num_slots) + " slots do not divide over " + std::to_string(num_ranks) +
         " ranks");
  if (phy2log.size() != static_cast<size_t>(num_layers) * num_slots)
    fail("phy2log has " + std::to_string(phy2log.size()) + " entries, expected " +
         std::to_string(static_cast<size_t>(num_layers) * num_slots));
  for (int l = 0; l < num_layers; ++l) {
    std::vector<int> count(num_experts, 0);
    for (int p = 0; p < num_slots; ++p) {
      int e = expert_at(l, p);
      if (e < 0 || e >= num_experts)
        fail("layer " + std::to_string(l) + " slot " + std::to_string(p) + " holds expert " +
             std::to_string(e) + ", outside [0, " + std::to_string(num_experts) + ")");
      ++count[e];
    }
    for (int e = 0; e < num_experts; ++e)
      if (count[e] == 0)
        fail("layer " + std::to_string(l) + ": expert " + std::to_string(e) + " has no slot");
  }
}

Placement Placement::FromPhy2Log(int num_layers, int num_experts, int num_ranks,
                                 std::vector<int32_t> phy2log) {
  Placement p;
  p.num_layers = num_layers;
  p.num_experts = num_experts;
  p.num_slots = num_layers > 0 ? static_cast<int>(phy2log.size() / num_layers) : 0;
  p.num_ranks = num_ranks;
  p.phy2log = std::move(phy2log);
  p.Validate();
  p.Derive();
  return p;
}

Placement Placement::Identity(int num_layers, int num_experts, int num_slots, int num_ranks) {
  std::vector<int32_t> phy2log(static_cast<size_t>(num_layers) * num_slots);
  for (int l = 0; l < num_layers; ++l)
    for (int p = 0; p < num_slots; ++p)
      phy2log[static_cast<size_t>(l) * num_slots + p] = p % num_experts;
  return FromPhy2Log(num_layers, num_experts, num_ranks, std::move(phy2log));
}

std::vector<double> RankLoads(const LoadMatrix& load, const Placement& placement, int layer) {
  std::vector<double> rank_load(placement.num_ranks, 0.0);
  const int per_rank = placement.slots_per_rank();
  for (int p = 0; p < placement.num_slots; ++p) {
    int e = placement.expert_at(layer, p);
    rank_load[p / per_rank] += load.at(layer, e) / placement.replicas(layer, e);
  }
  return rank_load;
}

double LayerBalancedness(const LoadMatrix& load, const Placement& placement, int layer) {
  std::vector<double> rank_load = RankLoads(load, placement, layer);
  double sum = 0, max = 0;
  for (double v : rank_load) {
    sum += v;
    max = std::max(max, v);
  }
  if (max <= 0) return 1.0;
  return (sum / placement.num_ranks) / max;
}

Balancedness ComputeBalancedness(const LoadMatrix& load, const Placement& placement) {
  Balancedness b;
  b.per_layer.resize(placement.num_layers);
  double sum = 0;
  for (int l = 0; l < placement.num_layers; ++l) {
    b.per_layer[l] = LayerBalancedness(load, placement, l);
    sum += b.per_layer[l];
  }
  b.mean = placement.num_layers > 0 ? sum / placement.num_layers : 1.0;
  return b;
}

}  // namespace eplb
