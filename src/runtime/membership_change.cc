// ChangeMembership (eplb/elastic.h): the record of the next generation, the
// placement in force for processes that join, a transition group over every
// process that takes part, the load sum, the policy over the new members,
// and per layer the plan in the union space (membership.h) run on the
// transition group: wire moves into staging, local copies, the weight
// source, then the new slots written into the weights.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/elastic.h"
#include "eplb/error.h"
#include "eplb/store.h"
#include "util/text.h"
#include "wire/codec.h"

namespace eplb {
namespace {

constexpr size_t kMaxRanksOnWire = 1 << 16;

// "1, 2, 5", or "none".
std::string RankList(const std::vector<int>& ranks) { return ranks.empty() ? "none" : util::RankList(ranks); }

// One generation's record: the membership it follows, its own, and who was lost.
struct Record {
  Membership before, after;
  std::vector<int> lost;
};

void PutRanks(wire::Writer& w, const std::vector<int>& ranks) {
  w.Put(static_cast<uint32_t>(ranks.size()));
  for (int r : ranks) w.Put(static_cast<int32_t>(r));
}
std::vector<int> GetRanks(wire::Reader& r) {
  const uint32_t n = r.Get<uint32_t>();
  if (n > kMaxRanksOnWire) r.Fail(fmt::format("{} ranks", n));
  std::vector<int> out(n);
  for (auto& x : out) x = r.Get<int32_t>();
  return out;
}

std::vector<uint8_t> EncodeRecord(const Record& rec) {
  wire::Writer w(wire::Kind::kMembership);
  w.Put(rec.before.generation);
  PutRanks(w, rec.before.ranks);
  w.Put(rec.after.generation);
  PutRanks(w, rec.after.ranks);
  PutRanks(w, rec.lost);
  return w.Take();
}
Record DecodeRecord(std::span<const uint8_t> bytes, int capacity, wire::Origin origin) {
  wire::Reader r(bytes, wire::Kind::kMembership, origin);
  Record rec;
  rec.before.generation = r.Get<int64_t>();
  rec.before.ranks = GetRanks(r);
  rec.after.generation = r.Get<int64_t>();
  rec.after.ranks = GetRanks(r);
  rec.lost = GetRanks(r);
  r.Finish();
  try {
    rec.before.Validate(capacity);
    rec.after.Validate(capacity);
    if (rec.after.generation != rec.before.generation + 1) r.Fail("generations do not follow");
    for (int x : rec.lost)
      if (!rec.before.contains(x) || rec.after.contains(x)) r.Fail("lost rank " + std::to_string(x));
  } catch (const InvalidArgument& e) {
    r.Fail(e.what());
  }
  return rec;
}

std::vector<uint8_t> EncodePlacement(const Placement& p) {
  wire::Writer w(wire::Kind::kPlacement);
  w.Put(static_cast<int32_t>(p.num_layers)).Put(static_cast<int32_t>(p.num_experts));
  w.Put(static_cast<int32_t>(p.num_slots)).Put(static_cast<int32_t>(p.num_ranks));
  w.PutFixed(p.phy2log.data(), p.phy2log.size() * sizeof(int32_t));
  return w.Take();
}
Placement DecodePlacement(std::span<const uint8_t> bytes, wire::Origin origin) {
  wire::Reader r(bytes, wire::Kind::kPlacement, origin);
  const int layers = r.Get<int32_t>(), experts = r.Get<int32_t>(), slots = r.Get<int32_t>(),
            ranks = r.Get<int32_t>();
  if (layers <= 0 || experts <= 0 || slots <= 0 || ranks <= 0 ||
      static_cast<long long>(layers) * slots > kMaxPlacementEntries)
    r.Fail(fmt::format("shape {} x {} x {} x {}", layers, experts, slots, ranks));
  std::vector<int32_t> phy2log(static_cast<size_t>(layers) * slots);
  r.GetFixed(phy2log.data(), phy2log.size() * sizeof(int32_t));
  r.Finish();
  try {
    Placement p = Placement::FromPhy2Log(layers, experts, ranks, std::move(phy2log));
    if (p.num_slots != slots) r.Fail("slot count");
    p.Validate();
    return p;
  } catch (const InvalidArgument& e) {
    r.Fail(e.what());
  }
}

// The placement in force over `before`: each readable member's slots as its
// own map (`maps`, ascending by rank) says, a lost member's slots (never read)
// as the lowest member's map says. Not validated: where members are one
// commit apart an expert may have no replica left (the weight source
// restores it), another two.
Placement AssembleInForce(const Membership& before, const std::vector<std::pair<int, Placement>>& maps, int me) {
  const auto& [lowest, base] = maps.front();
  if (base.num_ranks != before.size())
    throw Error("elastic", "membership change",
                fmt::format("rank {}'s placement in force has {} ranks; the membership {}", lowest, base.num_ranks,
                            before.Describe()),
                me, lowest);
  Placement p = base;
  const int spr = base.slots_per_rank();
  std::vector<char> apart(base.num_layers, 0);
  for (const auto& [r, m] : maps) {
    if (m.num_layers != base.num_layers || m.num_experts != base.num_experts || m.num_slots != base.num_slots ||
        m.num_ranks != base.num_ranks)
      throw Error("elastic", "membership change",
                  fmt::format("rank {}'s placement in force is {} layers x {} experts x {} slots, rank {}'s {} x {} x {}",
                              r, m.num_layers, m.num_experts, m.num_slots, lowest, base.num_layers,
                              base.num_experts, base.num_slots),
                  me, r);
    const int i = before.index_of(r);
    for (int l = 0; l < p.num_layers; ++l) {
      auto own = m.layer_phy2log(l).subspan(static_cast<size_t>(i) * spr, spr);
      auto out = p.layer_phy2log(l).subspan(static_cast<size_t>(i) * spr, spr);
      std::copy(own.begin(), own.end(), out.begin());
    }
    for (int l = 0; l < p.num_layers; ++l)
      apart[l] |= !std::equal(m.layer_phy2log(l).begin(), m.layer_phy2log(l).end(), base.layer_phy2log(l).begin());
  }
  p.Derive();
  const auto layers_apart = std::count(apart.begin(), apart.end(), 1);
  if (layers_apart > 0)
    spdlog::warn("eplb: rank {}: the members' placements in force differ in {} layer(s) (a commit that reached "
                 "some members only); each member's slots are taken as its own map says",
                 me, layers_apart);
  return p;
}

// Mean over live ranks of their load / the largest, replicas on live ranks
// only; an expert with no live replica serves nobody (its load is dropped).
double LiveBalancedness(const LoadMatrix& load, const Placement& p, const Membership& m,
                        std::span<const int> lost) {
  std::vector<char> dead(p.num_ranks, 0);
  for (int r : lost)
    if (int i = m.index_of(r); i >= 0) dead[i] = 1;
  double sum = 0;
  int layers = 0;
  for (int l = 0; l < p.num_layers; ++l) {
    std::vector<int> live(p.num_experts, 0);
    for (int s = 0; s < p.num_slots; ++s)
      if (!dead[p.rank_of_slot(s)]) ++live[p.expert_at(l, s)];
    std::vector<double> rank_load(p.num_ranks, 0);
    for (int s = 0; s < p.num_slots; ++s) {
      const int e = p.expert_at(l, s);
      if (!dead[p.rank_of_slot(s)]) rank_load[p.rank_of_slot(s)] += load.at(l, e) / live[e];
    }
    double total = 0, most = 0;
    int n = 0;
    for (int r = 0; r < p.num_ranks; ++r)
      if (!dead[r]) total += rank_load[r], most = std::max(most, rank_load[r]), ++n;
    sum += most > 0 ? total / n / most : 1.0;
    ++layers;
  }
  return layers > 0 ? sum / layers : 1.0;
}

// The record this change follows: a member proposes its view and takes the
// one that stands; a joining process looks for the generation it joins in.
Record AgreeOnRecord(Store& store, const std::string& name, int me, const Membership& before,
                     const MembershipChangeRequest& req, const MembershipChangeOptions& opt, Deadline deadline) {
  auto key = [&](int64_t g) { return fmt::format("{}/generation/{}", name, g); };
  if (!before.ranks.empty()) {
    Record mine;
    mine.before = before;
    mine.after = NextMembership(before, req.lost, req.leaving, req.joining, opt.capacity);
    mine.lost = req.lost;
    std::sort(mine.lost.begin(), mine.lost.end());
    const auto stands = store.SetIfAbsent(key(mine.after.generation), EncodeRecord(mine));
    Record rec = DecodeRecord(stands, opt.capacity, {"elastic", "the record of the next generation", me, -1});
    if (rec.before.ranks != before.ranks)
      throw Error("elastic", "membership change",
                  fmt::format("the record of generation {} follows members {}, this rank serves with {}",
                              rec.after.generation, RankList(rec.before.ranks), RankList(before.ranks)),
                  me);
    if (rec.after.ranks != mine.after.ranks || rec.lost != mine.lost)
      spdlog::warn("eplb: rank {}: generation {} was recorded as {} (lost: {}); this rank proposed {} (lost: {})",
                   me, rec.after.generation, RankList(rec.after.ranks), RankList(rec.lost),
                   RankList(mine.after.ranks), RankList(mine.lost));
    return rec;
  }
  // Joining: generations are recorded in order; the first one whose new
  // members include this process and whose old ones do not is the one.
  for (int64_t g = 1; g < (int64_t{1} << 20); ++g) {
    Record rec = DecodeRecord(store.Get(key(g), deadline), opt.capacity,
                              {"elastic", "the record of generation " + std::to_string(g), me, -1});
    if (rec.after.contains(me) && !rec.before.contains(me)) return rec;
  }
  throw Error("elastic", "join", "no generation records this process joining", me);
}

}  // namespace

MembershipChangeResult ChangeMembership(std::shared_ptr<Store> store, int me, const Membership& before_in,
                                        const Placement& in_force_in, const LoadMatrix& load,
                                        const MembershipChangeRequest& req, const std::vector<LayerWeights>& weights,
                                        const WeightSource& source, const MembershipChangeOptions& opt) {
  const auto start = Clock::now();
  const Deadline deadline = DeadlineAfter(opt.deadline);
  if (!store) throw InvalidArgument("elastic: no store");
  if (opt.capacity <= 0 || opt.slots_per_rank <= 0)
    throw InvalidArgument("elastic: capacity and slots_per_rank must be positive");
  if (me < 0 || me >= opt.capacity)
    throw InvalidArgument(fmt::format("elastic: rank {} outside [0, {})", me, opt.capacity));
  if (weights.empty() || static_cast<int>(weights.size()) != load.num_layers)
    throw InvalidArgument(fmt::format("elastic: {} layers of weights for a load of {} layers", weights.size(),
                                      load.num_layers));
  const bool joining = before_in.ranks.empty();
  if (joining && std::find(req.joining.begin(), req.joining.end(), me) == req.joining.end())
    throw InvalidArgument(fmt::format("elastic: rank {} has no membership and is not joining", me));
  if (!joining && !before_in.contains(me))
    throw InvalidArgument(fmt::format("elastic: rank {} is not a member of {}", me, before_in.Describe()));

  const Record rec = AgreeOnRecord(*store, opt.name, me, before_in, req, opt, deadline);
  MembershipChangeResult result;
  result.before = rec.before;
  result.after = rec.after;
  result.lost = rec.lost;
  if (std::find(rec.lost.begin(), rec.lost.end(), me) != rec.lost.end()) {
    spdlog::error("eplb: rank {}: generation {} declares this rank lost; it does not serve any more", me,
                  rec.after.generation);
    return result;
  }
  const std::string gen = fmt::format("{}/g{}", opt.name, rec.after.generation);
  const MembershipChange change = DescribeChange(rec.before, rec.after, rec.lost, opt.slots_per_rank);

  // The placement in force, assembled from each readable member's own slots:
  // a member's bytes are what its own map says, and members may be one
  // commit apart (a rank lost at the step a layer commits: the step's
  // collective completed on some survivors only, and they committed). Each
  // member publishes its map; joining processes learn the assembly too.
  std::vector<int> transition;  // every process taking part, ascending
  for (int r : change.union_ranks)
    if (!change.unreadable[change.union_index(r)]) transition.push_back(r);
  std::vector<int> readable_members;
  for (int r : transition)
    if (rec.before.contains(r)) readable_members.push_back(r);
  if (readable_members.empty())
    throw Error("elastic", "membership change",
                fmt::format("every member of generation {} ({}) is lost: no process holds the placement in force",
                            rec.before.generation, RankList(rec.before.ranks)),
                me);
  const std::string placement_key = gen + "/placement/";
  if (!joining) store->Set(placement_key + std::to_string(me), EncodePlacement(in_force_in));
  std::vector<std::pair<int, Placement>> maps;
  for (int r : readable_members)
    maps.emplace_back(r, DecodePlacement(store->Get(placement_key + std::to_string(r), deadline),
                                         {"elastic", "the placement in force", me, r}));
  const Placement in_force = AssembleInForce(rec.before, maps, me);
  if (in_force.num_layers != load.num_layers || in_force.num_experts != load.num_experts)
    throw InvalidArgument(fmt::format("elastic: the placement in force is {} layers x {} experts, the load {} x {}",
                                      in_force.num_layers, in_force.num_experts, load.num_layers,
                                      load.num_experts));

  // The transition group: every process that takes part, ranked in order.
  const int t_rank = static_cast<int>(std::find(transition.begin(), transition.end(), me) - transition.begin());
  const int device = weights[0].tensors.empty() || weights[0].tensors[0].memory.kind != MemoryKind::kCuda
                         ? -1
                         : weights[0].tensors[0].memory.device;
  auto gstore = MakePrefixStore(store, gen);
  BalancerLinks links = MakeBalancerLinks(gstore, t_rank, static_cast<int>(transition.size()), opt.communicator,
                                          deadline, device);
  result.communicator = links.selection.name;
  auto comm = links.make_communicator("move", deadline);
  auto control = links.make_control_group("control", deadline);
  auto copier = links.make_copier();

  // The load every process saw, summed in rank order (the same bits everywhere).
  LoadMatrix sum = load;
  control->AllReduceSum(std::span<double>(sum.values), deadline);

  auto policy = MakePolicy(opt.policy);
  PolicyInput in;
  in.load = &sum;
  in.num_ranks = rec.after.size();
  in.num_replicas = rec.after.size() * opt.slots_per_rank;
  in.num_groups = opt.num_groups;
  in.num_nodes = opt.ranks_per_node > 0 && in.num_ranks % opt.ranks_per_node == 0 ? in.num_ranks / opt.ranks_per_node : 1;
  const Placement next = PlaceForMembership(*policy, in, change, in_force);
  result.balancedness_before = LiveBalancedness(sum, in_force, rec.before, rec.lost);
  result.balancedness_after = ComputeBalancedness(sum, next).mean;

  // Regions, registered in the same order everywhere: every layer's tensors,
  // then one staging buffer per tensor index, as large as its largest layer.
  const int spr = opt.slots_per_rank;
  const size_t tensors = weights[0].tensors.size();
  std::vector<std::vector<RegionId>> weight_ids(weights.size());
  std::vector<uint64_t> staging_bytes(tensors, 0);
  for (size_t l = 0; l < weights.size(); ++l) {
    if (weights[l].tensors.size() != tensors)
      throw InvalidArgument(fmt::format("elastic: layer {} has {} tensors, layer 0 {}", l, weights[l].tensors.size(), tensors));
    for (size_t t = 0; t < tensors; ++t) {
      const ExpertTensor& x = weights[l].tensors[t];
      weight_ids[l].push_back(comm->RegisterRegion(x.memory, deadline));
      staging_bytes[t] = std::max(staging_bytes[t], x.bytes_per_expert * spr);
    }
  }
  std::vector<MemoryRegion> staging;
  std::vector<RegionId> staging_ids;
  struct FreeStaging {
    LocalCopier* copier;
    std::vector<MemoryRegion>* regions;
    ~FreeStaging() {
      for (auto& r : *regions) copier->Free(r);
    }
  } free_staging{copier.get(), &staging};
  for (size_t t = 0; t < tensors; ++t) {
    staging.push_back(copier->Allocate(staging_bytes[t]));
    staging_ids.push_back(comm->RegisterRegion(staging.back(), deadline));
  }

  // Union position -> rank in the transition group (-1: lost, never in a transfer).
  std::vector<int> group_rank(change.union_ranks.size(), -1);
  for (size_t i = 0; i < transition.size(); ++i) group_rank[change.union_index(transition[i])] = static_cast<int>(i);
  const int u_me = change.union_index(me);
  const bool serves = rec.after.contains(me);
  auto stride = [](const ExpertTensor& x) { return x.stride ? x.stride : x.bytes_per_expert; };
  auto at = [](const MemoryRegion& m, uint64_t offset) {
    MemoryRegion r = m;
    r.base = static_cast<uint8_t*>(m.base) + offset;
    return r;
  };
  for (int l = 0; l < in_force.num_layers; ++l) {
    uint64_t expert_bytes = 0;
    for (const ExpertTensor& x : weights[l].tensors) expert_bytes += x.bytes_per_expert;
    const LayerPlan plan = PlanMembershipLayer(change, in_force, next, l, PlanOptions{0, expert_bytes});
    result.experts_over_wire += plan.total.experts_received;
    result.experts_from_source += plan.total.from_source;
    result.bytes_over_wire += plan.total.bytes_received;
    result.bytes_from_source += static_cast<uint64_t>(plan.total.from_source) * expert_bytes;
    if (plan.unchanged()) continue;
    std::vector<WireTensor> wt;
    for (size_t t = 0; t < tensors; ++t) {
      const ExpertTensor& x = weights[l].tensors[t];
      wt.push_back({x.bytes_per_expert, weight_ids[l][t], 0, stride(x), staging_ids[t], 0, x.bytes_per_expert});
    }
    std::vector<Transfer> transfers = WireTransfers(plan, wt);
    for (Transfer& x : transfers) {  // union positions -> transition group ranks
      x.src_rank = group_rank[x.src_rank];
      x.dst_rank = group_rank[x.dst_rank];
    }
    comm->Execute(transfers, deadline);  // returns once this rank's sends are consumed too
    if (!serves) continue;
    // This rank's new slots, built in staging, then written over the weights.
    const auto fills = plan.FillsOf(u_me);
    for (size_t t = 0; t < tensors; ++t) {
      const ExpertTensor& x = weights[l].tensors[t];
      for (int j = 0; j < spr; ++j) {
        const SlotFill& f = fills[j];
        const MemoryRegion slot = at(staging[t], j * x.bytes_per_expert);
        if (f.action == SlotAction::kLocalCopy)
          copier->Copy(slot.base, at(x.memory, (f.src_slot % spr) * stride(x)).base, x.bytes_per_expert);
        else if (f.action == SlotAction::kFromSource) {
          copier->Wait(deadline);
          MemoryRegion dst = slot;
          dst.bytes = x.bytes_per_expert;
          source(l, f.expert, static_cast<int>(t), dst);
          // The source's writes may still be in flight on the default
          // stream (a cudaMemcpy from pageable memory returns before its DMA
          // ends): the copies that read this slot next wait for them.
          copier->OrderAfter(nullptr);
        }
      }
      for (int j = 0; j < spr; ++j)
        if (fills[j].action == SlotAction::kDuplicate)
          copier->Copy(at(staging[t], j * x.bytes_per_expert).base,
                       at(staging[t], (fills[j].src_slot % spr) * x.bytes_per_expert).base, x.bytes_per_expert);
      for (int j = 0; j < spr; ++j)
        if (fills[j].action != SlotAction::kKeep && fills[j].action != SlotAction::kIdle)
          copier->Copy(at(x.memory, j * stride(x)).base, at(staging[t], j * x.bytes_per_expert).base,
                       x.bytes_per_expert);
      copier->Wait(deadline);
    }
  }
  control->Barrier(deadline);  // every process switched every layer
  result.serves = serves;
  if (serves) result.placement = next;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::info("eplb: rank {}: membership {} -> {} (lost: {}): {} experts over the wire, {} from the source, "
               "balancedness {:.4f} -> {:.4f}, {:.3f} s",
               me, RankList(rec.before.ranks), RankList(rec.after.ranks), RankList(rec.lost),
               result.experts_over_wire, result.experts_from_source, result.balancedness_before,
               result.balancedness_after, result.seconds);
  return result;
}

}  // namespace eplb
