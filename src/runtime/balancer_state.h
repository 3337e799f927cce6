// The online balancer's state (include/eplb/balancer.h), shared by the
// files that implement it: balancer.cc (construction, the public face),
// balancer_engine.cc (the engine thread), balancer_cycle.cc (the cycle:
// handshake, resolve, run), balancer_agreement.cc (commit agreements, the
// end round, blame), balancer_migrate.cc (staging layers), balancer_links.cc
// and balancer_metrics.cc.
//
// Threads and the one mutex. The engine thread runs Step(); in async mode a
// background thread runs the cycles (sync mode: the engine thread runs them
// inside Step()). What each thread owns alone is GUARDED_BY its role
// (`engine_role`, `cycle_role`, util/mutex.h) and what they share
// GUARDED_BY(mu), so clang's -Wthread-safety checks every access
// (scripts/thread_safety.sh). They share, under `mu`: the step counter,
// the placement in force (`current`, per-layer `versions`, the published
// snapshot), the cycle's state (requested / in handshake / running), the
// commits scheduled for a step (one per executor), the "proposal floor" (the
// step at which the engine must have the agreed commit step), the metrics
// and the reports waiting to be handed to the engine's callbacks. Byte copies
// (commits) and every GPU call (the device maps' uploads) run outside the
// mutex, so a thread reading metrics() never waits behind the GPU.
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
#include <cstring>
#include <exception>
#include <optional>
#include <thread>

#include "comm/backends.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/policy.h"
#include "runtime/balancer_messages.h"
#include "runtime/balancer_resolve.h"
#include "runtime/blame.h"
#include "runtime/handshake_round.h"
#include "runtime/device_load.h"
#include "runtime/layer_threads.h"
#include "runtime/load_window.h"
#include "util/hash.h"
#include "util/mutex.h"
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

  // Set at construction, then only read (by both threads).
  BalancerLinks links;
  BalancerConfig cfg;
  int me = 0, world = 0, spr = 0;
  int64_t first_trigger = 0;

  // The two threads, as capabilities: what one owns alone is GUARDED_BY it.
  util::ThreadRole engine_role;  // the thread that calls Step()
  util::ThreadRole cycle_role;   // the thread that runs cycles (async: bg; sync: the engine's)

  std::unique_ptr<Policy> policy GUARDED_BY(cycle_role);
  std::unique_ptr<runtime::LayerThreads> policy_threads GUARDED_BY(cycle_role);
  std::vector<LayerWeights> weights GUARDED_BY(cycle_role);
  runtime::LoadWindow window GUARDED_BY(engine_role);
#if EPLB_HAVE_CUDA
  std::unique_ptr<runtime::DeviceLoad> device_load GUARDED_BY(engine_role);
