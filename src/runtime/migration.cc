#include "eplb/migration.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <string>

#include "eplb/error.h"

namespace eplb {
namespace {

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

uint64_t Stride(const ExpertTensor& t) { return t.stride != 0 ? t.stride : t.bytes_per_expert; }

// Rethrows the exception in flight as an Error naming the MoE layer, keeping
// the peer and whether it was a timeout.
[[noreturn]] void RethrowNamingLayer(int layer, int rank, const char* step) {
  const std::string operation = std::string(step) + " of MoE layer " + std::to_string(layer);
  try {
    throw;
  } catch (const TimeoutError& e) {
    throw TimeoutError("migration", operation, e.what(), rank, e.peer());
  } catch (const Error& e) {
    throw Error("migration", operation, e.what(), rank, e.peer());
  } catch (const InvalidArgument&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("migration", operation, e.what(), rank, -1);
  }
}

}  // namespace

MigrationExecutor::MigrationExecutor(Communicator& comm, std::vector<LayerWeights> layers,
                                     int slots_per_rank, std::unique_ptr<LocalCopier> copier,
                                     const MigrationOptions& options, Deadline deadline)
    : comm_(comm),
      layers_(std::move(layers)),
      slots_per_rank_(slots_per_rank),
      copier_(std::move(copier)),
      options_(options) {
  auto fail = [](const std::string& m) { throw InvalidArgument("migration: " + m); };
  if (!copier_) fail("no local copier");
  if (slots_per_rank_ <= 0) fail("slots_per_rank must be positive");
  if (layers_.empty()) fail("no layers");
  uint64_t staging_bytes = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& tensors = layers_[l].tensors;
    if (tensors.empty()) fail("layer " + std::to_string(l) + " has no tensors");
    uint64_t layer_bytes = 0;
    for (size_t t = 0; t < tensors.size(); ++t) {
      const ExpertTensor& x = tensors[t];
      const std::string where = "layer " + std::to_string(l) + " tensor " + std::to_string(t);
      if (x.bytes_per_expert == 0) fail(where + ": bytes_per_expert is 0");
      if (x.stride != 0 && x.stride < x.bytes_per_expert)
        fail(where + ": stride " + std::to_string(x.stride) + " < bytes_per_expert " +
             std::to_string(x.bytes_per_expert));
      const uint64_t need = Stride(x) * (slots_per_rank_ - 1) + x.bytes_per_expert;
      if (x.memory.base == nullptr || x.memory.bytes < need)
        fail(where + ": " + std::to_string(x.memory.bytes) + " bytes cannot hold " +
             std::to_string(slots_per_rank_) + " experts (" + std::to_string(need) + " needed)");
      if (x.memory.kind != copier_->kind())
        fail(where + ": " + MemoryKindName(x.memory.kind) + " memory, but the copier works on " +
             MemoryKindName(copier_->kind()) + " memory");
      layer_bytes += x.bytes_per_expert;
    }
    staging_bytes = std::max(staging_bytes, layer_bytes * slots_per_rank_);
  }

  staging_ = copier_->Allocate(staging_bytes);
  votes_ = copier_->Allocate(sizeof(uint32_t) * comm_.size());
  try {
    wire_.resize(layers_.size());
    // Staging of a layer: [tensor][local slot], tensor t at
    // slots_per_rank * (bytes of tensors before t).
    std::vector<uint64_t> staging_offsets;
    for (size_t l = 0; l < layers_.size(); ++l) {
      uint64_t offset = 0;
      for (const ExpertTensor& x : layers_[l].tensors) {
        WireTensor w;
        w.bytes = x.bytes_per_expert;
        w.src_region = comm_.RegisterRegion(x.memory, deadline);
        w.src_offset = 0;
        w.src_stride = Stride(x);
        w.dst_offset = offset;
        w.dst_stride = x.bytes_per_expert;
        wire_[l].push_back(w);
        offset += x.bytes_per_expert * slots_per_rank_;
      }
    }
    const RegionId staging_region = comm_.RegisterRegion(staging_, deadline);
    for (auto& layer : wire_)
      for (WireTensor& w : layer) w.dst_region = staging_region;
    votes_region_ = comm_.RegisterRegion(votes_, deadline);
  } catch (...) {
    copier_->Free(staging_);
    copier_->Free(votes_);
    throw;
  }
}

