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

// Everything the executor holds; the public methods forward here.
struct MigrationExecutor::Impl {
  struct Staging {
    MemoryRegion memory;
    RegionId region = -1;
    int layer = -1;                 // the layer it holds, staged and not committed; -1: free
    bool commit_in_flight = false;  // commit copies out of it may still run
  };

  Impl(Communicator& comm, ControlGroup& control, std::vector<LayerWeights> layers,
       int slots_per_rank, std::unique_ptr<LocalCopier> copier, const MigrationOptions& options,
       Deadline deadline);
  ~Impl();

  int num_layers() const { return static_cast<int>(layers_.size()); }
  uint64_t bytes_per_expert(int layer) const;
  uint64_t staging_bytes() const;
  LayerPlan Plan(const Placement& old_placement, const Placement& new_placement, int layer) const;
  LayerMigrationReport MigrateLayer(const LayerPlan& plan, Deadline deadline);
  std::vector<LayerMigrationReport> Migrate(const Placement& old_placement,
                                            const Placement& new_placement, Deadline deadline);
  LayerMigrationReport Stage(const LayerPlan& plan, Deadline deadline);
  void Commit(const LayerPlan& plan, LayerMigrationReport* report);
  void CommitOn(const LayerPlan& plan, void* stream, LayerMigrationReport* report);
  void WaitForCommits(Deadline deadline);

  void CheckPlan(const LayerPlan& plan) const;
  LayerMigrationReport StageAndAgree(const LayerPlan& plan, Deadline deadline);
  void Agree(const LayerPlan& plan, std::exception_ptr failure, Deadline deadline);
  // Issues the commit copies of a staged layer without waiting for them.
  void IssueCommit(const LayerPlan& plan);
  // copier_->Wait, after which no commit is in flight.
  void WaitForCopies(Deadline deadline);
  uint8_t* staging_slot(const Staging& s, int layer, int tensor, int local_slot) const;
  uint8_t* weight_slot(int layer, int tensor, int local_slot) const;

  Communicator& comm_;
  ControlGroup& control_;
  std::vector<LayerWeights> layers_;
  int slots_per_rank_;
  std::unique_ptr<LocalCopier> copier_;
  MigrationOptions options_;
  std::vector<std::vector<WireTensor>> wire_;  // [layer][tensor], dst_region unset
  std::vector<Staging> staging_;               // staging_layers buffers
  size_t next_staging_ = 0;                    // the buffer the next Stage fills
};

MigrationExecutor::Impl::Impl(Communicator& comm, ControlGroup& control,
                              std::vector<LayerWeights> layers, int slots_per_rank,
                              std::unique_ptr<LocalCopier> copier,
                              const MigrationOptions& options, Deadline deadline)
    : comm_(comm),
      control_(control),
      layers_(std::move(layers)),
      slots_per_rank_(slots_per_rank),
      copier_(std::move(copier)),
      options_(options) {
  auto fail = [](const std::string& m) { throw InvalidArgument("migration: " + m); };
  if (!copier_) fail("no local copier");
  if (slots_per_rank_ <= 0) fail("slots_per_rank must be positive");
  if (layers_.empty()) fail("no layers");
  if (options_.staging_layers != 1 && options_.staging_layers != 2)
    fail("staging_layers must be 1 or 2, not " + std::to_string(options_.staging_layers));
  if (control_.size() != comm_.size() || control_.rank() != comm_.rank())
    fail("control group (rank " + std::to_string(control_.rank()) + " of " +
         std::to_string(control_.size()) + ") and communicator (rank " +
         std::to_string(comm_.rank()) + " of " + std::to_string(comm_.size()) + ") differ");
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

  // Asked, not learnt from a failed registration (which is collective).
  if (!comm_.Capabilities().accepts(copier_->kind()))
    fail("the " + std::string(comm_.name()) + " communicator does not move " +
         MemoryKindName(copier_->kind()) + " memory");

  staging_.resize(options_.staging_layers);
  size_t allocated = 0;
  try {
    for (; allocated < staging_.size(); ++allocated)
      staging_[allocated].memory = copier_->Allocate(staging_bytes);
    wire_.resize(layers_.size());
    // Staging of a layer: [tensor][local slot], tensor t at
    // slots_per_rank * (bytes of tensors before t).
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
    for (Staging& st : staging_) st.region = comm_.RegisterRegion(st.memory, deadline);
  } catch (...) {
    for (size_t i = 0; i < allocated; ++i) copier_->Free(staging_[i].memory);
    throw;
  }
}

MigrationExecutor::Impl::~Impl() {
  // Copies still in flight (a commit after an error) must not outlive staging.
  try {
    copier_->Wait(Deadline::max());
  } catch (const std::exception& e) {
    spdlog::error("eplb migration: local copies failed at shutdown: {}", e.what());
  }
  for (Staging& st : staging_) copier_->Free(st.memory);
}