#endif
  std::function<void(const CommitEvent&)> on_commit GUARDED_BY(engine_role);
  std::function<void(const CycleReport&)> on_cycle GUARDED_BY(engine_role);

  // Groups: used by the cycle's thread; rebuilt only while nothing is
  // scheduled, so the engine's commits (through `committers`) never race a
  // rebuild.
  std::unique_ptr<ControlGroup> control GUARDED_BY(cycle_role);
  std::unique_ptr<Communicator> comm GUARDED_BY(cycle_role);
  std::vector<std::unique_ptr<MigrationExecutor>> executors GUARDED_BY(cycle_role);
  std::string label GUARDED_BY(cycle_role);
  bool failed_since_rebuild GUARDED_BY(cycle_role) = false;
  std::optional<Doubt> doubt GUARDED_BY(cycle_role);
  // The step of the cycle's last scheduled commit.
  int64_t last_commit_step GUARDED_BY(cycle_role) = -1;
  // When the last cycle that failed on this rank ended here: its peers may
  // still be inside that cycle for up to deadline + the blame budget, so the
  // next handshake waits for them that long (Handshake).
  std::optional<Clock::time_point> last_failure GUARDED_BY(cycle_role);
  std::chrono::milliseconds last_failure_lag GUARDED_BY(cycle_role){0};  // their longest wait there
  // The cycles the current (or last) handshake joined: a handshake that
  // fails notes the blame under each, so a rank that joins any of them late
  // learns that this one gave up on it.
  std::vector<int64_t> handshake_joined GUARDED_BY(cycle_role);
  // The last completed handshake's states ask for a rebuild (every rank
  // decides it alike): peers of a cycle that failed may be in its rendezvous.
  bool handshake_rebuild GUARDED_BY(cycle_role) = false;
  // The engine's CUDA stream of the current Step() (sync-mode cycles and
  // every commit run on the engine thread).
  void* engine_stream GUARDED_BY(engine_role) = nullptr;

  mutable util::Mutex mu;
  util::CondVar cv;
  bool stop GUARDED_BY(mu) = false;
  int64_t step GUARDED_BY(mu) = 0;
  int64_t next_trigger_index GUARDED_BY(mu) = 0;
  bool cycle_active GUARDED_BY(mu) = false;
  Phase phase GUARDED_BY(mu) = Phase::kIdle;
  std::optional<Request> request GUARDED_BY(mu);
  // [executor]. While scheduled[x].step >= 0 only the engine reads the entry
  // (and clears the step once committed); the cycle thread writes an entry
  // only while its step is -1.
  std::vector<Staged> scheduled GUARDED_BY(mu);
  // executors[x], for the engine's commits (set at each Connect, while
  // nothing is scheduled).
  std::vector<MigrationExecutor*> committers GUARDED_BY(mu);
  int64_t floor_step GUARDED_BY(mu) = -1;  // the engine must have the decision by this step
  bool veto GUARDED_BY(mu) = false;        // the engine passed floor_step without it
  int64_t end_step GUARDED_BY(mu) = -1;    // no-change cycle: ends at this step
  Placement current GUARDED_BY(mu);
  std::vector<uint32_t> versions GUARDED_BY(mu);
  std::shared_ptr<const Placement> published GUARDED_BY(mu);
  BalancerMetrics metrics GUARDED_BY(mu);
  CycleReport live GUARDED_BY(mu);  // the cycle in progress
  Clock::time_point live_start GUARDED_BY(mu);
  std::vector<CommitEvent> pending_commits GUARDED_BY(mu);
  std::vector<CycleReport> pending_reports GUARDED_BY(mu);
  std::string bg_op GUARDED_BY(mu);
  Clock::time_point bg_op_since GUARDED_BY(mu);
  std::chrono::milliseconds bg_op_budget GUARDED_BY(mu){0};  // how long bg_op may take
  bool bg_op_warned GUARDED_BY(mu) = false;

  std::thread bg;

  State(BalancerLinks l, std::vector<LayerWeights> w, const BalancerConfig& c, Placement initial);
  ~State();

  bool async() const { return cfg.mode == BalancerMode::kAsync; }
  int64_t TriggerStep(int64_t index) const { return first_trigger + index * cfg.step_interval; }
  Deadline WaitDeadline() const { return DeadlineAfter(cfg.deadline); }
  // How long the cycle thread waits for this rank's own engine to reach a
  // step (a scheduled commit): as long as a Step() waits for a late
  // agreement, deadline + 1 s. Past it the engine thread is blocked (by its
  // own collectives on a stalled peer, say) and the cycle fails saying so.
  std::chrono::milliseconds EngineBudget() const { return cfg.deadline + std::chrono::seconds(1); }
  // Connecting the groups at a rebuild (BalancerConfig::rebuild_timeout,
  // or its default).
  std::chrono::milliseconds RebuildBudget() const {
    if (cfg.rebuild_timeout.count() > 0) return cfg.rebuild_timeout;
    return std::max(cfg.deadline, std::min(2 * cfg.deadline, cfg.connect_timeout));
  }

  // Connects the groups by `groups_by`, then registers the weights' regions
  // with new executors within `register_budget` of their own (a rebuild's
  // connection time never eats into the registration's).
  void Connect(const std::string& new_label, Deadline groups_by, std::chrono::milliseconds register_budget)
      REQUIRES(cycle_role) EXCLUDES(mu);
  void Publish() REQUIRES(mu);
  // Names what the cycle thread is doing for the watchdog (StepEngine), and
  // how long it may take (default: the deadline).
  void SetOp(std::string op, std::chrono::milliseconds budget = std::chrono::milliseconds(0)) EXCLUDES(mu);

  // Engine thread.
  void StepEngine(void* stream) REQUIRES(engine_role) EXCLUDES(mu);
  void CommitScheduled(int x, int64_t at_step) REQUIRES(engine_role) EXCLUDES(mu);
  // Enqueues a committed layer's device maps on the engine's stream (a GPU
  // call: never with `mu` held). Without a device: nothing.
  void UploadMaps(int layer, std::span<const int32_t> phy2log) REQUIRES(engine_role) EXCLUDES(mu);
  // A staged layer's commit on this thread (sync mode): the executor's copy,
  // the maps' upload, then the commit applied at `step` (and published).
  void CommitNow(int x, const Staged& st, bool publish) REQUIRES(engine_role, cycle_role) EXCLUDES(mu);

  // Cycle thread (background in async mode, the engine in sync mode).
  void Loop() EXCLUDES(mu);
  void RunCycle(Request req) REQUIRES(cycle_role) EXCLUDES(mu);
  void AbandonCycle(const Request& req, Clock::time_point start, const std::exception& e,
                    const std::string& where, int layer, bool groups_used, bool summed, bool rebuilt,
                    bool engine_stuck, const LoadMatrix& load) REQUIRES(cycle_role) EXCLUDES(mu);
  std::vector<RankState> Handshake(Request& req) REQUIRES(cycle_role) EXCLUDES(mu);
  void Resolve(const std::vector<RankState>& states) REQUIRES(cycle_role) EXCLUDES(mu);
  struct StagedOutcome {
    Staged staged;
    bool ok = false;
    std::exception_ptr error;  // why staging failed
  };
  StagedOutcome StageLayer(int x, int layer, const Placement& cur, const Placement& next)
      REQUIRES(cycle_role) EXCLUDES(mu);
  void MigrateLayerAsync(int x, int layer, const Placement& cur, const Placement& next, bool last)
      REQUIRES(cycle_role) EXCLUDES(mu);
  void MigrateLayerSync(int layer, const Placement& cur, const Placement& next)
      REQUIRES(cycle_role) EXCLUDES(mu);
  int64_t Decide(const Staged& staged, bool staged_ok, std::exception_ptr stage_error, int layer,
                 std::exception_ptr* after) REQUIRES(cycle_role) EXCLUDES(mu);
  void EndRound() REQUIRES(cycle_role) EXCLUDES(mu);
  // Waits until pred() (called with `mu` held: true) or `until` (false); throws
  // Stopped when the balancer stops first.
  template <typename Pred>
  bool WaitFor(Pred pred, Deadline until) EXCLUDES(mu);
  // Waits, at most EngineBudget(), until the engine has made every commit
  // scheduled for it (each at a step every rank agreed on), or only that of
  // `executor`; throws Error naming the layer, its step and the engine's
  // step when it has not. `why` is the operation that waits.
  void WaitForScheduledCommits(const std::string& why, int executor = -1) REQUIRES(cycle_role)
      EXCLUDES(mu);
  // The host side of a commit: the placement in force, versions, metrics,
  // the commit event. Its GPU side is UploadMaps, outside the lock.
  void ApplyCommitLocked(const Staged& st, double seconds, int64_t at_step) REQUIRES(mu);
  void FinishCycleLocked(int64_t at_step) REQUIRES(mu);
  BalancerMetrics MetricsLocked() const REQUIRES(mu) {
    BalancerMetrics m = metrics;
    m.step = step;
    m.cycle_in_progress = cycle_active;
    const int64_t next = TriggerStep(next_trigger_index);
    m.steps_to_next_rebalance = cfg.last_rebalance_step > 0 && next >= cfg.last_rebalance_step
                                    ? -1  // no trigger left
                                    : std::max<int64_t>(0, next - step);
    return m;
  }
  // The blame notes of cycle `cycle` (runtime/blame.h): notes whom this rank
  // blames and follows the peers' notes to the rank to blame.
  std::string BlamePrefix(int64_t cycle) const { return cfg.name + "/blame/" + std::to_string(cycle); }
  runtime::BlameVerdict FollowBlame(int64_t cycle, int blamed) REQUIRES(cycle_role);
};

template <typename Pred>
bool Balancer::State::WaitFor(Pred pred, Deadline until) {
  util::MutexLock lock(&mu);
  while (!stop && !pred())
    if (!cv.WaitUntil(&mu, until) && !stop && !pred()) return false;
  if (stop) throw balancer_internal::Stopped{};
  return true;
}

}  // namespace eplb