MigrationExecutor::~MigrationExecutor() {
  copier_->Free(staging_);
  copier_->Free(votes_);
}

uint64_t MigrationExecutor::bytes_per_expert(int layer) const {
  uint64_t bytes = 0;
  for (const ExpertTensor& x : layers_.at(layer).tensors) bytes += x.bytes_per_expert;
  return bytes;
}

uint8_t* MigrationExecutor::staging_slot(int layer, int tensor, int local_slot) const {
  const WireTensor& w = wire_[layer][tensor];
  return static_cast<uint8_t*>(staging_.base) + w.dst_offset + w.dst_stride * local_slot;
}

uint8_t* MigrationExecutor::weight_slot(int layer, int tensor, int local_slot) const {
  const ExpertTensor& x = layers_[layer].tensors[tensor];
  return static_cast<uint8_t*>(x.memory.base) + Stride(x) * local_slot;
}

LayerPlan MigrationExecutor::Plan(const Placement& old_placement, const Placement& new_placement,
                                  int layer) const {
  return PlanLayer(old_placement, new_placement, layer,
                   PlanOptions{options_.ranks_per_node, bytes_per_expert(layer)});
}

void MigrationExecutor::CheckPlan(const LayerPlan& plan) const {
  if (plan.layer < 0 || plan.layer >= num_layers())
    throw InvalidArgument("migration: plan for layer " + std::to_string(plan.layer) +
                          ", outside [0, " + std::to_string(num_layers()) + ")");
  if (plan.num_ranks != comm_.size() || plan.slots_per_rank != slots_per_rank_)
    throw InvalidArgument("migration: plan of layer " + std::to_string(plan.layer) + " is for " +
                          std::to_string(plan.num_ranks) + " ranks x " +
                          std::to_string(plan.slots_per_rank) + " slots, the executor has " +
                          std::to_string(comm_.size()) + " x " + std::to_string(slots_per_rank_));
}

// Every rank tells every other that it staged the layer: an all-to-all of
// round tokens through the communicator. A rank that failed to stage sends
// nothing, so the others fail too (at the latest at the deadline) and none
// commits. The token is the round number, the same on every rank, so a stale
// value from an earlier round can never pass for agreement.
void MigrationExecutor::Agree(const LayerPlan& plan, Deadline deadline) {
  const int n = comm_.size(), me = comm_.rank();
  const uint32_t token = round_;
  auto* votes = static_cast<uint8_t*>(votes_.base);
  copier_->Copy(votes + sizeof(uint32_t) * me, &token, sizeof(token));
  copier_->Wait(deadline);
  std::vector<Transfer> transfers;
  transfers.reserve(static_cast<size_t>(n) * (n - 1));
  for (int src = 0; src < n; ++src)
    for (int dst = 0; dst < n; ++dst)
      if (src != dst)
        transfers.push_back(Transfer{src, votes_region_, sizeof(uint32_t) * src, dst, votes_region_,
                                     sizeof(uint32_t) * src, sizeof(uint32_t)});
  comm_.Execute(transfers, deadline);
  std::vector<uint32_t> got(n);
  copier_->Copy(got.data(), votes, sizeof(uint32_t) * n);
  copier_->Wait(deadline);
  for (int r = 0; r < n; ++r)
    if (got[r] != token)
      throw Error("migration", "agree on MoE layer " + std::to_string(plan.layer),
                  "peer " + std::to_string(r) + " sent round " + std::to_string(got[r]) +
                      ", expected " + std::to_string(token),
                  me, r);
}

