#include "eplb/membership.h"

#include <algorithm>
#include <set>

#include "eplb/error.h"
#include "policy/preserve.h"
#include "util/text.h"

namespace eplb {
namespace {

[[noreturn]] void Fail(const std::string& what) { throw InvalidArgument("membership: " + what); }

}  // namespace

int Membership::index_of(int rank) const {
  auto it = std::lower_bound(ranks.begin(), ranks.end(), rank);
  return it != ranks.end() && *it == rank ? static_cast<int>(it - ranks.begin()) : -1;
}

void Membership::Validate(int capacity) const {
  if (ranks.empty()) Fail("no rank serves");
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= capacity)
      Fail("rank " + std::to_string(ranks[i]) + " outside [0, " + std::to_string(capacity) + ")");
    if (i > 0 && ranks[i] <= ranks[i - 1]) Fail("ranks not ascending and unique: " + util::RankList(ranks));
  }
  if (generation < 0) Fail("negative generation");
}

std::string Membership::Describe() const {
  return std::to_string(ranks.size()) + " rank" + (ranks.size() == 1 ? "" : "s") + " (" + util::RankList(ranks) +
         "), generation " + std::to_string(generation);
}

Membership Membership::All(int n) {
  Membership m;
  for (int r = 0; r < n; ++r) m.ranks.push_back(r);
  return m;
}

Membership NextMembership(const Membership& current, std::span<const int> lost, std::span<const int> leaving,
                          std::span<const int> joining, int capacity) {
  current.Validate(capacity);
  std::set<int> next(current.ranks.begin(), current.ranks.end());
  for (auto [list, what] : {std::pair{lost, "lost"}, std::pair{leaving, "leaving"}})
    for (int r : list) {
      if (!current.contains(r)) Fail(std::string(what) + " rank " + std::to_string(r) + " is not a member");
      next.erase(r);
    }
  for (int r : joining) {
    if (r < 0 || r >= capacity)
      Fail("joining rank " + std::to_string(r) + " outside [0, " + std::to_string(capacity) + ")");
    if (current.contains(r)) Fail("joining rank " + std::to_string(r) + " is already a member");
    next.insert(r);
  }
  if (next.empty()) Fail("no rank would be left");
  Membership m;
  m.generation = current.generation + 1;
  m.ranks.assign(next.begin(), next.end());
  return m;
}

int MembershipChange::union_index(int rank) const {
  auto it = std::lower_bound(union_ranks.begin(), union_ranks.end(), rank);
  return it != union_ranks.end() && *it == rank ? static_cast<int>(it - union_ranks.begin()) : -1;
}

MembershipChange DescribeChange(const Membership& before, const Membership& after, std::span<const int> lost,
                                int slots_per_rank) {
  if (slots_per_rank <= 0) Fail("slots per rank must be positive");
  if (after.generation != before.generation + 1)
    Fail("generation " + std::to_string(after.generation) + " does not follow " +
         std::to_string(before.generation));
  MembershipChange c;
  c.before = before;
  c.after = after;
  c.slots_per_rank = slots_per_rank;
  std::set<int> all(before.ranks.begin(), before.ranks.end());
  all.insert(after.ranks.begin(), after.ranks.end());
  c.union_ranks.assign(all.begin(), all.end());
  c.unreadable.assign(c.union_ranks.size(), 0);
  for (int r : lost) {
    if (!before.contains(r)) Fail("lost rank " + std::to_string(r) + " was not a member");
    if (after.contains(r)) Fail("lost rank " + std::to_string(r) + " is still a member");
    c.unreadable[c.union_index(r)] = 1;
    c.lost.push_back(r);
  }
  std::sort(c.lost.begin(), c.lost.end());
  return c;
}

namespace {

// Layer `layer` of `p` (over `members`) spread over the union space: each
// member's slots at its union position, every other slot -1.
std::vector<int32_t> ToUnion(const MembershipChange& c, const Placement& p, const Membership& members,
                             int layer, const char* which) {
  if (p.num_ranks != members.size() || p.slots_per_rank() != c.slots_per_rank)
    Fail(std::string(which) + " has " + std::to_string(p.num_ranks) + " ranks of " +
         std::to_string(p.slots_per_rank()) + " slots; the membership " + members.Describe());
  const int spr = c.slots_per_rank;
  std::vector<int32_t> out(c.union_ranks.size() * spr, -1);
  auto row = p.layer_phy2log(layer);
  for (int i = 0; i < members.size(); ++i)
    std::copy_n(row.begin() + i * spr, spr, out.begin() + c.union_index(members.ranks[i]) * spr);
  return out;
}

}  // namespace

