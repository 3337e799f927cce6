// The online balancer an engine feeds every step (DESIGN.md layer 5).
//
// The engine registers each MoE layer's expert weights once, then every step
// records how many tokens each logical expert received (RecordLoad) and calls
// Step(). Every `step_interval` steps (the first time earlier) a rebalance
// cycle runs:
//
//   handshake   every rank publishes its state in the store (the one channel
//               that survives any failure); ranks agree to run the cycle,
//               rebuild the communicator and control group if anything failed
//               since the last cycle, and settle a layer left "in doubt";
//   loads       the sliding window of loads summed over ranks (ControlGroup);
//   policy      ComputePlacement with the placement in force as `previous`,
//               so experts that stay on a rank keep their slots;
//   migrate     per changed layer: plan, stage (MigrationExecutor::Stage:
//               transfers into staging, weights in use only read), agree,
//               commit (staging -> weights, a buffer copy, and the map swap).
//
// Sync mode runs the whole cycle inside the Step() that triggers it and
// publishes the new maps at its end. Async mode (the default) runs it on a
// background thread: Step() never waits on a transfer; it only commits a
// layer whose staging every rank has finished, at a step every rank agreed
// on (one layer per step at most), so all ranks switch layer k at the same
// step. Staging is bounded to `staging_layers` (1 or 2) layers.
// The one host wait: a rank proposes to commit `commit_lead` steps ahead; if
// its engine reaches its own proposed step before the agreement on it has
// arrived (a slow peer), that Step() waits for it, at most deadline + 1 s,
// then vetoes the commit (the layer is settled at the next handshake).
// Metrics count these waits (commit_waits, commit_wait_seconds_max).
//
// Failures. Every cross-rank wait takes `deadline` (connecting the groups
// again at a rebuild: `rebuild_timeout`; waiting for this rank's own engine
// to reach an agreed commit step: deadline + 1 s). A rank that stalls or
// dies makes the others abandon the cycle: layers not committed keep their
// old placement on every rank; the error is logged at once naming the rank,
// counted in the metrics, and the engine keeps stepping. The rank named is
// the one that stalled or died, not the first peer this rank failed to hear
// from: each failing rank notes in the store whom it blames, and follows the
// notes (a peer that waited for a third). A rank that resumes after a stall
// finds that its peers blamed it and says it was stalled or left behind
// (CycleReport::blamed_rank is then its own rank). The next cycle rebuilds
// the groups and starts fresh; its handshake waits until the peers can have
// left the failed cycle (a rank that failed fast must not give up on them). A commit agreement can complete on some ranks and
// fail on others (a rank dies while its vote is in flight), so no rank acts
// on its own view: each records the outcome it saw in the store, the first
// record stands (Store::SetIfAbsent), and all follow it -- a survivor whose
// exchange failed still commits at the agreed step. Only if a rank cannot
// reach the store, or learns the outcome after its engine passed the step,
// does the layer stay staged "in doubt"; the next handshake sees that a peer
// committed it and it commits it too (roll forward).
//
// GPU side (builds with EPLB_HAVE_CUDA, config.device >= 0): RecordTopK
// counts a layer's router choices on the GPU with the load-counting kernel
// (load_counter.h), mapping each choice to a physical slot with device maps
// that every commit updates on the engine's stream; the counts reach the
// window a step or two later without synchronizing that stream.
//
// Threads: RecordLoad, RecordTopK and Step are called by the engine's thread
// (one thread); placement(), metrics() and PrometheusText() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "eplb/export.h"
#include "eplb/communicator.h"
#include "eplb/control_group.h"
#include "eplb/deadline.h"
#include "eplb/load.h"
#include "eplb/load_counter.h"
#include "eplb/migration.h"
#include "eplb/placement.h"
#include "eplb/selection.h"
#include "eplb/store.h"

namespace eplb {

enum class BalancerMode { kAsync, kSync };
EPLB_EXPORT const char* BalancerModeName(BalancerMode mode);  // "async" / "sync"

struct EPLB_EXPORT BalancerConfig {
  // Model and cluster shape (the policy's input; PolicyInput in policy.h).
  int num_layers = 0;
  int num_experts = 0;  // logical experts E per layer
  int num_slots = 0;    // physical slots R per layer, R % world_size == 0
  int num_groups = 1;
  int num_nodes = 1;
  // Ranks r and s share a node when r / ranks_per_node == s / ranks_per_node
  // (the plan prefers senders on the receiver's node); 0: one node.
  int ranks_per_node = 0;
  std::string policy = "deepseek";