LayerMigrationReport MigrationExecutor::Stage(const LayerPlan& plan, Deadline deadline) {
  CheckPlan(plan);
  const auto start = Clock::now();
  const int me = comm_.rank(), layer = plan.layer;
  LayerMigrationReport report;
  report.layer = layer;
  report.rank = plan.per_rank[me];
  report.total = plan.total;
  staged_layer_ = -1;
  if (plan.unchanged()) {
    staged_layer_ = layer;
    return report;
  }
  const bool over_wire = !plan.wire.empty();
  if (over_wire) ++round_;  // on every rank alike, whatever happens next
  const char* step = "transfers";
  try {
    if (over_wire) comm_.Execute(WireTransfers(plan, wire_[layer]), deadline);
    step = "local copies";
    const auto& tensors = layers_[layer].tensors;
    for (const SlotFill& f : plan.LocalOf(me)) {
      const int dst = f.slot % slots_per_rank_, src = f.src_slot % slots_per_rank_;
      for (size_t t = 0; t < tensors.size(); ++t) {
        const uint8_t* from = f.action == SlotAction::kLocalCopy
                                  ? weight_slot(layer, static_cast<int>(t), src)
                                  : staging_slot(layer, static_cast<int>(t), src);
        copier_->Copy(staging_slot(layer, static_cast<int>(t), dst), from,
                      tensors[t].bytes_per_expert);
      }
    }
    copier_->Wait(deadline);
    // Without wire transfers no rank depends on another: each commits alone.
    step = "agreement";
    if (over_wire) Agree(plan, deadline);
  } catch (...) {
    spdlog::debug("eplb migration: rank {} failed {} of MoE layer {}", me, step, layer);
    RethrowNamingLayer(layer, me, step);
  }
  staged_layer_ = layer;
  report.stage_seconds = SecondsSince(start);
  return report;
}

void MigrationExecutor::Commit(const LayerPlan& plan, LayerMigrationReport* report) {
  CheckPlan(plan);
  if (staged_layer_ != plan.layer)
    throw Error("migration", "commit of MoE layer " + std::to_string(plan.layer),
                staged_layer_ < 0 ? std::string("nothing is staged")
                                  : "layer " + std::to_string(staged_layer_) + " is staged",
                comm_.rank(), -1);
  const auto start = Clock::now();
  const int layer = plan.layer;
  const auto& tensors = layers_[layer].tensors;
  for (const SlotFill& f : plan.FillsOf(comm_.rank())) {
    if (f.action == SlotAction::kKeep) continue;
    const int local = f.slot % slots_per_rank_;
    for (size_t t = 0; t < tensors.size(); ++t)
      copier_->Copy(weight_slot(layer, static_cast<int>(t), local),
                    staging_slot(layer, static_cast<int>(t), local), tensors[t].bytes_per_expert);
  }
  // A commit must finish: the copies are local, so no deadline can help.
  copier_->Wait(Deadline::max());
  staged_layer_ = -1;
  if (report != nullptr) report->commit_seconds = SecondsSince(start);
}

LayerMigrationReport MigrationExecutor::MigrateLayer(const LayerPlan& plan, Deadline deadline) {
  LayerMigrationReport report = Stage(plan, deadline);
  Commit(plan, &report);
  spdlog::debug(
      "eplb migration: rank {} MoE layer {}: {} experts received, {} sent, {} local, {} bytes "
      "over the wire in, {:.6f} s",
      comm_.rank(), plan.layer, report.rank.experts_received, report.rank.experts_sent,
      report.rank.local_copies + report.rank.duplicates, report.rank.bytes_received,
      report.seconds());
  return report;
}

std::vector<LayerMigrationReport> MigrationExecutor::Migrate(const Placement& old_placement,
                                                             const Placement& new_placement,
                                                             Deadline deadline) {
  if (old_placement.num_layers != num_layers())
    throw InvalidArgument("migration: placement has " + std::to_string(old_placement.num_layers) +
                          " layers, the executor " + std::to_string(num_layers()));
  std::vector<LayerMigrationReport> reports;
  for (int l = 0; l < num_layers(); ++l)
    reports.push_back(MigrateLayer(Plan(old_placement, new_placement, l), deadline));
  return reports;
}

}  // namespace eplb
