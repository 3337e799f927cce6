// Transfer plan: what every rank does to go from one placement of a layer to
// the next (DESIGN.md layer 2).
//
// Pure and deterministic: every rank computes the same global plan from the
// old and new placement without exchanging a message, so a one-sided backend
// can read what a peer expects it to read and a two-sided one can post
// matching sends and receives.
//
// For every new slot the plan says how it gets its expert:
//   kKeep       the slot already holds the expert;
//   kLocalCopy  the expert sits in another old slot of the same rank;
//   kReceive    the expert comes over the wire from a rank that holds it;
//   kDuplicate  another new slot of the same rank receives the same expert
//               (or gets it from the weight source),
//               copy from there (an expert crosses the wire at most once per
//               receiving rank);
//   kFromSource no rank that can be read holds the expert (its ranks were
//               lost): the engine's weight source provides it (only with
//               PlanSources::from_source);
//   kIdle       the slot is out of service (its rank leaves or was lost).
// An entry < 0 in a phy2log means nothing: an old slot that holds nothing
// (a rank that joins), a new slot out of service.
// An expert that the receiving rank already holds never crosses the wire, so
// the number of experts moved over the wire is the least possible.
//
// Sender choice: the receivers of one expert are spread over the ranks that
// hold it in the old placement, preferring a holder on the receiver's node;
// among the candidates the one that has sent the fewest experts of this layer
// so far wins, ties broken by ring distance from the receiver. Requests are
// served most constrained expert (fewest holders) first.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/export.h"
#include "eplb/communicator.h"
#include "eplb/placement.h"

namespace eplb {

struct EPLB_EXPORT PlanOptions {
  // Ranks r and s share a node when r / ranks_per_node == s / ranks_per_node.
  // 0 (or >= num_ranks) puts every rank on one node.
  int ranks_per_node = 0;
  // Bytes of one expert, all its tensors together; only for the byte counts
  // (every expert of a layer has the same size).
  uint64_t bytes_per_expert = 0;
};

// Where a change of membership (membership.h) may read from.
struct EPLB_EXPORT PlanSources {
  // [num_ranks] or empty: 1 where a rank's old slots cannot be read (its
  // process is gone); such a rank's new slots must be out of service (< 0).
  std::vector<char> unreadable;
  // An expert that no readable rank holds is filled kFromSource; without
  // this the plan throws InvalidArgument naming it.
  bool from_source = false;
};

enum class SlotAction : uint8_t { kKeep, kLocalCopy, kReceive, kDuplicate, kFromSource, kIdle };

// "keep", "local_copy", "receive", "duplicate", "from_source", "idle".
EPLB_EXPORT const char* SlotActionName(SlotAction action);

// How one new slot gets its expert.
struct EPLB_EXPORT SlotFill {
  int32_t slot = -1;    // the new slot (global index)
  int32_t expert = -1;  // the expert it holds in the new placement
  SlotAction action = SlotAction::kKeep;
  // Where the bytes come from. kKeep: this slot. kLocalCopy: an old slot of
  // this rank (read from the weights in use). kReceive: an old slot of
  // src_rank. kDuplicate: a new slot of this rank whose action is kReceive.
  int32_t src_rank = -1;
  int32_t src_slot = -1;  // global slot index
};

// One expert crossing the wire: old slot src_slot of src_rank -> new slot
// dst_slot of dst_rank. src_rank != dst_rank.
struct EPLB_EXPORT WireMove {
  int32_t expert = -1;
  int32_t src_rank = -1;
  int32_t src_slot = -1;
  int32_t dst_rank = -1;
  int32_t dst_slot = -1;
  friend bool operator==(const WireMove&, const WireMove&) = default;
};

// What one rank does in a layer (or, summed, the whole layer).
struct EPLB_EXPORT RankTraffic {
  int kept = 0;              // slots left as they are
  int local_copies = 0;      // slots filled from an old slot of the same rank
  int duplicates = 0;        // slots filled from a received slot of the same rank
  int experts_received = 0;  // experts over the wire into this rank
  int experts_sent = 0;      // experts over the wire out of this rank
  int from_source = 0;       // slots filled from the engine's weight source
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;

