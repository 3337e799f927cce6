// The online balancer's state (include/eplb/balancer.h), shared by the
// files that implement it: balancer.cc (construction, the public face),
// balancer_engine.cc (the engine thread), balancer_cycle.cc (the cycle:
// handshake, resolve, run), balancer_agreement.cc (commit agreements, the
// end round, blame), balancer_migrate.cc (staging layers), balancer_links.cc
// and balancer_metrics.cc.
//
// Threads and the one mutex. The engine thread runs Step(); in async mode a
// background thread runs the cycles. They share, under `mu`: the step counter,
// the placement in force (`current`, per-layer `versions`, the published
// snapshot), the cycle's state (requested / in handshake / running), the
// commits scheduled for a step (one per executor), the "proposal floor" (the
// step at which the engine must have the agreed commit step), the metrics
// and the reports waiting to be handed to the engine's callbacks. Byte copies
// (commits) run outside the mutex.
//
// The order of collectives is the same on every rank: a cycle is a store
// handshake, then (rebuild), load sum, and per changed layer: Stage (the
// executor's transfers and local copies), an AllGather vote that every rank
// staged it, (async) an AllGather deciding the commit step, and the decision
// recorded once in the store (first record stands, see Decide), so ranks
// that saw a failed vote differently still commit or drop the layer alike.
// A failure anywhere abandons the cycle on that rank; the groups are rebuilt
// at the next handshake, so collectives that fell out of step on a failure
// never matter.
#pragma once

#include "eplb/balancer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/policy.h"
#include "runtime/balancer_messages.h"
#include "runtime/device_load.h"
#include "runtime/layer_threads.h"
#include "runtime/load_window.h"
#include "util/hash.h"
#include "util/text.h"

namespace eplb {
namespace balancer_internal {

using namespace std::chrono_literals;

inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline uint64_t HashLayer(std::span<const int32_t> phy2log) {
  return util::Fnv1a(phy2log.data(), phy2log.size_bytes());
}

using util::RankList;

// The balancer is being destroyed: unwinds a cycle without reporting it.
struct Stopped {};

}  // namespace balancer_internal

using balancer_internal::RankState;

struct Balancer::State {
  enum class Phase { kIdle, kHandshake, kRunning };

  struct Request {
    int64_t cycle = 0;
    int64_t trigger_step = 0;
    std::vector<int64_t> loads;
  };
  // A layer staged on an executor, with what it becomes.
  struct Staged {
    int64_t cycle = 0;
    LayerPlan plan;
    std::vector<int32_t> phy2log;  // the layer's new placement
    int64_t step = -1;             // scheduled commit step; -1: none
    bool ends_cycle = false;
    bool roll_forward = false;
  };
  struct Doubt {
    int executor = 0;
    Staged staged;
    uint32_t version = 0;  // the layer's version once committed
  };

  BalancerLinks links;
  BalancerConfig cfg;
  int me = 0, world = 0, spr = 0;
  std::unique_ptr<Policy> policy;
  std::unique_ptr<runtime::LayerThreads> policy_threads;
  std::vector<LayerWeights> weights;
  runtime::LoadWindow window;
#if EPLB_HAVE_CUDA
  std::unique_ptr<runtime::DeviceLoad> device_load;  // engine thread
#endif
  int64_t first_trigger = 0;
  std::function<void(const CommitEvent&)> on_commit;
  std::function<void(const CycleReport&)> on_cycle;

  // Groups: used by the cycle's thread; rebuilt only while nothing is
  // scheduled, so the engine's Commit never races a rebuild.
  std::unique_ptr<ControlGroup> control;
  std::unique_ptr<Communicator> comm;
  std::vector<std::unique_ptr<MigrationExecutor>> executors;
  std::string label;
  bool failed_since_rebuild = false;  // cycle thread
  std::optional<Doubt> doubt;         // cycle thread
  int64_t last_commit_step = -1;      // cycle thread: the step of the cycle's last scheduled commit
  // The engine's CUDA stream of the current Step() (engine thread; sync-mode
  // cycles and every commit run on that thread).
  void* engine_stream = nullptr;

  mutable std::mutex mu;
  std::condition_variable cv;
  // --- guarded by mu ---
  bool stop = false;
  int64_t step = 0;
  int64_t next_trigger_index = 0;
  bool cycle_active = false;
  Phase phase = Phase::kIdle;
  std::optional<Request> request;
  std::vector<Staged> scheduled;  // [executor]
  int64_t floor_step = -1;        // the engine must have the decision by this step
  bool veto = false;              // the engine passed floor_step without it
  int64_t end_step = -1;          // no-change cycle: ends at this step
  Placement current;
  std::vector<uint32_t> versions;
  std::shared_ptr<const Placement> published;
  BalancerMetrics metrics;
  CycleReport live;  // the cycle in progress
  Clock::time_point live_start;
  std::vector<CommitEvent> pending_commits;
  std::vector<CycleReport> pending_reports;
  std::string bg_op;
  Clock::time_point bg_op_since;
  bool bg_op_warned = false;

  std::thread bg;

  State(BalancerLinks l, std::vector<LayerWeights> w, const BalancerConfig& c, Placement initial);
  ~State();

  bool async() const { return cfg.mode == BalancerMode::kAsync; }
  int64_t TriggerStep(int64_t index) const { return first_trigger + index * cfg.step_interval; }
  Deadline WaitDeadline() const { return DeadlineAfter(cfg.deadline); }

  void Connect(const std::string& new_label, Deadline deadline);
  void Publish();  // mu held
  void SetOp(std::string op);

  // Engine thread.
  void StepEngine(void* stream);
  void CommitScheduled(int x, int64_t at_step);

  // Cycle thread (background in async mode, the engine in sync mode).
  void Loop();
  void RunCycle(Request req);
  std::vector<RankState> Handshake(Request& req);
  void Resolve(const std::vector<RankState>& states);
  struct StagedOutcome {
    Staged staged;
    bool ok = false;
    std::exception_ptr error;  // why staging failed
  };
  StagedOutcome StageLayer(int x, int layer, const Placement& cur, const Placement& next);
  void MigrateLayerAsync(int x, int layer, const Placement& cur, const Placement& next, bool last);
  void MigrateLayerSync(int layer, const Placement& cur, const Placement& next);
  int64_t Decide(const Staged& staged, bool staged_ok, std::exception_ptr stage_error, int layer,
                 std::exception_ptr* after);
  void EndRound();
  template <typename Pred>
  void WaitFor(Pred pred);  // cycle thread, mu held via lock
  void ApplyCommitLocked(const Staged& st, double seconds, int64_t at_step);
  void FinishCycleLocked(int64_t at_step);
  BalancerMetrics MetricsLocked() const {
    BalancerMetrics m = metrics;
    m.step = step;
    m.cycle_in_progress = cycle_active;
    m.steps_to_next_rebalance = std::max<int64_t>(0, TriggerStep(next_trigger_index) - step);
    return m;
  }
  int FollowBlame(int64_t cycle, int blamed, std::string* chain);
};

template <typename Pred>
void Balancer::State::WaitFor(Pred pred) {
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return stop || pred(); });
  if (stop) throw balancer_internal::Stopped{};
}

}  // namespace eplb