std::vector<int32_t> UnionOld(const MembershipChange& c, const Placement& in_force, int layer) {
  return ToUnion(c, in_force, c.before, layer, "the placement in force");
}

std::vector<int32_t> UnionNew(const MembershipChange& c, const Placement& next, int layer) {
  return ToUnion(c, next, c.after, layer, "the new placement");
}

LayerPlan PlanMembershipLayer(const MembershipChange& c, const Placement& in_force, const Placement& next,
                              int layer, const PlanOptions& options) {
  const auto old_row = UnionOld(c, in_force, layer);
  const auto new_row = UnionNew(c, next, layer);
  return PlanLayer(old_row, new_row, static_cast<int>(c.union_ranks.size()), layer, options,
                   PlanSources{c.unreadable, true});
}

Placement PlaceForMembership(const Policy& policy, PolicyInput in, const MembershipChange& c,
                             const Placement& in_force) {
  if (in.num_ranks != c.after.size() || in.num_replicas != c.after.size() * c.slots_per_rank)
    Fail("the policy input has " + std::to_string(in.num_replicas) + " slots on " +
         std::to_string(in.num_ranks) + " ranks; the membership " + c.after.Describe() + " needs " +
         std::to_string(c.after.size() * c.slots_per_rank) + " slots");
  in.previous = nullptr;
  const Placement fresh = ComputePlacement(policy, in);
  // What each new member holds now, in the new shape: a continuing member's
  // old slots, nothing (-1) for a joining one. Not a valid placement (an
  // expert may have no replica left), which slot preservation allows.
  Placement held = fresh;
  const int spr = c.slots_per_rank;
  for (int l = 0; l < fresh.num_layers; ++l) {
    auto out = held.layer_phy2log(l);
    auto old_row = in_force.layer_phy2log(l);
    for (int i = 0; i < c.after.size(); ++i) {
      const int was = c.before.index_of(c.after.ranks[i]);
      for (int j = 0; j < spr; ++j) out[i * spr + j] = was >= 0 ? old_row[was * spr + j] : -1;
    }
  }
  return PreserveSlots(held, fresh);
}

LiveRouting RouteAroundLost(const Placement& p, const Membership& members, std::span<const int> lost) {
  if (p.num_ranks != members.size())
    Fail("the placement has " + std::to_string(p.num_ranks) + " ranks; the membership " + members.Describe());
  std::vector<char> dead(p.num_ranks, 0);
  for (int r : lost) {
    const int i = members.index_of(r);
    if (i < 0) Fail("lost rank " + std::to_string(r) + " is not a member");
    dead[i] = 1;
  }
  LiveRouting out;
  out.num_layers = p.num_layers;
  out.num_experts = p.num_experts;
  out.num_slots = p.num_slots;
  out.logcnt.assign(static_cast<size_t>(p.num_layers) * p.num_experts, 0);
  for (int l = 0; l < p.num_layers; ++l)
    for (int s = 0; s < p.num_slots; ++s)
      if (!dead[p.rank_of_slot(s)]) ++out.logcnt[static_cast<size_t>(l) * p.num_experts + p.expert_at(l, s)];
  out.max_replicas = std::max(1, *std::max_element(out.logcnt.begin(), out.logcnt.end()));
  out.log2phy.assign(out.logcnt.size() * out.max_replicas, -1);
  std::vector<int32_t> filled(out.logcnt.size(), 0);
  for (int l = 0; l < p.num_layers; ++l)
    for (int s = 0; s < p.num_slots; ++s) {
      if (dead[p.rank_of_slot(s)]) continue;
      const size_t cell = static_cast<size_t>(l) * p.num_experts + p.expert_at(l, s);
      out.log2phy[cell * out.max_replicas + filled[cell]++] = s;
    }
  for (int l = 0; l < p.num_layers; ++l)
    for (int e = 0; e < p.num_experts; ++e)
      if (out.logcnt[static_cast<size_t>(l) * p.num_experts + e] == 0) out.unreachable.push_back({l, e});
  return out;
}

}  // namespace eplb
