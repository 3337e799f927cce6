// Migration executor: moves one rank's expert weights from the old placement
// to the new one, layer by layer, through a Communicator (DESIGN.md layer 5).
//
// Per layer: plan (every rank derives the same one) -> wire transfers from the
// weights in use into a staging buffer -> local copies and duplicates into
// staging -> agreement through the ControlGroup that every rank staged the
// layer -> commit (staging copied into the changed slots of the weights).
// Until commit the weights in use are only read, so a failure anywhere before
// it leaves every rank with the old placement of that layer, intact; a rank
// that failed tells the others in the agreement, so they fail at once instead
// of at their deadline. Staging holds one layer (optionally two): the slots
// of this rank, all tensors.
//
// Local copies (staging fills and commits) go through a LocalCopier: memcpy
// or a copier thread for host memory, a CUDA stream (cudaMemcpyAsync) for
// device memory (MakeCudaCopier).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "eplb/export.h"
#include "eplb/communicator.h"
#include "eplb/control_group.h"
#include "eplb/deadline.h"
#include "eplb/memory.h"
#include "eplb/placement.h"
#include "eplb/transfer_plan.h"

namespace eplb {

// One tensor of a layer's experts on this rank (w1, w2, w3, scales, ...):
// slots_per_rank experts of bytes_per_expert bytes, `stride` bytes apart
// (0: packed, stride = bytes_per_expert), starting at memory.base.
struct EPLB_EXPORT ExpertTensor {
  MemoryRegion memory;
  uint64_t bytes_per_expert = 0;
  uint64_t stride = 0;
};

// The expert weights of one MoE layer on this rank. Every tensor of an expert
// moves with it.
struct EPLB_EXPORT LayerWeights {
  std::vector<ExpertTensor> tensors;
};

// Copies within one rank, and the staging memory they need. Copy may be
// asynchronous (a CUDA stream); copies issued on one copier run in order, and
// Wait returns when all of them are done.
class EPLB_EXPORT LocalCopier {
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
  // Device copiers: the copies issued next start after the work queued so far
  // on `stream` (an engine's CUDA stream; nullptr: the default stream), and
  // OrderBefore makes that stream's later work start after the copies issued
  // so far; the host waits for neither. A commit issued between the two
  // replaces an expert exactly between the engine's kernels that read the old
  // one and those that read the new one. Host copiers: nothing to order (the
  // engine's host code does not run while its thread commits).
  virtual void OrderAfter(void* /*stream*/) {}
  virtual void OrderBefore(void* /*stream*/) {}
};

// Host memory: memcpy, done when Copy returns.
EPLB_EXPORT std::unique_ptr<LocalCopier> MakeHostCopier();

// Host memory, copied by `threads` threads of its own (0: the default below)
// as if in order: Copy returns at once (the source must stay valid until
// Wait), so a commit can overlap the next layer's transfers
// (MigrationOptions::staging_layers = 2), as a CUDA stream would. Large copies
// are split over the threads, and a copy starts before earlier ones finish
// only when it touches none of their bytes, so the result is that of the
// copies run one after the other. Throws InvalidArgument outside [0, 64].
EPLB_EXPORT std::unique_ptr<LocalCopier> MakeThreadedHostCopier(int threads = 0);

// Threads of MakeThreadedHostCopier(0): one per 8 hardware threads, 1 to 4
// (memory bandwidth, not cores, bounds a copy; the rest serve the transfers).
EPLB_EXPORT int DefaultHostCopierThreads();

// Device memory of `device`: copies on a non-blocking stream of its own (so
// they never wait behind the engine's default-stream work; Wait polls an event
// against its deadline), staging from cudaMalloc/cudaFree (cudaFree
// synchronizes the device: free staging outside the serving path). The source
// of a copy must be ready on the device before Copy (the copier's stream does
// not wait for the engine's streams). Throws eplb::Error (layer "cuda") when
// eplb was built without CUDA or the device does not exist.
EPLB_EXPORT std::unique_ptr<LocalCopier> MakeCudaCopier(int device);

struct EPLB_EXPORT MigrationOptions {
  // Node layout for the sender choice (PlanOptions::ranks_per_node).
  int ranks_per_node = 0;
  // The agreement after a layer is staged may run this long past the layer's
  // deadline, so a rank whose transfers timed out can still tell the others.
  std::chrono::milliseconds agreement_grace{500};
  // Staging buffers, each one layer of this rank's slots: 1 or 2. With 2,
  // Migrate commits layer k while layer k+1 is on the wire (the commit copies
  // run on the copier, so this pays off with an asynchronous copier), and a
  // runtime may stage a layer while the previous one awaits its commit.
  int staging_layers = 1;
};

// What one layer's migration did.
struct EPLB_EXPORT LayerMigrationReport {
  int layer = 0;
  RankTraffic rank;          // this rank's part
  RankTraffic total;         // the whole layer, every rank
  double stage_seconds = 0;  // transfers, local copies and agreement
  // staging -> weights; in Migrate with two staging layers only the issuing
  // of the copies (they finish during the next layer's stage).
  double commit_seconds = 0;
  double seconds() const { return stage_seconds + commit_seconds; }
};

class EPLB_EXPORT MigrationExecutor {
 public:
  // Registers every layer's tensors (layer by layer, tensor by tensor), then
  // the staging buffers, with `comm`. Collective: every rank constructs its
  // executor with the same number of layers and tensors per layer, in the
  // same order. `control` (same ranks) carries the agreement before commit.
  // Both must outlive the executor. Throws InvalidArgument on inconsistent
  // weights (too small for slots_per_rank experts, memory of another kind
  // than the copier's) or groups of different sizes.
  MigrationExecutor(Communicator& comm, ControlGroup& control, std::vector<LayerWeights> layers,
                    int slots_per_rank, std::unique_ptr<LocalCopier> copier,
                    const MigrationOptions& options, Deadline deadline);
  ~MigrationExecutor();
  MigrationExecutor(const MigrationExecutor&) = delete;
  MigrationExecutor& operator=(const MigrationExecutor&) = delete;