  int slots_changed() const { return local_copies + duplicates + experts_received + from_source; }
  RankTraffic& operator+=(const RankTraffic& o);
  friend bool operator==(const RankTraffic&, const RankTraffic&) = default;
};

// The global plan of one MoE layer: identical on every rank.
struct EPLB_EXPORT LayerPlan {
  int layer = 0;
  int num_ranks = 0;
  int slots_per_rank = 0;
  uint64_t bytes_per_expert = 0;
  std::vector<SlotFill> fills;        // [R]: fills[p] is how new slot p is filled
  std::vector<WireMove> wire;         // every wire move, ascending dst_slot
  std::vector<RankTraffic> per_rank;  // [num_ranks]
  RankTraffic total;                  // sum over ranks

  // True when every slot keeps its expert: nothing to do on any rank.
  bool unchanged() const { return total.slots_changed() == 0; }

  // This rank's slots (fills of slots [rank * slots_per_rank, ...)).
  std::span<const SlotFill> FillsOf(int rank) const;
  // Wire moves out of / into this rank, in the order of `wire`.
  std::vector<WireMove> SendsOf(int rank) const;
  std::vector<WireMove> ReceivesOf(int rank) const;
  // This rank's local work in the order to run it: local copies (from old
  // slots) first, then duplicates (from slots filled by a receive).
  std::vector<SlotFill> LocalOf(int rank) const;
};

// Plans one layer from the old and new phy2log of that layer (size R each,
// R % num_ranks == 0). Throws InvalidArgument on mismatched sizes or experts
// out of range.
EPLB_EXPORT LayerPlan PlanLayer(std::span<const int32_t> old_phy2log, std::span<const int32_t> new_phy2log,
                    int num_ranks, int layer, const PlanOptions& options);
// The same, reading only where `sources` allows.
EPLB_EXPORT LayerPlan PlanLayer(std::span<const int32_t> old_phy2log, std::span<const int32_t> new_phy2log,
                                int num_ranks, int layer, const PlanOptions& options,
                                const PlanSources& sources);

// Plans layer `layer` of two placements of the same shape.
EPLB_EXPORT LayerPlan PlanLayer(const Placement& old_placement, const Placement& new_placement, int layer,
                    const PlanOptions& options);

// Plans every layer: a multi-layer plan is a plan per layer.
EPLB_EXPORT std::vector<LayerPlan> PlanMigration(const Placement& old_placement, const Placement& new_placement,
                                     const PlanOptions& options);

// A plan's wire moves split by where they go: between two ranks of one node
// or between nodes, nodes as PlanOptions::ranks_per_node has them (passed
// here, so that a plan made without node preference, ranks_per_node = 0, can
// be measured against the real nodes).
struct EPLB_EXPORT NodeTraffic {
  int64_t experts_within_nodes = 0;
  int64_t experts_between_nodes = 0;
  uint64_t bytes_within_nodes = 0;
  uint64_t bytes_between_nodes = 0;
  NodeTraffic& operator+=(const NodeTraffic& o);
  friend bool operator==(const NodeTraffic&, const NodeTraffic&) = default;
};

// Counts `plan`'s wire moves (bytes: plan.bytes_per_expert each) with ranks
// r and s on one node when r / ranks_per_node == s / ranks_per_node;
// ranks_per_node <= 0 puts every rank on one node.
EPLB_EXPORT NodeTraffic CountNodeTraffic(const LayerPlan& plan, int ranks_per_node);

// Where one tensor of the experts lives, to turn wire moves into the
// communicator's byte ranges. An expert may have several tensors (w1, w2,
// w3, scales); each crosses the wire as its own Transfer.
struct EPLB_EXPORT WireTensor {
  uint64_t bytes = 0;        // bytes of one expert of this tensor
  RegionId src_region = -1;  // the layer's weights (same id on every rank)
  uint64_t src_offset = 0;   // offset of the rank's first slot in src_region
  uint64_t src_stride = 0;   // bytes between consecutive slots of the rank
  RegionId dst_region = -1;  // where received experts land (staging)
  uint64_t dst_offset = 0;
  uint64_t dst_stride = 0;
};

// The global transfer list of a layer plan: for each wire move (in plan
// order), one Transfer per tensor, from the sender's old slot to the
// receiver's new slot (local slot index = slot % slots_per_rank).
EPLB_EXPORT std::vector<Transfer> WireTransfers(const LayerPlan& plan, std::span<const WireTensor> tensors);

}  // namespace eplb