void MigrationExecutor::Impl::WaitForCopies(Deadline deadline) {
  copier_->Wait(deadline);
  for (Staging& st : staging_) st.commit_in_flight = false;
}

uint64_t MigrationExecutor::Impl::staging_bytes() const {
  uint64_t bytes = 0;
  for (const Staging& st : staging_) bytes += st.memory.bytes;
  return bytes;
}

uint64_t MigrationExecutor::Impl::bytes_per_expert(int layer) const {
  uint64_t bytes = 0;
  for (const ExpertTensor& x : layers_.at(layer).tensors) bytes += x.bytes_per_expert;
  return bytes;
}

uint8_t* MigrationExecutor::Impl::staging_slot(const Staging& st, int layer, int tensor,
                                         int local_slot) const {
  const WireTensor& w = wire_[layer][tensor];
  return static_cast<uint8_t*>(st.memory.base) + w.dst_offset + w.dst_stride * local_slot;
}

uint8_t* MigrationExecutor::Impl::weight_slot(int layer, int tensor, int local_slot) const {
  const ExpertTensor& x = layers_[layer].tensors[tensor];
  return static_cast<uint8_t*>(x.memory.base) + Stride(x) * local_slot;
}

LayerPlan MigrationExecutor::Impl::Plan(const Placement& old_placement,
                                        const Placement& new_placement, int layer) const {
  return PlanLayer(old_placement, new_placement, layer,
                   PlanOptions{options_.ranks_per_node, bytes_per_expert(layer)});
}

void MigrationExecutor::Impl::CheckPlan(const LayerPlan& plan) const {
  if (plan.layer < 0 || plan.layer >= num_layers())
    throw InvalidArgument("migration: plan for layer " + std::to_string(plan.layer) +
                          ", outside [0, " + std::to_string(num_layers()) + ")");
  if (plan.num_ranks != comm_.size() || plan.slots_per_rank != slots_per_rank_)
    throw InvalidArgument("migration: plan of layer " + std::to_string(plan.layer) + " is for " +
                          std::to_string(plan.num_ranks) + " ranks x " +
                          std::to_string(plan.slots_per_rank) + " slots, the executor has " +
                          std::to_string(comm_.size()) + " x " + std::to_string(slots_per_rank_));
  // The plan of a membership change (membership.h) may fill slots from the
  // engine's weight source or take them out of service; this executor moves
  // weights between the ranks of one group only.
  for (const SlotFill& f : plan.fills)
    if (f.action == SlotAction::kFromSource || f.action == SlotAction::kIdle)
      throw InvalidArgument("migration: plan of layer " + std::to_string(plan.layer) + " has slot " +
                            std::to_string(f.slot) + " " + SlotActionName(f.action) +
                            ", which this executor does not run (a membership change)");
}

// Every rank tells every other whether it staged the layer (one byte, then
// its error message): an all-gather on the control group. A rank that failed
// still takes part, so the others learn it at once and name it; a rank that
// died or stalls makes the all-gather itself fail. Throws this rank's own
// failure first, else the first other rank's, else returns: every rank staged.
void MigrationExecutor::Impl::Agree(const LayerPlan& plan, std::exception_ptr failure,
                              Deadline deadline) {
  const int me = comm_.rank(), layer = plan.layer;
  std::vector<uint8_t> blob{failure ? uint8_t{0} : uint8_t{1}};
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::string what = e.what();
      blob.insert(blob.end(), what.begin(), what.end());
    }
  }
  const Deadline agree_by = std::max(deadline, Clock::now() + options_.agreement_grace);
  std::vector<std::vector<uint8_t>> all;
  try {
    all = control_.AllGather(blob, agree_by);
  } catch (...) {
    if (failure) std::rethrow_exception(failure);
    RethrowNamingLayer(layer, me, "agreement");
  }
  if (failure) std::rethrow_exception(failure);
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    if (r == me || (!all[r].empty() && all[r][0] == 1)) continue;
    std::string why =
        all[r].empty() ? std::string("no answer") : std::string(all[r].begin() + 1, all[r].end());
    throw Error("migration", "agreement of MoE layer " + std::to_string(layer),
                "rank " + std::to_string(r) + " failed to stage the layer: " + why, me, r);
  }
}