  int num_layers() const;
  int slots_per_rank() const;
  // Bytes of one expert of `layer`, every tensor together.
  uint64_t bytes_per_expert(int layer) const;
  // Bytes of staging, all buffers (slots_per_rank experts of the largest
  // layer, times staging_layers).
  uint64_t staging_bytes() const;

  // The plan of one layer of two placements, with this executor's byte counts.
  LayerPlan Plan(const Placement& old_placement, const Placement& new_placement, int layer) const;

  // Stage, agree, commit one layer. Throws Error / TimeoutError naming the
  // MoE layer (and the peer, where one is to blame: the peer lost in a
  // transfer, or the rank that failed to stage); the layer's weights are then
  // untouched on this rank. Collective: every rank calls it with the same plan.
  // A layer that changes on no rank costs nothing: no transfer, no agreement.
  LayerMigrationReport MigrateLayer(const LayerPlan& plan, Deadline deadline);

  // MigrateLayer for every layer in order (with two staging layers, the
  // commit of a layer overlaps the next layer's stage); stops at the first
  // error (layers before it are committed, the failing one and those after
  // are not). Returns once every commit is done.
  std::vector<LayerMigrationReport> Migrate(const Placement& old_placement,
                                            const Placement& new_placement, Deadline deadline);

  // The parts of MigrateLayer, for a runtime that commits at a step boundary
  // of its own choosing. Stage fills a staging buffer (weights only read;
  // collective, like MigrateLayer); the caller then makes sure every rank
  // staged the layer (its own agreement) before Commit copies staging into
  // the weights and waits for the copies. Up to staging_layers layers are
  // staged at once; a Stage beyond that replaces the oldest.
  LayerMigrationReport Stage(const LayerPlan& plan, Deadline deadline);
  void Commit(const LayerPlan& plan, LayerMigrationReport* report = nullptr);
  // Commit in the order of an engine's CUDA stream (device memory: the copies
  // run after the kernels queued on `stream` so far and before those queued
  // next, and the host does not wait for them; a later Stage into the same
  // staging buffer does). Host memory: Commit.
  void CommitOn(const LayerPlan& plan, void* stream, LayerMigrationReport* report = nullptr);
  // Waits until every commit issued so far has landed in the weights (after
  // CommitOn, the copies may still be queued behind the engine's work). Peers
  // read this rank's weights when they stage a layer, so a runtime calls it
  // before the next round of transfers. Throws TimeoutError past `deadline`.
  void WaitForCommits(Deadline deadline);

 private:
  // The registered weights, the staging buffers and the copier
  // (src/runtime/migration.cc).
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eplb
