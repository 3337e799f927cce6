#include "eplb/transfer_plan.h"

#include <algorithm>
#include <string>
#include <tuple>

#include "eplb/error.h"

namespace eplb {
namespace {

[[noreturn]] void Fail(int layer, const std::string& what) {
  throw InvalidArgument("plan: layer " + std::to_string(layer) + ": " + what);
}

// A rank that must receive `expert` into its new slot `slot`.
struct Request {
  int32_t expert;
  int32_t rank;
  int32_t slot;
};

}  // namespace

const char* SlotActionName(SlotAction action) {
  switch (action) {
    case SlotAction::kKeep:
      return "keep";
    case SlotAction::kLocalCopy:
      return "local_copy";
    case SlotAction::kReceive:
      return "receive";
    case SlotAction::kDuplicate:
      return "duplicate";
    case SlotAction::kFromSource:
      return "from_source";
    case SlotAction::kIdle:
      return "idle";
  }
  return "?";
}

RankTraffic& RankTraffic::operator+=(const RankTraffic& o) {
  kept += o.kept;
  local_copies += o.local_copies;
  duplicates += o.duplicates;
  experts_received += o.experts_received;
  experts_sent += o.experts_sent;
  from_source += o.from_source;
  bytes_received += o.bytes_received;
  bytes_sent += o.bytes_sent;
  return *this;
}

std::span<const SlotFill> LayerPlan::FillsOf(int rank) const {
  return std::span<const SlotFill>(fills).subspan(static_cast<size_t>(rank) * slots_per_rank,
                                                  static_cast<size_t>(slots_per_rank));
}

std::vector<WireMove> LayerPlan::SendsOf(int rank) const {
  std::vector<WireMove> out;
  for (const WireMove& m : wire)
    if (m.src_rank == rank) out.push_back(m);
  return out;
}

std::vector<WireMove> LayerPlan::ReceivesOf(int rank) const {
  std::vector<WireMove> out;
  for (const WireMove& m : wire)
    if (m.dst_rank == rank) out.push_back(m);
  return out;
}

std::vector<SlotFill> LayerPlan::LocalOf(int rank) const {
  std::vector<SlotFill> out;
  for (SlotAction kind : {SlotAction::kLocalCopy, SlotAction::kDuplicate})
    for (const SlotFill& f : FillsOf(rank))
      if (f.action == kind) out.push_back(f);
  return out;
}

LayerPlan PlanLayer(std::span<const int32_t> old_phy2log, std::span<const int32_t> new_phy2log,
                    int num_ranks, int layer, const PlanOptions& options) {
  return PlanLayer(old_phy2log, new_phy2log, num_ranks, layer, options, PlanSources{});
}

LayerPlan PlanLayer(std::span<const int32_t> old_phy2log, std::span<const int32_t> new_phy2log,
                    int num_ranks, int layer, const PlanOptions& options, const PlanSources& sources) {
  const int num_slots = static_cast<int>(new_phy2log.size());
  if (old_phy2log.size() != new_phy2log.size())
    Fail(layer, "old placement has " + std::to_string(old_phy2log.size()) +
                    " slots, new placement " + std::to_string(new_phy2log.size()));
  if (num_ranks <= 0 || num_slots == 0 || num_slots % num_ranks != 0)
    Fail(layer, std::to_string(num_slots) + " slots do not divide over " +
                    std::to_string(num_ranks) + " ranks");
  if (options.ranks_per_node < 0) Fail(layer, "ranks_per_node must be >= 0");
  if (!sources.unreadable.empty() && sources.unreadable.size() != static_cast<size_t>(num_ranks))
    Fail(layer, "unreadable has " + std::to_string(sources.unreadable.size()) + " entries for " +
                    std::to_string(num_ranks) + " ranks");
  const int per_rank = num_slots / num_ranks;
  auto readable = [&](int rank) { return sources.unreadable.empty() || !sources.unreadable[rank]; };
  int num_experts = 0;
  for (int p = 0; p < num_slots; ++p) {
    if (!readable(p / per_rank) && new_phy2log[p] >= 0)
      Fail(layer, "rank " + std::to_string(p / per_rank) + " cannot be read but its new slot " +
                      std::to_string(p) + " holds an expert");
    num_experts = std::max({num_experts, old_phy2log[p] + 1, new_phy2log[p] + 1});
  }
  const int per_node = options.ranks_per_node > 0 ? options.ranks_per_node : num_ranks;
  auto node_of = [per_node](int rank) { return rank / per_node; };

  LayerPlan plan;
  plan.layer = layer;
  plan.num_ranks = num_ranks;
  plan.slots_per_rank = per_rank;
  plan.bytes_per_expert = options.bytes_per_expert;
  plan.fills.resize(num_slots);
  plan.per_rank.assign(num_ranks, RankTraffic{});

  // first_old[r][e]: lowest old slot of rank r holding e, or -1.
  // holders[e]: ranks holding e in the old placement (ascending, with that slot).
  std::vector<int32_t> first_old(static_cast<size_t>(num_ranks) * num_experts, -1);
  std::vector<std::vector<int32_t>> holders(num_experts);
  for (int p = 0; p < num_slots; ++p) {
    int r = p / per_rank, e = old_phy2log[p];
    if (e < 0 || !readable(r)) continue;  // holds nothing that can be read
    int32_t& s = first_old[static_cast<size_t>(r) * num_experts + e];
    if (s < 0) {
      s = p;
      holders[e].push_back(r);
    }
  }

  // Classify every new slot. The first slot of a rank that needs an expert
  // the rank does not hold receives it; later ones duplicate that slot.
  std::vector<Request> requests;
  std::vector<int32_t> first_new(static_cast<size_t>(num_ranks) * num_experts, -1);
  for (int p = 0; p < num_slots; ++p) {
    const int r = p / per_rank, e = new_phy2log[p];
    SlotFill& f = plan.fills[p];
    f.slot = p;
    f.expert = e;
    f.src_rank = r;
    RankTraffic& t = plan.per_rank[r];
    if (e < 0) {
      f.action = SlotAction::kIdle;  // out of service
      continue;
    }
    const int32_t local = first_old[static_cast<size_t>(r) * num_experts + e];
    if (old_phy2log[p] == e) {
      f.action = SlotAction::kKeep;
      f.src_slot = p;
      ++t.kept;
    } else if (local >= 0) {
      f.action = SlotAction::kLocalCopy;
      f.src_slot = local;
      ++t.local_copies;
    } else if (int32_t& recv = first_new[static_cast<size_t>(r) * num_experts + e]; recv >= 0) {
      f.action = SlotAction::kDuplicate;
      f.src_slot = recv;
      ++t.duplicates;
    } else if (holders[e].empty()) {
      if (!sources.from_source)
        Fail(layer, "expert " + std::to_string(e) + " (new slot " + std::to_string(p) +
                        ") is held by no readable rank in the old placement");
      f.action = SlotAction::kFromSource;
      recv = p;  // later slots of this rank duplicate it
      ++t.from_source;
    } else {
      f.action = SlotAction::kReceive;
      recv = p;
      requests.push_back({e, r, p});
    }
  }

  // Choose senders: most constrained experts first, then by expert and rank.
  std::stable_sort(requests.begin(), requests.end(), [&](const Request& a, const Request& b) {
    return std::make_tuple(holders[a.expert].size(), a.expert, a.rank) <
           std::make_tuple(holders[b.expert].size(), b.expert, b.rank);
  });
  for (const Request& q : requests) {
    const std::vector<int32_t>& hs = holders[q.expert];
    const bool any_same_node =
        std::any_of(hs.begin(), hs.end(), [&](int32_t h) { return node_of(h) == node_of(q.rank); });
    int best = -1;
    std::tuple<int, int> best_key;
    for (int32_t h : hs) {
      if (any_same_node && node_of(h) != node_of(q.rank)) continue;
      std::tuple<int, int> key{plan.per_rank[h].experts_sent, (h - q.rank + num_ranks) % num_ranks};
      if (best < 0 || key < best_key) {
        best = h;
        best_key = key;
      }
    }
    SlotFill& f = plan.fills[q.slot];
    f.src_rank = best;
    f.src_slot = first_old[static_cast<size_t>(best) * num_experts + q.expert];
    plan.wire.push_back({q.expert, best, f.src_slot, q.rank, q.slot});
    RankTraffic& sender = plan.per_rank[best];
    RankTraffic& receiver = plan.per_rank[q.rank];
    ++sender.experts_sent;
    sender.bytes_sent += options.bytes_per_expert;
    ++receiver.experts_received;
    receiver.bytes_received += options.bytes_per_expert;
  }
  std::sort(plan.wire.begin(), plan.wire.end(),
            [](const WireMove& a, const WireMove& b) { return a.dst_slot < b.dst_slot; });
  for (const RankTraffic& t : plan.per_rank) plan.total += t;
  return plan;
}

LayerPlan PlanLayer(const Placement& old_placement, const Placement& new_placement, int layer,
                    const PlanOptions& options) {
  if (old_placement.num_slots != new_placement.num_slots ||
      old_placement.num_ranks != new_placement.num_ranks ||
      old_placement.num_experts != new_placement.num_experts ||
      old_placement.num_layers != new_placement.num_layers)
    Fail(layer, "old and new placements differ in shape (layers x experts x slots x ranks " +
                    std::to_string(old_placement.num_layers) + "x" +
                    std::to_string(old_placement.num_experts) + "x" +
                    std::to_string(old_placement.num_slots) + "x" +
                    std::to_string(old_placement.num_ranks) + " vs " +
                    std::to_string(new_placement.num_layers) + "x" +
                    std::to_string(new_placement.num_experts) + "x" +
                    std::to_string(new_placement.num_slots) + "x" +
                    std::to_string(new_placement.num_ranks) + ")");
  if (layer < 0 || layer >= old_placement.num_layers)
    Fail(layer, "outside [0, " + std::to_string(old_placement.num_layers) + ")");
  return PlanLayer(old_placement.layer_phy2log(layer), new_placement.layer_phy2log(layer),
                   old_placement.num_ranks, layer, options);
}

std::vector<LayerPlan> PlanMigration(const Placement& old_placement, const Placement& new_placement,
                                     const PlanOptions& options) {
  std::vector<LayerPlan> plans;
  plans.reserve(old_placement.num_layers);
  for (int l = 0; l < old_placement.num_layers; ++l)
    plans.push_back(PlanLayer(old_placement, new_placement, l, options));
  return plans;
}

std::vector<Transfer> WireTransfers(const LayerPlan& plan, std::span<const WireTensor> tensors) {
  std::vector<Transfer> out;
  out.reserve(plan.wire.size() * tensors.size());
  for (const WireMove& m : plan.wire) {
    const uint64_t src_local = static_cast<uint64_t>(m.src_slot % plan.slots_per_rank);
    const uint64_t dst_local = static_cast<uint64_t>(m.dst_slot % plan.slots_per_rank);
    for (const WireTensor& t : tensors) {
      if (t.bytes == 0) continue;
      out.push_back(Transfer{m.src_rank, t.src_region, t.src_offset + src_local * t.src_stride,
                             m.dst_rank, t.dst_region, t.dst_offset + dst_local * t.dst_stride,
                             t.bytes});
    }
  }
  return out;
}

}  // namespace eplb