LayerMigrationReport MigrationExecutor::Impl::Stage(const LayerPlan& plan, Deadline deadline) {
  CheckPlan(plan);
  const auto start = Clock::now();
  const int me = comm_.rank(), layer = plan.layer;
  LayerMigrationReport report;
  report.layer = layer;
  report.rank = plan.per_rank[me];
  report.total = plan.total;
  // A layer staged again replaces its earlier staging; otherwise take the
  // next buffer in turn (replacing the oldest staged layer, if any).
  Staging* st = nullptr;
  for (Staging& candidate : staging_)
    if (candidate.layer == layer) st = &candidate;
  if (st == nullptr) {
    st = &staging_[next_staging_];
    next_staging_ = (next_staging_ + 1) % staging_.size();
  }
  st->layer = -1;
  if (plan.unchanged()) {
    st->layer = layer;
    return report;
  }
  const char* step = "the previous commit from this buffer";
  const auto& tensors = layers_[layer].tensors;
  const std::vector<SlotFill> local = plan.LocalOf(me);
  // Local copies in the plan's order; `duplicates` picks the fills from slots
  // filled by a receive (kDuplicate) or those from the weights (kLocalCopy).
  auto issue = [&](bool duplicates) {
    for (const SlotFill& f : local) {
      if ((f.action == SlotAction::kDuplicate) != duplicates) continue;
      const int dst = f.slot % slots_per_rank_, src = f.src_slot % slots_per_rank_;
      for (size_t t = 0; t < tensors.size(); ++t) {
        const int ti = static_cast<int>(t);
        const uint8_t* from = duplicates ? staging_slot(*st, layer, ti, src) : weight_slot(layer, ti, src);
        copier_->Copy(staging_slot(*st, layer, ti, dst), from, tensors[t].bytes_per_expert);
      }
    }
  };
  try {
    if (st->commit_in_flight) WaitForCopies(deadline);
    // Copies from the weights go first: they write staging slots no receive
    // writes, so an asynchronous copier runs them while the bytes are on the
    // wire. Duplicates read received slots: after the transfers.
    step = "local copies";
    issue(false);
    step = "transfers";
    if (!plan.wire.empty()) {
      std::vector<WireTensor> wire = wire_[layer];
      for (WireTensor& w : wire) w.dst_region = st->region;
      comm_.Execute(WireTransfers(plan, wire), deadline);
    }
    step = "local copies";
    issue(true);
    WaitForCopies(deadline);
  } catch (...) {
    spdlog::debug("eplb migration: rank {} failed {} of MoE layer {}", me, step, layer);
    // Copies into this buffer may still run: they end before it is used again
    // (local copies always finish, so, as in Commit, no deadline can help).
    try {
      WaitForCopies(Deadline::max());
    } catch (const std::exception& e) {
      spdlog::error("eplb migration: local copies of MoE layer {} failed: {}", layer, e.what());
    }
    RethrowNamingLayer(layer, me, step);
  }
  st->layer = layer;
  report.stage_seconds = SecondsSince(start);
  return report;
}

void MigrationExecutor::Impl::IssueCommit(const LayerPlan& plan) {
  CheckPlan(plan);
  const int layer = plan.layer;
  Staging* st = nullptr;
  for (Staging& candidate : staging_)
    if (candidate.layer == layer) st = &candidate;
  if (st == nullptr)
    throw Error("migration", "commit of MoE layer " + std::to_string(layer),
                "the layer is not staged (never staged, already committed, or replaced)",
                comm_.rank(), -1);
  const auto& tensors = layers_[layer].tensors;
  for (const SlotFill& f : plan.FillsOf(comm_.rank())) {
    if (f.action == SlotAction::kKeep) continue;
    const int local = f.slot % slots_per_rank_;
    for (size_t t = 0; t < tensors.size(); ++t) {
      const int ti = static_cast<int>(t);
      copier_->Copy(weight_slot(layer, ti, local), staging_slot(*st, layer, ti, local),
                    tensors[t].bytes_per_expert);
    }
  }
  // The buffer is free again once these copies are done (Stage waits for
  // them before receiving into it).
  st->layer = -1;
  st->commit_in_flight = true;
}

void MigrationExecutor::Impl::Commit(const LayerPlan& plan, LayerMigrationReport* report) {
  const auto start = Clock::now();
  IssueCommit(plan);
  // A commit must finish: the copies are local, so no deadline can help.
  WaitForCopies(Deadline::max());
  if (report != nullptr) report->commit_seconds = SecondsSince(start);
}

void MigrationExecutor::Impl::CommitOn(const LayerPlan& plan, void* stream,
                                       LayerMigrationReport* report) {
  if (copier_->kind() != MemoryKind::kCuda) return Commit(plan, report);
  const auto start = Clock::now();
  copier_->OrderAfter(stream);
  IssueCommit(plan);
  copier_->OrderBefore(stream);
  if (report != nullptr) report->commit_seconds = SecondsSince(start);
}

void MigrationExecutor::Impl::WaitForCommits(Deadline deadline) {
  for (const Staging& st : staging_)
    if (st.commit_in_flight) return WaitForCopies(deadline);
}

