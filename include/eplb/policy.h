// Placement policies: (load, shape, previous placement?) -> placement.
//
// Pure functions of their input (no I/O or clocks), deterministic across
// machines, so every rank computes the same placement without talking.
// Policies start no threads; a caller may lend them threads to run layers on
// (PolicyInput::run_layers), and the result is the same bit for bit.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "eplb/export.h"
#include "eplb/load.h"
#include "eplb/placement.h"

namespace eplb {

// Runs body(begin, end) over a split of the layers [0, n) into contiguous
// ranges that together cover each layer once, possibly at the same time on
// threads of the caller's (LayerThreads, runtime/layer_threads.h). Layers are
// independent, so the placement is the same bit for bit however they are
// split; policies stay free of threads and only lend their per-layer work.
using LayerRunner = std::function<void(int n, const std::function<void(int begin, int end)>& body)>;

struct EPLB_EXPORT PolicyInput {
  const LoadMatrix* load = nullptr;
  int num_replicas = 0;  // physical slots R
  int num_groups = 1;    // expert groups (group-limited routing)
  int num_nodes = 1;
  int num_ranks = 1;
  // The placement in force, when there is one. Movement-aware policies use
  // it; all results go through slot preservation against it (an expert that
  // stays on a rank keeps its slot there).
  const Placement* previous = nullptr;
  // Where the per-layer work runs; empty: in order on the calling thread.
  LayerRunner run_layers;
};

// in.run_layers, or one range [0, n) on the calling thread.
EPLB_EXPORT void RunLayers(const PolicyInput& in, int n, const std::function<void(int begin, int end)>& body);

// Sizes beyond these are rejected as absurd (a typo, not a deployment): the
// largest models served with EP today have ~60 MoE layers, 256-384 experts
// and a few hundred slots per layer.
inline constexpr long long kMaxLayers = 4096;
inline constexpr long long kMaxExperts = 1 << 16;
inline constexpr long long kMaxSlots = 1 << 20;  // per layer
inline constexpr long long kMaxRanks = 1 << 16;
inline constexpr long long kMaxPlacementEntries = 1 << 26;  // layers x slots
inline constexpr long long kMaxLog2PhyEntries = 1 << 27;    // worst-case log2phy

// Throws InvalidArgument naming the problem: E % groups != 0, R < E,
// R % ranks != 0, ranks % nodes != 0 where hierarchical applies, sizes out of
// range, a previous placement of another shape, or a bad load (empty, ragged,
// negative / NaN / infinite, or a layer total beyond float32 range). An
// all-zero layer is valid.
EPLB_EXPORT void ValidatePolicyInput(const PolicyInput& in);

class EPLB_EXPORT Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  // One line for `eplb plan --list-policies` and docs.
  virtual std::string_view description() const = 0;
  // Computes a placement. The input has already been validated.
  virtual Placement Rebalance(const PolicyInput& in) const = 0;
};

// Every registered policy name, in a stable order; "deepseek" first.
EPLB_EXPORT std::vector<std::string> PolicyNames();

// The policy of that name; throws InvalidArgument listing valid names.
EPLB_EXPORT std::unique_ptr<Policy> MakePolicy(std::string_view name);

// Validates, runs the named policy, then applies slot preservation against
// in.previous when given. What the CLI and the runtime call.
EPLB_EXPORT Placement ComputePlacement(const Policy& policy, const PolicyInput& in);

}  // namespace eplb
