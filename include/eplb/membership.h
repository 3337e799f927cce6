// Membership: which of a run's processes serve, and what changes when that
// set changes (elastic EP: ranks join, leave, or are lost).
//
// A run has a capacity of process ranks [0, capacity); a membership is the
// ascending list of those that serve, and a process's group rank is its index
// in it. Slots per rank are fixed by the engine, so a placement for a
// membership of n ranks has n * slots_per_rank slots, numbered by group rank
// (the engine's EP group is rebuilt over the members alike).
//
// A change of membership moves weights in the union space: every process of
// the old or the new membership, ascending, with its slots_per_rank slots.
// Lost processes are in it as ranks that cannot be read and whose slots go
// out of service; joining ones as ranks that hold nothing yet. The plan in
// that space (transfer_plan.h) fills every new member's slots from a
// surviving replica where one exists and from the engine's weight source
// otherwise.
//
// Pure functions of their input, like the policies and the plan: every
// member computes the same result without talking.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "eplb/export.h"
#include "eplb/placement.h"
#include "eplb/policy.h"
#include "eplb/transfer_plan.h"

namespace eplb {

struct EPLB_EXPORT Membership {
  int64_t generation = 0;  // increases by one at every change
  std::vector<int> ranks;  // process ranks that serve, ascending

  int size() const { return static_cast<int>(ranks.size()); }
  // Group rank of process `rank`, or -1 when it is not a member.
  int index_of(int rank) const;
  bool contains(int rank) const { return index_of(rank) >= 0; }
  // Throws InvalidArgument unless ranks is non-empty, ascending, unique and
  // within [0, capacity).
  void Validate(int capacity) const;
  // "3 ranks (0, 1, 3), generation 2".
  std::string Describe() const;

  // Every process of [0, n): generation 0.
  static Membership All(int n);
};

// The membership after `lost` and `leaving` go and `joining` come; the
// generation is one more. Throws InvalidArgument when a lost or leaving rank
// is not a member, a joining one already is, or nobody would be left.
EPLB_EXPORT Membership NextMembership(const Membership& current, std::span<const int> lost,
                                      std::span<const int> leaving, std::span<const int> joining,
                                      int capacity);

// What a change of membership plans over, for every layer alike.
struct EPLB_EXPORT MembershipChange {
  Membership before, after;
  std::vector<int> lost;          // members of `before` whose process is gone
  std::vector<int> union_ranks;   // before + after, ascending: the plan's ranks
  std::vector<char> unreadable;   // [union_ranks]: 1 for a lost rank
  int slots_per_rank = 0;

  // Position of process `rank` in union_ranks, or -1.
  int union_index(int rank) const;
};

// Checks that `after` follows `before` (generation + 1, lost ranks members of
// `before` and not of `after`) and builds the union space.
EPLB_EXPORT MembershipChange DescribeChange(const Membership& before, const Membership& after,
                                            std::span<const int> lost, int slots_per_rank);

// Layer `layer` of `in_force` (over change.before) in the union space: each
// old member's slots as they are, a joining rank's slots holding nothing (-1).
EPLB_EXPORT std::vector<int32_t> UnionOld(const MembershipChange& change, const Placement& in_force, int layer);
// Layer `layer` of `next` (over change.after) in the union space: each new
// member's slots, the slots of a rank that leaves or was lost out of service (-1).
EPLB_EXPORT std::vector<int32_t> UnionNew(const MembershipChange& change, const Placement& next, int layer);

// The plan of one layer's change, over change.union_ranks (a WireMove's
// ranks are positions in it); experts no surviving rank holds are filled
// kFromSource.
EPLB_EXPORT LayerPlan PlanMembershipLayer(const MembershipChange& change, const Placement& in_force,
                                          const Placement& next, int layer, const PlanOptions& options);

// The placement for change.after: `policy` on `in` (whose num_ranks and
// num_replicas must be those of change.after; its previous is ignored: no
// placement of the new shape exists yet), then every slot a continuing
// member keeps serving keeps its expert where the new placement still
// wants it on that rank (slot preservation against what each holds), so
// the change moves as little as the new placement allows.
EPLB_EXPORT Placement PlaceForMembership(const Policy& policy, PolicyInput in, const MembershipChange& change,
                                         const Placement& in_force);

// Routing that never names a lost rank, for the time between a loss and the
// commit of the new placement: the placement in force (over `members`) with
// the slots of `lost` taken out of every expert's replicas.
struct EPLB_EXPORT LiveRouting {
  int num_layers = 0, num_experts = 0, num_slots = 0;
  int max_replicas = 0;            // width of log2phy
  std::vector<int32_t> logcnt;     // [L][E]: live replicas
  std::vector<int32_t> log2phy;    // [L][E][max_replicas]: live slots, ascending, -1 padded
  // (layer, expert) pairs with no live replica: tokens routed to them have
  // nowhere to go until the new placement is committed; the engine decides
  // (drop them, or route to another expert) -- the balancer reports them.
  std::vector<std::pair<int, int>> unreachable;
};
EPLB_EXPORT LiveRouting RouteAroundLost(const Placement& in_force, const Membership& members,
                                        std::span<const int> lost);

}  // namespace eplb