LayerMigrationReport MigrationExecutor::Impl::StageAndAgree(const LayerPlan& plan,
                                                            Deadline deadline) {
  CheckPlan(plan);
  const auto start = Clock::now();
  LayerMigrationReport report;
  std::exception_ptr failure;
  try {
    report = Stage(plan, deadline);
  } catch (...) {
    failure = std::current_exception();
  }
  // Every rank knows from the plan whether any rank changes a slot; only then
  // is there something to agree on.
  if (!plan.unchanged())
    Agree(plan, failure, deadline);
  else if (failure)
    std::rethrow_exception(failure);
  report.stage_seconds = SecondsSince(start);
  return report;
}

LayerMigrationReport MigrationExecutor::Impl::MigrateLayer(const LayerPlan& plan,
                                                           Deadline deadline) {
  LayerMigrationReport report = StageAndAgree(plan, deadline);
  Commit(plan, &report);
  spdlog::debug(
      "eplb migration: rank {} MoE layer {}: {} experts received, {} sent, {} local, {} bytes "
      "over the wire in, {:.6f} s",
      comm_.rank(), plan.layer, report.rank.experts_received, report.rank.experts_sent,
      report.rank.local_copies + report.rank.duplicates, report.rank.bytes_received,
      report.seconds());
  return report;
}

std::vector<LayerMigrationReport> MigrationExecutor::Impl::Migrate(const Placement& old_placement,
                                                                   const Placement& new_placement,
                                                                   Deadline deadline) {
  if (old_placement.num_layers != num_layers())
    throw InvalidArgument("migration: placement has " + std::to_string(old_placement.num_layers) +
                          " layers, the executor " + std::to_string(num_layers()));
  std::vector<LayerMigrationReport> reports;
  if (staging_.size() == 1) {
    for (int l = 0; l < num_layers(); ++l)
      reports.push_back(MigrateLayer(Plan(old_placement, new_placement, l), deadline));
    return reports;
  }
  // Two buffers: the commit copies of layer l run while layer l+1 stages
  // (its transfers, then its own copies, which the copier runs after them).
  try {
    for (int l = 0; l < num_layers(); ++l) {
      LayerPlan plan = Plan(old_placement, new_placement, l);
      reports.push_back(StageAndAgree(plan, deadline));
      const auto start = Clock::now();
      IssueCommit(plan);
      reports.back().commit_seconds = SecondsSince(start);
    }
  } catch (...) {
    WaitForCopies(Deadline::max());  // agreed layers are committed in full
    throw;
  }
  WaitForCopies(Deadline::max());
  return reports;
}


// --- the public API, forwarding to Impl ---------------------------------------

MigrationExecutor::MigrationExecutor(Communicator& comm, ControlGroup& control,
                                     std::vector<LayerWeights> layers, int slots_per_rank,
                                     std::unique_ptr<LocalCopier> copier,
                                     const MigrationOptions& options, Deadline deadline)
    : impl_(std::make_unique<Impl>(comm, control, std::move(layers), slots_per_rank,
                                   std::move(copier), options, deadline)) {}

MigrationExecutor::~MigrationExecutor() = default;

int MigrationExecutor::num_layers() const { return impl_->num_layers(); }
int MigrationExecutor::slots_per_rank() const { return impl_->slots_per_rank_; }
uint64_t MigrationExecutor::bytes_per_expert(int layer) const {
  return impl_->bytes_per_expert(layer);
}
uint64_t MigrationExecutor::staging_bytes() const { return impl_->staging_bytes(); }

LayerPlan MigrationExecutor::Plan(const Placement& old_placement, const Placement& new_placement,
                                  int layer) const {
  return impl_->Plan(old_placement, new_placement, layer);
}

LayerMigrationReport MigrationExecutor::MigrateLayer(const LayerPlan& plan, Deadline deadline) {
  return impl_->MigrateLayer(plan, deadline);
}

std::vector<LayerMigrationReport> MigrationExecutor::Migrate(const Placement& old_placement,
                                                             const Placement& new_placement,
                                                             Deadline deadline) {
  return impl_->Migrate(old_placement, new_placement, deadline);
}

LayerMigrationReport MigrationExecutor::Stage(const LayerPlan& plan, Deadline deadline) {
  return impl_->Stage(plan, deadline);
}

void MigrationExecutor::Commit(const LayerPlan& plan, LayerMigrationReport* report) {
  impl_->Commit(plan, report);
}

void MigrationExecutor::CommitOn(const LayerPlan& plan, void* stream,
                                 LayerMigrationReport* report) {
  impl_->CommitOn(plan, stream, report);
}

void MigrationExecutor::WaitForCommits(Deadline deadline) { impl_->WaitForCommits(deadline); }

}  // namespace eplb
