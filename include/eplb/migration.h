// Migration executor: moves one rank's expert weights from the old placement
// to the new one, layer by layer, through a Communicator (DESIGN.md layer 5).
//
// Per layer: plan (every rank derives the same one) -> wire transfers from the
// weights in use into a staging buffer -> local copies and duplicates into
// staging -> agreement that every rank staged the layer -> commit (staging
// copied into the changed slots of the weights). Until commit the weights in
// use are only read, so a failure anywhere before it leaves every rank with the
// old placement of that layer, intact. Staging holds one layer: the slots of
// this rank, all tensors.
//
// Local copies go through a LocalCopier: memcpy for host memory now; a CUDA
// stream (cudaMemcpyAsync) plugs in through the same small interface.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "eplb/communicator.h"
#include "eplb/deadline.h"
#include "eplb/memory.h"
#include "eplb/placement.h"
#include "eplb/transfer_plan.h"

namespace eplb {

// One tensor of a layer's experts on this rank (w1, w2, w3, scales, ...):
// slots_per_rank experts of bytes_per_expert bytes, `stride` bytes apart
// (0: packed, stride = bytes_per_expert), starting at memory.base.
struct ExpertTensor {
  MemoryRegion memory;
  uint64_t bytes_per_expert = 0;
  uint64_t stride = 0;
};

// The expert weights of one MoE layer on this rank. Every tensor of an expert
// moves with it.
struct LayerWeights {
  std::vector<ExpertTensor> tensors;
};

// Copies within one rank, and the staging memory they need. Copy may be
// asynchronous (a CUDA stream); copies issued on one copier run in order, and
// Wait returns when all of them are done.
class LocalCopier {
 public:
  virtual ~LocalCopier() = default;
  // The memory this copier works on; weights and staging are of this kind.
  virtual MemoryKind kind() const = 0;
  // Staging memory of kind(). Released with Free.
  virtual MemoryRegion Allocate(size_t bytes) = 0;
  virtual void Free(const MemoryRegion& region) = 0;
  // Copies bytes; either side may also be host memory (for small control data).
  virtual void Copy(void* dst, const void* src, size_t bytes) = 0;
  // Waits for every issued copy; throws TimeoutError past the deadline.
  virtual void Wait(Deadline deadline) = 0;
};

// Host memory: memcpy, done when Copy returns.
std::unique_ptr<LocalCopier> MakeHostCopier();

struct MigrationOptions {
  // Node layout for the sender choice (PlanOptions::ranks_per_node).
  int ranks_per_node = 0;
};

// What one layer's migration did.
struct LayerMigrationReport {
  int layer = 0;
  RankTraffic rank;           // this rank's part
  RankTraffic total;          // the whole layer, every rank
  double stage_seconds = 0;   // transfers, local copies and agreement
  double commit_seconds = 0;  // staging -> weights
  double seconds() const { return stage_seconds + commit_seconds; }
};

class MigrationExecutor {
 public:
  // Registers every layer's tensors (layer by layer, tensor by tensor), then
  // the staging buffer and a small agreement buffer, with `comm`. Collective:
  // every rank constructs its executor with the same number of layers and
  // tensors per layer, in the same order. Throws InvalidArgument on
  // inconsistent weights (too small for slots_per_rank experts, memory of
  // another kind than the copier's).
  MigrationExecutor(Communicator& comm, std::vector<LayerWeights> layers, int slots_per_rank,
                    std::unique_ptr<LocalCopier> copier, const MigrationOptions& options,
                    Deadline deadline);
  ~MigrationExecutor();
  MigrationExecutor(const MigrationExecutor&) = delete;
  MigrationExecutor& operator=(const MigrationExecutor&) = delete;

  int num_layers() const { return static_cast<int>(layers_.size()); }
  int slots_per_rank() const { return slots_per_rank_; }
  // Bytes of one expert of `layer`, every tensor together.
  uint64_t bytes_per_expert(int layer) const;
  // Bytes of the staging buffer (slots_per_rank experts of the largest layer).
  uint64_t staging_bytes() const { return staging_.bytes; }

  // The plan of one layer of two placements, with this executor's byte counts.
  LayerPlan Plan(const Placement& old_placement, const Placement& new_placement, int layer) const;

  // Stage and commit one layer. Throws Error / TimeoutError naming the layer
  // (and the peer, where one is to blame); the layer's weights are then
  // untouched on this rank. Collective: every rank calls it with the same plan.
  LayerMigrationReport MigrateLayer(const LayerPlan& plan, Deadline deadline);

  // MigrateLayer for every layer in order; stops at the first error (layers
  // before it are committed, the failing one and those after are not).
  std::vector<LayerMigrationReport> Migrate(const Placement& old_placement,
                                            const Placement& new_placement, Deadline deadline);

  // The two halves of MigrateLayer, for a runtime that commits at a step
  // boundary of its own choosing. Stage fills staging (weights only read) and
  // returns once every rank has staged the layer; Commit then copies it into
  // the weights. One layer is staged at a time: a later Stage replaces it.
  LayerMigrationReport Stage(const LayerPlan& plan, Deadline deadline);
  void Commit(const LayerPlan& plan, LayerMigrationReport* report = nullptr);

 private:
  void CheckPlan(const LayerPlan& plan) const;
  void Agree(const LayerPlan& plan, Deadline deadline);
  uint8_t* staging_slot(int layer, int tensor, int local_slot) const;
  uint8_t* weight_slot(int layer, int tensor, int local_slot) const;

  Communicator& comm_;
  std::vector<LayerWeights> layers_;
  int slots_per_rank_;
  std::unique_ptr<LocalCopier> copier_;
  MigrationOptions options_;
  std::vector<std::vector<WireTensor>> wire_;  // [layer][tensor]
  MemoryRegion staging_;
  MemoryRegion votes_;  // [rank] uint32 round tokens
  RegionId votes_region_ = -1;
  uint32_t round_ = 0;
  int staged_layer_ = -1;
};

}  // namespace eplb
