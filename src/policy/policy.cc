#include <cfloat>
#include <cstdint>
#include <string>

#include "eplb/error.h"
#include "eplb/policy.h"
#include "policy/preserve.h"

namespace eplb {
namespace {

std::string S(long long v) { return std::to_string(v); }

[[noreturn]] void Fail(const std::string& message) { throw InvalidArgument("policy: " + message); }

}  // namespace

void ValidatePolicyInput(const PolicyInput& in) {
  if (in.load == nullptr) Fail("no load matrix given");
  const LoadMatrix& load = *in.load;
  ValidateLoad(load);
  const long long L = load.num_layers, E = load.num_experts, R = in.num_replicas;
  const long long G = in.num_groups, N = in.num_nodes, P = in.num_ranks;

  if (R <= 0) Fail("--replicas must be positive (got " + S(R) + ")");
  if (G <= 0) Fail("--groups must be positive (got " + S(G) + ")");
  if (N <= 0) Fail("--nodes must be positive (got " + S(N) + ")");
  if (P <= 0) Fail("--ranks must be positive (got " + S(P) + ")");
  if (L > kMaxLayers) Fail(S(L) + " layers is absurd (at most " + S(kMaxLayers) + ")");
  if (E > kMaxExperts) Fail(S(E) + " experts is absurd (at most " + S(kMaxExperts) + ")");
  if (R > kMaxSlots) Fail(S(R) + " replicas is absurd (at most " + S(kMaxSlots) + ")");
  if (P > kMaxRanks) Fail(S(P) + " ranks is absurd (at most " + S(kMaxRanks) + ")");
  if (L * R > kMaxPlacementEntries)
    Fail(S(L) + " layers x " + S(R) + " replicas is absurd (at most " + S(kMaxPlacementEntries) +
         " slots in all)");
  if (E % G != 0)
    Fail(S(E) + " experts do not split into " + S(G) + " equal groups (experts % groups != 0)");
  if (R < E)
    Fail(S(R) + " replicas cannot hold " + S(E) + " experts (replicas must be >= experts)");
  if (R % P != 0)
    Fail(S(R) + " replicas do not divide over " + S(P) + " ranks (replicas % ranks != 0)");
  if (G % N == 0) {
    if (P % N != 0)
      Fail(S(P) + " ranks do not divide over " + S(N) +
           " nodes (ranks % nodes != 0; the hierarchical policy applies since groups % nodes "
           "== 0)");
  } else if (N > P) {
    Fail(S(N) + " nodes for " + S(P) + " ranks (a node with no rank)");
  }
  // Worst case of log2phy: one expert takes every redundant slot.
  if (L * E * (R - E + 1) > kMaxLog2PhyEntries)
    Fail(S(L) + " layers x " + S(E) + " experts with " + S(R - E) +
         " redundant slots is absurd (log2phy could need " + S(L * E * (R - E + 1)) +
         " entries, at most " + S(kMaxLog2PhyEntries) + ")");
  // Policies compute in float32 (as the reference does): a layer's total must fit.
  for (int l = 0; l < load.num_layers; ++l) {
    double total = 0;
    for (double v : load.layer(l)) total += v;
    if (total > FLT_MAX / 2)
      Fail("load: layer " + S(l) + " totals " + std::to_string(total) +
           " tokens, beyond float32 range (at most " + std::to_string(FLT_MAX / 2) + ")");
  }

  if (in.previous != nullptr) {
    const Placement& prev = *in.previous;
    if (prev.num_layers != L || prev.num_experts != E || prev.num_slots != R ||
        prev.num_ranks != P)
      Fail("previous placement has " + S(prev.num_layers) + " layers x " + S(prev.num_experts) +
           " experts, " + S(prev.num_slots) + " slots on " + S(prev.num_ranks) +
           " ranks; the request has " + S(L) + " x " + S(E) + ", " + S(R) + " slots on " + S(P) +
           " ranks");
    prev.Validate();
  }
}

void RunLayers(const PolicyInput& in, int n, const std::function<void(int begin, int end)>& body) {
  if (n <= 0) return;
  if (in.run_layers) {
    in.run_layers(n, body);
  } else {
    body(0, n);
  }
}

Placement ComputePlacement(const Policy& policy, const PolicyInput& in) {
  ValidatePolicyInput(in);
  Placement next = policy.Rebalance(in);
  if (in.previous == nullptr) return next;
  return PreserveSlots(*in.previous, next);
}

}  // namespace eplb