  BalancerMode mode = BalancerMode::kAsync;
  // Loads of the last `window_steps` steps decide each rebalance.
  int window_steps = 100;
  // A cycle starts at step first_rebalance_step, then every step_interval
  // steps (a trigger that comes while a cycle still runs is skipped, on every
  // rank alike). first_rebalance_step <= 0: min(window_steps, step_interval).
  int step_interval = 1000;
  int first_rebalance_step = 0;
  // No cycle starts at or after this step (a run that drains its last
  // cycle, as `eplb demo` does after its steps, starts no new one); a cycle
  // already running finishes. <= 0: no such step.
  int64_t last_rebalance_step = 0;
  // Budget of each cross-rank wait of a cycle (handshake, load sum, each
  // layer's transfers, each agreement).
  std::chrono::milliseconds deadline{5000};
  // Budget for connecting the communicator and control group at
  // construction (and, separately, for registering the weights with them).
  std::chrono::milliseconds connect_timeout{30000};
  // Budget for connecting the communicator and control group again at a
  // rebuild inside a cycle (after a failure); registering the weights with
  // the new groups then has `deadline` of its own, so a slow rebuild never
  // leaves the registration a remnant of a shared budget. 0: twice
  // `deadline`, at most connect_timeout and at least `deadline` (a rebuild
  // of 4 ranks over Gloo and NIXL took 1.4-1.9 s on a loaded 2-core host).
  std::chrono::milliseconds rebuild_timeout{0};
  // Async: a staged layer is committed at least this many steps after the
  // step at which a rank proposes it (>= 1); the agreed step is the largest
  // proposal. A Step() that reaches its own proposal before the agreement
  // arrived waits for it (counted in the metrics as a commit wait). Four
  // steps leave the agreement's round trip room even on an overloaded host
  // (with two, a 2-core box running 4 ranks saw engines wait up to 18 ms).
  int commit_lead_steps = 4;
  // Async: layers staged at once, 1 or 2 (two: the next layer's transfers run
  // while the previous one waits for its commit step).
  int staging_layers = 2;
  // Keys of this balancer in the run's store; groups are named under it.
  std::string name = "balancer";
  // Threads the policy's layers are split over (0: one per core); the
  // placement is the same with any number.
  int policy_threads = 0;
  // CUDA device of this rank for RecordTopK and the device maps; -1: none.
  // Needs a build with EPLB_HAVE_CUDA.
  int device = -1;
};

// How the balancer reaches the other ranks. The factories are called again
// with a fresh `group` name after a failure (the rebuild).
struct EPLB_EXPORT BalancerLinks {
  std::shared_ptr<Store> store;  // the run's store (OpenRunStore)
  int rank = -1;
  int world_size = 0;
  std::function<std::unique_ptr<Communicator>(const std::string& group, Deadline deadline)>
      make_communicator;
  std::function<std::unique_ptr<ControlGroup>(const std::string& group, Deadline deadline)>
      make_control_group;
  // Copier and staging memory for the weights' memory kind (host: MakeHostCopier).
  std::function<std::unique_ptr<LocalCopier>()> make_copier;
  // The communicator's name and why it was chosen, for logs and metrics.
  Selection selection;
};

// Links for a run: applies the selection rule (selection.h) to `request`
// (async mode refuses NCCL-family communicators), logs the choice once
// ("eplb: communicator gloo (nixl not found)"), checks that every rank chose
// the same, and builds communicators with MakeCommunicator and control groups
// over Gloo. Weights in host memory: device = -1 (memcpy copier). Weights on
// CUDA device `device`: copies on a stream of the copier's own
// (MakeCudaCopier), communicators told the device, and the rule's cuda_ipc
// step checked for real (CudaIpcUsable, collective). Throws InvalidArgument /
// Error / TimeoutError.
EPLB_EXPORT BalancerLinks MakeBalancerLinks(std::shared_ptr<Store> store, int rank, int world_size,
                                const SelectionRequest& request, Deadline deadline,
                                int device = -1);

// A layer switched to its new placement on this rank.
struct EPLB_EXPORT CommitEvent {
  int64_t cycle = 0;
  int layer = 0;
  int64_t step = 0;            // the Step() that committed it
  double copy_seconds = 0;     // staging -> weights
  bool roll_forward = false;   // settled from "in doubt" at a handshake
};

// What one rebalance cycle did, as this rank saw it.
struct EPLB_EXPORT CycleReport {
  int64_t cycle = 0;
  int64_t trigger_step = 0;
  int64_t end_step = 0;  // the Step() that ended it (or noticed its failure)
  bool ok = false;
  std::string error;  // empty when ok
  // The rank to blame, when one stands out: the one that stalled or died
  // (this rank's own when it was left behind or failed on its own).
  int blamed_rank = -1;
  double balancedness_before = 1.0;  // model figure under the summed window
  double balancedness_after = 1.0;   // of the placement the cycle computed
  int layers_changed = 0;            // layers whose placement changes
  int layers_committed = 0;
  int64_t experts_moved = 0;      // over the wire, every rank (committed layers)
  int64_t slots_changed = 0;      // every rank (committed layers)
  uint64_t bytes_moved = 0;       // over the wire, every rank (committed layers)
  uint64_t bytes_received = 0;    // over the wire, this rank
  // bytes_moved split by BalancerConfig::ranks_per_node: between two ranks
  // of one node, and between nodes (every rank, committed layers).
  uint64_t bytes_within_nodes = 0;
  uint64_t bytes_between_nodes = 0;
  double seconds = 0;            // from the handshake's end to the last commit
  double policy_seconds = 0;
  double transfer_seconds = 0;   // sum of this rank's stage times
  double commit_seconds_max = 0; // longest single commit (a step's pause)
  bool rebuilt = false;          // groups rebuilt at the handshake
  double GBps() const { return transfer_seconds > 0 ? bytes_moved / transfer_seconds / 1e9 : 0; }
};

struct EPLB_EXPORT BalancerMetrics {
  int rank = -1;
  std::string communicator;
  std::string mode;
  int64_t step = 0;
  // Steps until the next trigger; -1 when none is left (last_rebalance_step).
  int64_t steps_to_next_rebalance = 0;
  bool cycle_in_progress = false;
  // Model balancedness of the placement in force under the last summed
  // window; NaN until the first cycle has summed the loads.
  double balancedness = std::numeric_limits<double>::quiet_NaN();
  int64_t cycles_started = 0, cycles_completed = 0, cycles_failed = 0, cycles_skipped = 0;
  int64_t layers_committed = 0, roll_forwards = 0, rebuilds = 0;
  // Async: steps that reached their proposed commit step before the
  // agreement had arrived and waited for it, and the longest such wait.
  int64_t commit_waits = 0;
  double commit_wait_seconds_max = 0;
  uint64_t bytes_moved_total = 0;
  uint64_t bytes_between_nodes_total = 0;  // of bytes_moved_total, between nodes
  CycleReport last_cycle;  // the last cycle that ended (ok or not)
  std::string last_error;  // the last failure, empty if none
};

// Prometheus text exposition format (eplb_* gauges and counters, label rank).
EPLB_EXPORT std::string FormatPrometheus(const BalancerMetrics& m);
// One log line: "step 1200: balancedness 0.93, next rebalance in 300 steps, ...".
EPLB_EXPORT std::string FormatMetricsLine(const BalancerMetrics& m);

class EPLB_EXPORT Balancer {
 public:
  // Collective: every rank constructs its balancer with the same config and
  // the same number of layers and tensors per layer; connects the groups
  // within config.connect_timeout. `weights[l]` holds this rank's
  // slots_per_rank experts of layer l; `initial` is the placement they hold
  // now (Placement::Identity for a freshly loaded model). Throws
  // InvalidArgument on a bad config (sizes, policy name, an NCCL-family
  // communicator in async mode), Error / TimeoutError when connecting fails.
  Balancer(BalancerLinks links, std::vector<LayerWeights> weights, const BalancerConfig& config,
           Placement initial);
  // Stops the background thread; a cross-rank wait in progress ends at its
  // deadline at the latest. Uncommitted layers keep their placement.
  ~Balancer();
  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  // Adds one step's token counts of `layer`, one per logical expert. Engine
  // thread. Throws InvalidArgument on a wrong size or layer.
  void RecordLoad(int layer, std::span<const int64_t> counts);
  // Counts one layer's router choices (top-k logical ids on the device) on
  // `stream` (the engine's; nullptr: the default stream), with the replica of
  // each choice fixed by the rule of load_counter.h, and writes the chosen
  // slots to `physical_ids` ([tokens][top_k] int32 on the device) when given,
  // for the engine's dispatch. Engine thread; needs config.device >= 0 (and
  // a build with CUDA: without, both throw InvalidArgument).
  void RecordTopK(int layer, const TopkIds& topk, void* stream, int32_t* physical_ids = nullptr);
  // The device maps of `layer` (log2phy is -1 padded to slots - experts + 1
  // columns), for the engine's own routing kernels; kernels enqueued on the
  // engine's stream after a Step() see that step's commits. Engine thread.
  DeviceExpertMap device_map(int layer) const;
  // Called once per engine step: closes the step's loads into the window,
  // commits a staged layer whose agreed step this is, starts a cycle when one
  // is due (and, in sync mode, runs it). Engine thread.
  //
  // Weights in device memory: `stream` is the engine's CUDA stream (nullptr:
  // the default stream). A commit's copies are queued on the GPU after the
  // work already on that stream (kernels still reading the old experts) and
  // before the work queued after Step() returns, and the host does not wait
  // for them: Step() costs the engine the copy time on its stream. The host
  // waits only for a commit agreement that is late (see the top of this
  // file: at most deadline + 1 s). Host memory: `stream` is unused.
  void Step(void* stream = nullptr);

  // The load window's sum over ranks-local steps, [layers][experts]. Engine thread.
  LoadMatrix window_load() const;
  // The maps to route with, as of the last commit. Any thread.
  std::shared_ptr<const Placement> placement() const;
  // Steps taken (Step() calls). Any thread.
  int64_t step() const;
  // No cycle running or staged (engine thread's view). Any thread.
  bool idle() const;
  BalancerMetrics metrics() const;
  std::string PrometheusText() const { return FormatPrometheus(metrics()); }

  // Called on the engine thread, inside Step(), after a layer's commit and
  // after a cycle ends (ok or failed). Set before the first Step().
  void set_on_commit(std::function<void(const CommitEvent&)> f);
  void set_on_cycle(std::function<void(const CycleReport&)> f);

  const BalancerConfig& config() const;
  int rank() const;
  int world_size() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace eplb
