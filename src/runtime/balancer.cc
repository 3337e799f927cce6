// The online balancer (include/eplb/balancer.h).
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
#include "runtime/device_load.h"
#include "runtime/layer_threads.h"
#include "runtime/load_window.h"
#include "wire/codec.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

uint64_t Fnv(const void* data, size_t bytes, uint64_t h = 14695981039346656037ull) {
  auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t HashLayer(std::span<const int32_t> phy2log) {
  return Fnv(phy2log.data(), phy2log.size_bytes());
}

std::string RankList(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// The balancer is being destroyed: unwinds a cycle without reporting it.
struct Stopped {};

// --- messages -----------------------------------------------------------------

// Every message a rank sends its peers goes through the wire codec
// (src/wire/codec.h): a short or foreign one is an error naming the peer.
constexpr size_t kMaxLabelBytes = 4096;

// What a rank tells the others at the start of a cycle.
struct RankState {
  int32_t rank = -1;
  int64_t cycle = -1;
  uint8_t failed = 0;    // a cycle failed here since the groups were last (re)built
  std::string label;     // name of the groups in use
  int32_t doubt_layer = -1;
  uint32_t doubt_version = 0;
  uint64_t doubt_hash = 0;
  std::vector<uint32_t> versions;  // commits per layer
  std::vector<uint64_t> hashes;    // phy2log hash per layer

  std::vector<uint8_t> Encode() const {
    wire::Writer w(wire::Kind::kHandshake);
    w.Put(rank).Put(cycle).Put(failed).PutString(label);
    w.Put(doubt_layer).Put(doubt_version).Put(doubt_hash);
    w.Put(static_cast<uint32_t>(versions.size()));
    for (uint32_t v : versions) w.Put(v);
    for (uint64_t h : hashes) w.Put(h);
    return w.Take();
  }
  static RankState Decode(std::span<const uint8_t> b, int me, int from, int num_layers) {
    wire::Reader r(b, wire::Kind::kHandshake, {"balancer", "handshake", me, from});
    RankState s;
    s.rank = r.Get<int32_t>();
    s.cycle = r.Get<int64_t>();
    s.failed = r.Get<uint8_t>();
    s.label = r.GetString(kMaxLabelBytes);
    s.doubt_layer = r.Get<int32_t>();
    s.doubt_version = r.Get<uint32_t>();
    s.doubt_hash = r.Get<uint64_t>();
    const uint32_t n = r.Get<uint32_t>();
    if (static_cast<int64_t>(n) != num_layers)
      throw Error("balancer", "handshake",
                  "rank " + std::to_string(from) + " balances " + std::to_string(n) +
                      " layers, this rank " + std::to_string(num_layers),
                  me, from);
    s.versions.resize(n);
    s.hashes.resize(n);
    for (auto& v : s.versions) v = r.Get<uint32_t>();
    for (auto& h : s.hashes) h = r.Get<uint64_t>();
    r.Finish();
    if (s.rank != from) r.Fail("it says it is rank " + std::to_string(s.rank));
    if (s.doubt_layer < -1 || s.doubt_layer >= num_layers)
      r.Fail("a layer in doubt outside [0, " + std::to_string(num_layers) + ")");
    return s;
  }
};

// One rank's vote in a commit agreement.
struct Vote {
  int32_t ok = 0;
  int32_t rank = -1;
  int64_t proposal = 0;  // the earliest step this rank can commit at

  std::vector<uint8_t> Encode() const {
    return wire::Writer(wire::Kind::kVote).Put(ok).Put(rank).Put(proposal).Take();
  }
  static Vote Decode(std::span<const uint8_t> b, const wire::Origin& origin) {
    wire::Reader r(b, wire::Kind::kVote, origin);
    Vote v;
    v.ok = r.Get<int32_t>();
    v.rank = r.Get<int32_t>();
    v.proposal = r.Get<int64_t>();
    r.Finish();
    if (v.rank != origin.peer) r.Fail("it says it is rank " + std::to_string(v.rank));
    if (v.ok != 0 && v.ok != 1) r.Fail("a vote that is neither yes nor no");
    if (v.proposal < 0) r.Fail("a negative commit step");
    return v;
  }
};

// The outcome of a layer's agreement recorded in the store: commit at a
// step, or abandon (no step).
std::vector<uint8_t> EncodeDecision(std::optional<int64_t> step) {
  return wire::Writer(wire::Kind::kDecision).Put(uint8_t{step ? uint8_t{1} : uint8_t{0}}).Put(step.value_or(0)).Take();
}
std::optional<int64_t> DecodeDecision(std::span<const uint8_t> b, const wire::Origin& origin) {
  wire::Reader r(b, wire::Kind::kDecision, origin);
  const auto commit = r.Get<uint8_t>();
  const auto step = r.Get<int64_t>();
  r.Finish();
  if (commit > 1 || step < 0) r.Fail("neither commit at a step nor abandon");
  if (!commit) return std::nullopt;
  return step;
}

}  // namespace

const char* BalancerModeName(BalancerMode mode) {
  return mode == BalancerMode::kAsync ? "async" : "sync";
}

// --- links --------------------------------------------------------------------

BalancerLinks MakeBalancerLinks(std::shared_ptr<Store> store, int rank, int world_size,
                                const SelectionRequest& request, Deadline deadline, int device) {
  if (!store) throw InvalidArgument("balancer links: no store");
  if (rank < 0 || rank >= world_size)
    throw InvalidArgument("balancer links: rank " + std::to_string(rank) + " outside [0, " +
                          std::to_string(world_size) + ")");
  BalancerLinks links;
  links.store = store;
  links.rank = rank;
  links.world_size = world_size;
  SelectionFacts facts = SelectionFacts::Detect();
  if (device >= 0)
    facts.cuda_ipc_check = [&] {
      return CudaIpcUsable(*store, rank, world_size, device, "balancer-links/cuda_ipc", deadline);
    };
  links.selection = SelectCommunicator(request, facts);
  LogSelection(links.selection);
  AgreeOnSelection(*store, "balancer-links", rank, world_size, links.selection, deadline);
  const std::string name = links.selection.name;
  links.make_communicator = [store, rank, world_size, name, device](const std::string& group,
                                                                     Deadline d) {
    CommunicatorOptions o;
    o.rank = rank;
    o.world_size = world_size;
    o.store = store;
    o.key_prefix = group;
    o.device = device;
    o.connect_timeout = std::max(TimeLeft(d), std::chrono::milliseconds(1));
    return MakeCommunicator(name, o);
  };
  links.make_control_group = [store, rank, world_size](const std::string& group, Deadline d) {
    GlooOptions o;
    o.store = store;
    o.rank = rank;
    o.world_size = world_size;
    o.name = group;
    return ConnectGlooControlGroup(o, d);
  };
  if (device >= 0) {
    links.make_copier = [device] { return MakeCudaCopier(device); };
  } else {
    links.make_copier = [] { return MakeHostCopier(); };
  }
  return links;
}

// --- metrics --------------------------------------------------------------------

std::string FormatPrometheus(const BalancerMetrics& m) {
  std::string out;
  const std::string lbl = fmt::format("rank=\"{}\"", m.rank);
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    std::string v;
    if constexpr (std::is_floating_point_v<decltype(value)>) {
      v = std::isnan(value) ? "NaN" : fmt::format("{}", value);
    } else {
      v = fmt::format("{}", value);
    }
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{{{}}} {}\n", name, help, name, type, name, lbl, v);
  };
  out += fmt::format(
      "# HELP eplb_info The communicator and mode of the balancer.\n# TYPE eplb_info gauge\n"
      "eplb_info{{{},communicator=\"{}\",mode=\"{}\"}} 1\n",
      lbl, m.communicator, m.mode);
  metric("eplb_balancedness", "gauge",
         "Mean over layers of mean rank load / max rank load of the placement in force under the "
         "last summed window (1 is perfect).",
         m.balancedness);
  metric("eplb_step", "counter", "Engine steps recorded.", m.step);
  metric("eplb_steps_to_next_rebalance", "gauge", "Steps until the next rebalance trigger.",
         m.steps_to_next_rebalance);
  metric("eplb_cycle_in_progress", "gauge", "1 while a rebalance cycle runs.",
         m.cycle_in_progress ? 1 : 0);
  out += fmt::format(
      "# HELP eplb_cycles_total Rebalance cycles by result.\n# TYPE eplb_cycles_total counter\n"
      "eplb_cycles_total{{{0},result=\"started\"}} {1}\neplb_cycles_total{{{0},result=\"completed\"}} "
      "{2}\neplb_cycles_total{{{0},result=\"failed\"}} {3}\neplb_cycles_total{{{0},result=\"skipped\"}} {4}\n",
      lbl, m.cycles_started, m.cycles_completed, m.cycles_failed, m.cycles_skipped);
  metric("eplb_layers_committed_total", "counter", "Layers switched to a new placement.",
         m.layers_committed);
  metric("eplb_roll_forwards_total", "counter",
         "Layers committed late because a peer committed them while this rank was in doubt.",
         m.roll_forwards);
  metric("eplb_group_rebuilds_total", "counter",
         "Communicator and control group rebuilds after failures.", m.rebuilds);
  metric("eplb_commit_waits_total", "counter",
         "Steps that waited for a commit agreement (async).", m.commit_waits);
  metric("eplb_commit_wait_seconds_max", "gauge",
         "Longest wait of a step for a commit agreement (async).", m.commit_wait_seconds_max);
  metric("eplb_bytes_moved_total", "counter", "Expert bytes moved over the wire, every rank.",
         m.bytes_moved_total);
  const CycleReport& c = m.last_cycle;
  metric("eplb_last_cycle_ok", "gauge", "1 if the last rebalance cycle completed.", c.ok ? 1 : 0);
  metric("eplb_last_cycle_seconds", "gauge", "Wall time of the last cycle.", c.seconds);
  metric("eplb_last_cycle_bytes", "gauge", "Bytes over the wire in the last cycle, every rank.",
         c.bytes_moved);
  metric("eplb_last_cycle_experts_moved", "gauge",
         "Experts over the wire in the last cycle, every rank.", c.experts_moved);
  metric("eplb_last_cycle_layers_committed", "gauge", "Layers committed in the last cycle.",
         c.layers_committed);
  return out;
}

std::string FormatMetricsLine(const BalancerMetrics& m) {
  std::string s = fmt::format(
      "step {}: balancedness {:.4f}, next rebalance in {} steps{}, cycles {} ok / {} failed / {} "
      "skipped, {} layers committed, {:.1f} MB moved",
      m.step, m.balancedness, m.steps_to_next_rebalance,
      m.cycle_in_progress ? " (a cycle is running)" : "", m.cycles_completed, m.cycles_failed,
      m.cycles_skipped, m.layers_committed, m.bytes_moved_total / 1e6);
  if (m.last_cycle.cycle > 0 || m.cycles_started > 0)
    s += fmt::format("; last cycle {}: {}, {:.3f} s, {:.1f} MB", m.last_cycle.cycle,
                     m.last_cycle.ok ? "ok" : "failed", m.last_cycle.seconds,
                     m.last_cycle.bytes_moved / 1e6);
  return s;
}

// --- the balancer -------------------------------------------------------------

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

Balancer::State::State(BalancerLinks l, std::vector<LayerWeights> w, const BalancerConfig& c,
                       Placement initial)
    : links(std::move(l)),
      cfg(c),
      weights(std::move(w)),
      window(std::max(c.num_layers, 1), std::max(c.num_experts, 1), std::max(c.window_steps, 1)) {
  auto fail = [](const std::string& m) { throw InvalidArgument("balancer: " + m); };
  me = links.rank;
  world = links.world_size;
  if (!links.store) fail("no store in the links");
  if (world < 1 || me < 0 || me >= world)
    fail("rank " + std::to_string(me) + " outside [0, " + std::to_string(world) + ")");
  if (!links.make_communicator || !links.make_control_group || !links.make_copier)
    fail("the links lack a communicator, control group or copier factory");
  if (cfg.num_layers <= 0 || cfg.num_experts <= 0 || cfg.num_slots <= 0)
    fail("layers, experts and slots must be positive");
  if (cfg.num_slots % world != 0)
    fail(std::to_string(cfg.num_slots) + " slots do not split over " + std::to_string(world) +
         " ranks");
  if (cfg.window_steps <= 0 || cfg.window_steps > (1 << 16))
    fail("window_steps must be in [1, 65536]");
  if (cfg.step_interval <= 0) fail("step_interval must be positive");
  if (cfg.commit_lead_steps < 1) fail("commit_lead_steps must be at least 1");
  if (cfg.staging_layers < 1 || cfg.staging_layers > 2) fail("staging_layers must be 1 or 2");
  if (cfg.deadline.count() <= 0) fail("deadline must be positive");
  if (static_cast<int>(weights.size()) != cfg.num_layers)
    fail(std::to_string(weights.size()) + " layers of weights for " +
         std::to_string(cfg.num_layers) + " MoE layers");
  if (initial.num_layers != cfg.num_layers || initial.num_experts != cfg.num_experts ||
      initial.num_slots != cfg.num_slots || initial.num_ranks != world)
    fail("the initial placement's shape (" + std::to_string(initial.num_layers) + " layers x " +
         std::to_string(initial.num_experts) + " experts, " + std::to_string(initial.num_slots) +
         " slots on " + std::to_string(initial.num_ranks) + " ranks) differs from the config's");
  initial.Validate();
  spr = cfg.num_slots / world;
  policy = MakePolicy(cfg.policy);
  if (cfg.policy_threads < 0) fail("policy_threads must be 0 (one per core) or more");
  policy_threads = std::make_unique<runtime::LayerThreads>(cfg.policy_threads);
  {
    LoadMatrix zero(cfg.num_layers, cfg.num_experts);
    PolicyInput in{&zero, cfg.num_slots, cfg.num_groups, cfg.num_nodes, world, &initial, {}};
    ValidatePolicyInput(in);
  }
  if (async() && IsNcclFamily(links.selection.name))
    throw InvalidArgument("balancer: " + links.selection.name +
                          " cannot be used in async mode (see selection.h); use nixl, cuda_ipc or gloo");
  first_trigger = cfg.first_rebalance_step > 0 ? cfg.first_rebalance_step
                                               : std::min(cfg.window_steps, cfg.step_interval);
  current = std::move(initial);
  current.Derive();
  if (cfg.device >= 0) {
#if EPLB_HAVE_CUDA
    device_load = std::make_unique<runtime::DeviceLoad>(cfg.device, current);
#else
    fail("config.device is set but eplb was built without CUDA");
#endif
  }
  versions.assign(cfg.num_layers, 0);
  scheduled.resize(async() ? cfg.staging_layers : 1);
  Publish();
  metrics.rank = me;
  metrics.mode = BalancerModeName(cfg.mode);
  metrics.communicator = links.selection.name;
  Connect("init", DeadlineAfter(cfg.connect_timeout));
  if (metrics.communicator.empty()) metrics.communicator = std::string(comm->name());
  spdlog::info("eplb: rank {} balancer ready: {} mode, {} layers x {} experts -> {} slots on {} ranks, "
               "window {} steps, first rebalance at step {}, then every {} steps, deadline {} ms",
               me, metrics.mode, cfg.num_layers, cfg.num_experts, cfg.num_slots, world,
               cfg.window_steps, first_trigger, cfg.step_interval, cfg.deadline.count());
  if (async()) bg = std::thread([this] { Loop(); });
}

Balancer::State::~State() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_all();
  if (bg.joinable()) bg.join();
}

void Balancer::State::Connect(const std::string& new_label, Deadline deadline) {
  executors.clear();
  comm.reset();
  control.reset();
  label = new_label;
  control = links.make_control_group(cfg.name + "/ctl/" + new_label, deadline);
  comm = links.make_communicator(cfg.name + "/comm/" + new_label, deadline);
  if (async() && IsNcclFamily(comm->name()))
    throw InvalidArgument("balancer: the " + std::string(comm->name()) +
                          " communicator cannot be used in async mode");
  // One executor per staging buffer: the cycle thread stages into one while
  // the engine thread commits out of the other, and two executors share no
  // state (one executor's buffers share its copier and bookkeeping).
  MigrationOptions mo;
  mo.ranks_per_node = cfg.ranks_per_node;
  mo.staging_layers = 1;
  for (size_t x = 0; x < scheduled.size(); ++x)
    executors.push_back(std::make_unique<MigrationExecutor>(*comm, *control, weights, spr,
                                                            links.make_copier(), mo, deadline));
}

void Balancer::State::Publish() { published = std::make_shared<const Placement>(current); }

void Balancer::State::SetOp(std::string op) {
  std::lock_guard<std::mutex> lock(mu);
  bg_op = std::move(op);
  bg_op_since = Clock::now();
  bg_op_warned = false;
}

template <typename Pred>
void Balancer::State::WaitFor(Pred pred) {
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return stop || pred(); });
  if (stop) throw Stopped{};
}

// --- engine side ----------------------------------------------------------------

void Balancer::State::ApplyCommitLocked(const Staged& st, double seconds, int64_t at_step) {
  const int l = st.plan.layer;
  std::copy(st.phy2log.begin(), st.phy2log.end(), current.layer_phy2log(l).begin());
  current.Derive();
  ++versions[l];
  ++metrics.layers_committed;
  if (st.roll_forward) ++metrics.roll_forwards;
  metrics.bytes_moved_total += st.plan.total.bytes_received;
  if (!st.roll_forward && st.cycle == live.cycle) {
    ++live.layers_committed;
    live.experts_moved += st.plan.total.experts_received;
    live.slots_changed += st.plan.total.slots_changed();
    live.bytes_moved += st.plan.total.bytes_received;
    live.bytes_received += st.plan.per_rank[me].bytes_received;
    live.commit_seconds_max = std::max(live.commit_seconds_max, seconds);
  }
  pending_commits.push_back(CommitEvent{st.cycle, l, at_step, seconds, st.roll_forward});
#if EPLB_HAVE_CUDA
  // Engine thread (every commit is): the device maps follow on its stream.
  if (device_load) device_load->Upload(current, l);
#endif
}

// A cycle ended well at `at_step` (the same step on every rank).
void Balancer::State::FinishCycleLocked(int64_t at_step) {
  live.ok = true;
  live.end_step = at_step;
  live.seconds = SecondsSince(live_start);
  ++metrics.cycles_completed;
  metrics.balancedness = live.balancedness_after;
  metrics.last_cycle = live;
  metrics.last_error.clear();
  pending_reports.push_back(live);
  cycle_active = false;
  phase = Phase::kIdle;
  spdlog::info(
      "eplb: rank {}: cycle {} (steps {}-{}): balancedness {:.4f} -> {:.4f}, {} of {} layers "
      "changed, {} experts ({:.1f} MB) over the wire, {:.3f} s, {:.2f} GB/s, longest commit {:.2f} ms",
      me, live.cycle, live.trigger_step, at_step, live.balancedness_before, live.balancedness_after,
      live.layers_committed, cfg.num_layers, live.experts_moved, live.bytes_moved / 1e6,
      live.seconds, live.GBps(), live.commit_seconds_max * 1e3);
}

void Balancer::State::CommitScheduled(int x, int64_t at_step) {
  const Staged& st = scheduled[x];  // stable: only the engine clears it
  const auto start = Clock::now();
  try {
    executors[x]->CommitOn(st.plan, engine_stream);
  } catch (const std::exception& e) {
    // Cannot happen unless the bookkeeping is wrong: the layer was staged.
    spdlog::critical("eplb: rank {} could not commit MoE layer {}: {}", me, st.plan.layer, e.what());
    std::lock_guard<std::mutex> lock(mu);
    scheduled[x].step = -1;
    cv.notify_all();
    return;
  }
  const double seconds = SecondsSince(start);
  {
    std::lock_guard<std::mutex> lock(mu);
    ApplyCommitLocked(st, seconds, at_step);
    if (async()) Publish();
    if (st.ends_cycle) FinishCycleLocked(at_step);
    scheduled[x].step = -1;
  }
  cv.notify_all();
}

void Balancer::State::StepEngine(void* stream) {
  engine_stream = stream;
#if EPLB_HAVE_CUDA
  if (device_load) device_load->EndStep(window, WaitDeadline());
#endif
  window.CloseStep();
  std::vector<int> to_commit;
  int64_t now_step;
  {
    std::unique_lock<std::mutex> lock(mu);
    now_step = ++step;
    // Watchdog: a background wait past its deadline means a backend is not
    // honouring it; say so instead of going quiet.
    if (!bg_op.empty() && !bg_op_warned &&
        Clock::now() - bg_op_since > cfg.deadline + std::chrono::seconds(2)) {
      bg_op_warned = true;
      spdlog::error(
          "eplb: rank {}: the background migration thread has been in {} for {:.1f} s (deadline "
          "{:.1f} s); the engine keeps serving with the current placement",
          me, bg_op, SecondsSince(bg_op_since), cfg.deadline.count() / 1e3);
    }
    if (floor_step == now_step) {
      ++metrics.commit_waits;
      const auto wait_start = Clock::now();
      const bool got = cv.wait_for(lock, cfg.deadline + std::chrono::seconds(1),
                                   [&] { return stop || floor_step != now_step; });
      metrics.commit_wait_seconds_max = std::max(metrics.commit_wait_seconds_max, SecondsSince(wait_start));
      if (!got) {
        // The agreement never came: veto so this rank will not commit at a
        // step it has passed; the cycle thread treats the layer as in doubt.
        veto = true;
        floor_step = -1;
        spdlog::error("eplb: rank {}: step {} reached without the commit agreement; this rank "
                      "will not commit the layer at that step",
                      me, now_step);
      }
    }
    for (size_t x = 0; x < scheduled.size(); ++x)
      if (scheduled[x].step == now_step) to_commit.push_back(static_cast<int>(x));
    std::sort(to_commit.begin(), to_commit.end(), [&](int a, int b) {
      return scheduled[a].plan.layer < scheduled[b].plan.layer;
    });
  }
  for (int x : to_commit) CommitScheduled(x, now_step);

  std::optional<Request> inline_request;
  std::vector<CommitEvent> commits;
  std::vector<CycleReport> reports;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (end_step == now_step) {
      end_step = -1;
      FinishCycleLocked(now_step);
    }
    if (now_step == TriggerStep(next_trigger_index)) {
      const int64_t c = next_trigger_index++;
      Request req{c + 1, now_step, std::vector<int64_t>(window.sum().begin(), window.sum().end())};
      if (!cycle_active) {
        cycle_active = true;
        phase = Phase::kHandshake;
        if (async()) {
          request = std::move(req);
          cv.notify_all();
        } else {
          inline_request = std::move(req);
        }
      } else if (phase == Phase::kHandshake) {
        request = std::move(req);  // the waiting handshake moves on to this cycle
        cv.notify_all();
      } else {
        ++metrics.cycles_skipped;
        spdlog::debug("eplb: rank {}: trigger at step {} skipped: cycle {} still running", me,
                      now_step, live.cycle);
      }
    }
    commits.swap(pending_commits);
    reports.swap(pending_reports);
  }
  if (inline_request) {
    RunCycle(std::move(*inline_request));
    std::lock_guard<std::mutex> lock(mu);
    for (auto& c : pending_commits) commits.push_back(c);
    for (auto& r : pending_reports) reports.push_back(r);
    pending_commits.clear();
    pending_reports.clear();
  }
  if (!reports.empty()) {
    BalancerMetrics m;
    {
      std::lock_guard<std::mutex> lock(mu);
      m = MetricsLocked();
    }
    spdlog::info("eplb: rank {}: {}", me, FormatMetricsLine(m));
  }
  if (on_commit)
    for (const auto& c : commits) on_commit(c);
  if (on_cycle)
    for (const auto& r : reports) on_cycle(r);
}

// --- cycle side -------------------------------------------------------------------

void Balancer::State::Loop() {
  for (;;) {
    Request req;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return stop || request.has_value(); });
      if (stop) return;
      req = std::move(*request);
      request.reset();
    }
    try {
      RunCycle(std::move(req));
    } catch (const Stopped&) {
      return;
    }
  }
}

// The handshake: every rank writes its state under the cycle's key and
// reads everyone's. A rank still waiting when the next trigger comes joins
// that cycle too, keeping its earlier joins; the cycle run is the smallest
// one every rank joined. Joins are made in increasing order, so once a cycle
// is complete no smaller one can complete later, and every rank picks the
// same cycle without another round. A rank gives up `deadline` after its
// first join.
std::vector<RankState> Balancer::State::Handshake(Request& req) {
  auto key = [&](int64_t cycle, int r) {
    return cfg.name + "/cycle/" + std::to_string(cycle) + "/" + std::to_string(r);
  };
  RankState mine;
  mine.rank = me;
  mine.failed = (failed_since_rebuild || !comm || !control) ? 1 : 0;
  mine.label = label;
  if (doubt) {
    mine.doubt_layer = doubt->staged.plan.layer;
    mine.doubt_version = doubt->version;
    mine.doubt_hash = HashLayer(doubt->staged.phy2log);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    mine.versions = versions;
    for (int l = 0; l < cfg.num_layers; ++l) mine.hashes.push_back(HashLayer(current.layer_phy2log(l)));
  }
  struct Joined {
    int64_t cycle;
    std::vector<std::optional<RankState>> states;
  };
  std::vector<Joined> joined;
  Deadline deadline{};
  Clock::time_point since{};
  auto join = [&](int64_t cycle) {
    mine.cycle = cycle;
    SetOp(fmt::format("the handshake of cycle {}", cycle));
    links.store->Set(key(cycle, me), mine.Encode());
    Joined j{cycle, std::vector<std::optional<RankState>>(world)};
    j.states[me] = mine;
    joined.push_back(std::move(j));
    if (joined.size() > 8) joined.erase(joined.begin());  // stop polling old joins
    if (joined.size() == 1) {
      deadline = WaitDeadline();
      since = Clock::now();
    }
  };
  join(req.cycle);
  for (;;) {
    for (Joined& j : joined) {
      bool complete = true;
      for (int r = 0; r < world; ++r) {
        if (j.states[r]) continue;
        try {
          auto blob = links.store->Get(key(j.cycle, r), std::min(deadline, DeadlineAfter(1ms)));
          j.states[r] = RankState::Decode(blob, me, r, cfg.num_layers);
        } catch (const TimeoutError&) {
          complete = false;
        }
      }
      if (!complete) continue;
      std::lock_guard<std::mutex> lock(mu);
      if (j.cycle != req.cycle)
        spdlog::info("eplb: rank {}: every rank joined cycle {}: running it", me, j.cycle);
      // A trigger that came meanwhile is dropped, on every rank alike.
      if (request) {
        req = std::move(*request);
        request.reset();
      }
      metrics.cycles_skipped += static_cast<int64_t>(joined.size()) - 1;
      req.cycle = j.cycle;
      phase = Phase::kRunning;
      std::vector<RankState> states;
      for (auto& s : j.states) states.push_back(std::move(*s));
      return states;
    }
    const Joined& last = joined.back();
    std::vector<int> missing;
    for (int r = 0; r < world; ++r)
      if (!last.states[r]) missing.push_back(r);
    std::optional<Request> next;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stop) throw Stopped{};
      if (request) {
        next = std::move(*request);
        request.reset();
      }
    }
    if (next) {
      spdlog::log(joined.size() == 1 ? spdlog::level::warn : spdlog::level::debug,
                  "eplb: rank {}: rank{} {} did not join cycle {} yet; joining cycle {} as well", me,
                  missing.size() > 1 ? "s" : "", RankList(missing), last.cycle, next->cycle);
      req = std::move(*next);
      join(req.cycle);
      continue;
    }
    if (Expired(deadline))
      throw TimeoutError("balancer", fmt::format("handshake of cycle {}", last.cycle),
                         fmt::format("rank{} {} did not join within {:.1f} s (stalled, dead or "
                                     "still busy with an earlier cycle)",
                                     missing.size() > 1 ? "s" : "", RankList(missing),
                                     SecondsSince(since)),
                         me, missing.size() == 1 ? missing[0] : -1);
  }
}

// Settles a layer left in doubt: if a peer committed it, commit it here too
// (roll forward); if nobody did, drop it. Then checks that every rank now
// holds the same placement.
void Balancer::State::Resolve(const std::vector<RankState>& states) {
  const int L = cfg.num_layers;
  auto rolls_forward = [&](const RankState& s, int l, uint32_t maxv) {
    return s.versions[l] < maxv && s.doubt_layer == l && s.doubt_version == maxv;
  };
  std::vector<uint32_t> maxv(L, 0);
  for (const RankState& s : states)
    for (int l = 0; l < L; ++l) maxv[l] = std::max(maxv[l], s.versions[l]);
  for (const RankState& s : states)
    for (int l = 0; l < L; ++l)
      if (s.versions[l] < maxv[l] && !rolls_forward(s, l, maxv[l]))
        throw Error("balancer", "handshake",
                    fmt::format("MoE layer {}: rank {} holds version {} but version {} was "
                                "committed and it has nothing staged to catch up with",
                                l, s.rank, s.versions[l], maxv[l]),
                    me, s.rank);
  for (int l = 0; l < L; ++l) {
    std::optional<uint64_t> agreed;
    for (const RankState& s : states) {
      const uint64_t h = rolls_forward(s, l, maxv[l]) ? s.doubt_hash : s.hashes[l];
      if (agreed && *agreed != h)
        throw Error("balancer", "handshake",
                    fmt::format("MoE layer {}: rank {} holds another placement than rank {}", l,
                                s.rank, states[0].rank),
                    me, s.rank);
      agreed = h;
    }
  }
  if (!doubt) return;
  const int l = doubt->staged.plan.layer;
  if (!rolls_forward(states[me], l, maxv[l])) {
    spdlog::info("eplb: rank {}: MoE layer {} was in doubt; no rank committed it, it keeps its placement",
                 me, l);
    doubt.reset();
    return;
  }
  spdlog::warn("eplb: rank {}: MoE layer {} was in doubt and a peer committed it: committing it here too",
               me, l);
  Doubt d = std::move(*doubt);
  doubt.reset();
  d.staged.roll_forward = true;
  d.staged.ends_cycle = false;
  if (async()) {
    {
      std::lock_guard<std::mutex> lock(mu);
      d.staged.step = step + 1;
      scheduled[d.executor] = std::move(d.staged);
    }
    SetOp(fmt::format("the roll-forward commit of MoE layer {}", l));
    WaitFor([&] { return scheduled[d.executor].step < 0; });
  } else {
    const auto start = Clock::now();
    executors[d.executor]->CommitOn(d.staged.plan, engine_stream);
    std::lock_guard<std::mutex> lock(mu);
    ApplyCommitLocked(d.staged, SecondsSince(start), step);
    Publish();
  }
}

// The commit agreement of one layer. Round 1: every rank says whether it
// staged the layer. Round 2 (async): the step to commit it at. A collective
// that fails part-way (a rank dies while its vote is in flight) can complete
// on some survivors and not on others, so no rank acts on its own view: each
// one that staged the layer records the outcome it saw -- commit at a step,
// or abandon -- in the store under the layer's key, where the first record
// stands (Store::SetIfAbsent), and every rank follows the record. Commit is
// recorded only by a rank that saw every rank's vote, so a layer some rank
// did not stage is never committed; and a survivor whose exchange failed
// still commits at the same step as one whose exchange completed.
//
// Returns the agreed commit step (sync mode: 0). `after` is set when this
// rank's exchange failed but the record says commit: the caller commits,
// then rethrows it to abandon the rest of the cycle. Throws when the layer is
// abandoned; if the record cannot be read or written the layer stays in
// doubt, settled at the next handshake.
int64_t Balancer::State::Decide(const Staged& staged, bool staged_ok, std::exception_ptr stage_error,
                                int layer, std::exception_ptr* after) {
  // A rank whose transfers timed out skips the vote: a peer is stalled, so
  // the vote would only wait out a second deadline. Other failures are voted
  // on, so every rank abandons the layer at once.
  if (stage_error) {
    try {
      std::rethrow_exception(stage_error);
    } catch (const TimeoutError&) {
      throw;
    } catch (...) {
    }
  }
  const std::string operation = fmt::format("commit agreement of MoE layer {}", layer);
  auto gather = [&](const Vote& mine) {
    auto all = control->AllGather(mine.Encode(), WaitDeadline());
    std::vector<Vote> votes(world);
    for (int r = 0; r < world; ++r) votes[r] = Vote::Decode(all[r], {"balancer", operation, me, r});
    return votes;
  };
  auto clear_floor = [&] {
    std::lock_guard<std::mutex> lock(mu);
    floor_step = -1;
    cv.notify_all();
  };
  // Records this rank's outcome (commit at `step`, or abandon when empty)
  // and returns the one that stands.
  auto record = [&](std::optional<int64_t> step) -> std::optional<int64_t> {
    const std::vector<uint8_t> mine = EncodeDecision(step);
    SetOp(fmt::format("recording the decision on MoE layer {}", layer));
    std::vector<uint8_t> stands;
    try {
      stands = links.store->SetIfAbsent(
          fmt::format("{}/decision/{}/{}", cfg.name, staged.cycle, layer), mine);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu);
      doubt = Doubt{0, staged, versions[layer] + 1};  // a peer may commit it
      throw Error("balancer", operation,
                  fmt::format("could not record the decision in the store ({}); the layer is in "
                              "doubt until the next handshake",
                              e.what()),
                  me);
    }
    // The record is whoever wrote first: a peer, or an outsider with the
    // store's address (named as "a peer").
    return DecodeDecision(stands, {"balancer", "the decision recorded on MoE layer " + std::to_string(layer), me, -1});
  };
  // After this rank's exchange failed: records "abandon" and follows what
  // stands. If the store cannot be reached the layer is left in doubt and
  // the exchange's own error (naming the peer) is what surfaces.
  auto follow_record = [&](std::exception_ptr failure) -> int64_t {
    std::optional<int64_t> stands;
    try {
      stands = record(std::nullopt);
    } catch (const std::exception& e) {
      spdlog::error("eplb: rank {}: {}", me, e.what());
      std::rethrow_exception(failure);
    }
    if (!stands) std::rethrow_exception(failure);
    spdlog::warn("eplb: rank {}: the vote on MoE layer {} failed here but a peer saw every vote and "
                 "recorded the commit: committing it here too",
                 me, layer);
    *after = failure;
    return *stands;
  };

  // Round 1: did every rank stage the layer? Ranks get here when their own
  // transfers are done, at different times; no step waits on this round.
  SetOp(fmt::format("the staging vote of MoE layer {}", layer));
  std::vector<Vote> votes;
  try {
    votes = gather(Vote{staged_ok ? 1 : 0, me, 0});
  } catch (...) {
    std::exception_ptr failure = stage_error ? stage_error : std::current_exception();
    if (!staged_ok) std::rethrow_exception(failure);
    return follow_record(failure);
  }
  if (stage_error) std::rethrow_exception(stage_error);
  std::vector<int> failed;
  for (const Vote& v : votes)
    if (!v.ok) failed.push_back(v.rank);
  if (!failed.empty())
    throw Error("balancer", fmt::format("stage of MoE layer {}", layer),
                fmt::format("rank{} {} could not stage it", failed.size() > 1 ? "s" : "",
                            RankList(failed)),
                me, failed[0]);
  const std::string abandoned = "a peer's vote exchange failed and it recorded abandoning the layer";
  if (!async()) {
    if (!record(0)) throw Error("balancer", operation, abandoned, me);
    return 0;
  }

  // Round 2 (async): the commit step. Every rank arrives within a round trip
  // of the others, so the engine reaching its own proposal first (and
  // waiting for the answer) is rare and short.
  Vote mine{1, me, 0};
  {
    std::lock_guard<std::mutex> lock(mu);
    mine.proposal = step + cfg.commit_lead_steps;
    floor_step = mine.proposal;
    veto = false;
  }
  SetOp(fmt::format("the commit-step agreement of MoE layer {}", layer));
  try {
    votes = gather(mine);
  } catch (...) {
    std::exception_ptr failure = std::current_exception();
    try {
      return follow_record(failure);
    } catch (...) {
      clear_floor();
      throw;
    }
  }
  int64_t proposal = 0;
  for (const Vote& v : votes) proposal = std::max(proposal, v.proposal);
  std::optional<int64_t> stands;
  try {
    stands = record(proposal);
  } catch (...) {
    clear_floor();
    throw;
  }
  if (!stands) {
    clear_floor();
    throw Error("balancer", operation, abandoned, me);
  }
  return *stands;
}

void Balancer::State::MigrateLayerAsync(int x, int layer, const Placement& cur,
                                        const Placement& next, bool last) {
  SetOp(fmt::format("waiting for staging buffer {} (commit of an earlier layer)", x));
  WaitFor([&] { return scheduled[x].step < 0; });
  // Agreed steps never decrease, so the last layer's commit step is the
  // cycle's largest: committing it ends the cycle, at the same step everywhere.
  StagedOutcome o = StageLayer(x, layer, cur, next);
  Staged& st = o.staged;
  st.ends_cycle = last;
  int64_t agreed;
  std::exception_ptr after;
  try {
    agreed = Decide(st, o.ok, o.error, layer, &after);
  } catch (...) {
    if (doubt) doubt->executor = x;
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    if (veto) {
      veto = false;
      doubt = Doubt{x, st, versions[layer] + 1};
      throw Error("balancer", fmt::format("commit of MoE layer {}", layer),
                  "this rank's engine passed its proposed step before the agreement arrived", me);
    }
    // One layer per step, so a step pauses for one commit copy at most: the
    // previous layer's step is the same on every rank, so this is too.
    st.step = std::max(agreed, last_commit_step + 1);
    last_commit_step = st.step;
    scheduled[x] = std::move(st);
    floor_step = -1;
  }
  cv.notify_all();
  if (after) std::rethrow_exception(after);  // committed as recorded; the cycle ends here
}

// Plans and stages one layer on executor x; a failure to stage is returned
// (every rank votes on it), bad input thrown.
Balancer::State::StagedOutcome Balancer::State::StageLayer(int x, int layer, const Placement& cur,
                                                           const Placement& next) {
  StagedOutcome o;
  o.staged.cycle = live.cycle;
  o.staged.plan = executors[x]->Plan(cur, next, layer);
  auto row = next.layer_phy2log(layer);
  o.staged.phy2log.assign(row.begin(), row.end());
  SetOp(fmt::format("the transfers of MoE layer {}", layer));
  try {
    LayerMigrationReport r = executors[x]->Stage(o.staged.plan, WaitDeadline());
    std::lock_guard<std::mutex> lock(mu);
    live.transfer_seconds += r.stage_seconds;
    o.ok = true;
  } catch (const InvalidArgument&) {
    throw;
  } catch (...) {
    o.error = std::current_exception();
  }
  return o;
}

void Balancer::State::MigrateLayerSync(int layer, const Placement& cur, const Placement& next) {
  StagedOutcome o = StageLayer(0, layer, cur, next);
  const Staged& st = o.staged;
  std::exception_ptr after;
  Decide(st, o.ok, o.error, layer, &after);
  const auto start = Clock::now();
  executors[0]->CommitOn(st.plan, engine_stream);
  {
    std::lock_guard<std::mutex> lock(mu);
    ApplyCommitLocked(st, SecondsSince(start), step);
  }
  if (after) std::rethrow_exception(after);  // committed as recorded; the cycle ends here
}

// A cycle with nothing to commit still ends at an agreed step, so the next
// trigger is taken or skipped alike on every rank.
void Balancer::State::EndRound() {
  Vote mine{1, me, 0};
  {
    std::lock_guard<std::mutex> lock(mu);
    mine.proposal = step + cfg.commit_lead_steps;
    floor_step = mine.proposal;
    veto = false;
  }
  SetOp("the end-of-cycle agreement");
  std::vector<std::vector<uint8_t>> all;
  try {
    all = control->AllGather(mine.Encode(), WaitDeadline());
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu);
    floor_step = -1;
    cv.notify_all();
    throw;
  }
  int64_t end = 0;
  for (int r = 0; r < world; ++r)
    end = std::max(end, Vote::Decode(all[r], {"balancer", "end-of-cycle agreement", me, r}).proposal);
  {
    std::lock_guard<std::mutex> lock(mu);
    floor_step = -1;
    if (veto || step >= end) {
      veto = false;
      throw Error("balancer", "end-of-cycle agreement",
                  "this rank's engine passed its proposed step before the agreement arrived", me);
    }
    end_step = end;
  }
  cv.notify_all();
}

// A rank that times out blames the peer it was waiting for, but that peer
// may itself have been waiting for a third (a stalled rank holds up its
// neighbours first). Each failing rank notes whom it blames in the store;
// this follows the notes to the rank that has none (the one stalled or
// dead), waiting briefly for peers that fail at about the same time.
int Balancer::State::FollowBlame(int64_t cycle, int blamed, std::string* chain) {
  auto key = [&](int r) {
    return cfg.name + "/blame/" + std::to_string(cycle) + "/" + std::to_string(r);
  };
  try {
    links.store->Set(key(me), wire::Writer(wire::Kind::kBlame).Put(int32_t{blamed}).Take());
  } catch (const std::exception& e) {
    spdlog::debug("eplb: rank {}: could not note whom it blames: {}", me, e.what());
  }
  const Deadline budget = DeadlineAfter(std::min<std::chrono::milliseconds>(cfg.deadline / 2, 500ms));
  std::vector<bool> seen(world, false);
  seen[me] = true;
  int root = blamed;
  while (root >= 0 && root < world && !seen[root]) {
    seen[root] = true;
    int next = -1;
    try {
      auto note = links.store->Get(key(root), budget);
      wire::Reader r(note, wire::Kind::kBlame, {"balancer", "following the blame", me, root});
      next = r.Get<int32_t>();
      r.Finish();
    } catch (const TimeoutError&) {
      break;  // no note: this one is stalled or dead
    } catch (const std::exception& e) {
      spdlog::warn("eplb: rank {}: {}", me, e.what());
      break;  // an unreadable note: blame the rank that wrote it
    }
    if (next < 0 || next >= world || seen[next]) break;
    *chain += fmt::format(", which waited for rank {}", next);
    root = next;
  }
  if (!chain->empty()) *chain = fmt::format(": this rank waited for rank {}", blamed) + *chain;
  return root;
}

void Balancer::State::RunCycle(Request req) {
  const auto start = Clock::now();
  std::string where = "handshake";
  int layer = -1;
  bool groups_used = false, summed = false;
  LoadMatrix load(cfg.num_layers, cfg.num_experts);
  try {
    // Commits queued on the engine's stream must have landed before any peer
    // reads these weights for the next transfers (they stage after the
    // handshake, which waits for this rank).
    SetOp("waiting for the last cycle's commits to land");
    for (auto& x : executors) x->WaitForCommits(WaitDeadline());
    std::vector<RankState> states = Handshake(req);
    {
      std::lock_guard<std::mutex> lock(mu);
      live = CycleReport{};
      live.cycle = req.cycle;
      live.trigger_step = req.trigger_step;
      live_start = Clock::now();
      ++metrics.cycles_started;
      last_commit_step = -1;
    }
    where = "handshake";
    Resolve(states);
    bool rebuild = false;
    for (const RankState& s : states) rebuild |= s.failed != 0 || s.label != label;
    if (rebuild) {
      where = "rebuild of the groups";
      groups_used = true;
      SetOp(fmt::format("the rebuild of the groups (cycle {})", req.cycle));
      const auto t = Clock::now();
      Connect("c" + std::to_string(req.cycle), WaitDeadline());
      failed_since_rebuild = false;
      std::lock_guard<std::mutex> lock(mu);
      live.rebuilt = true;
      ++metrics.rebuilds;
      spdlog::info("eplb: rank {}: groups rebuilt for cycle {} in {:.3f} s", me, req.cycle,
                   SecondsSince(t));
    }
    where = "load sum";
    groups_used = true;
    SetOp(fmt::format("the load sum of cycle {}", req.cycle));
    control->AllReduceSum(std::span<int64_t>(req.loads), WaitDeadline());
    for (size_t i = 0; i < req.loads.size(); ++i) load.values[i] = static_cast<double>(req.loads[i]);
    summed = true;

    where = "policy";
    const auto policy_start = Clock::now();
    Placement cur;
    {
      std::lock_guard<std::mutex> lock(mu);
      cur = current;
    }
    PolicyInput in{&load, cfg.num_slots, cfg.num_groups, cfg.num_nodes, world, &cur, {}};
    in.run_layers = policy_threads->runner();
    Placement next = ComputePlacement(*policy, in);
    std::vector<int> changed;
    for (int l = 0; l < cfg.num_layers; ++l)
      if (!std::equal(cur.layer_phy2log(l).begin(), cur.layer_phy2log(l).end(),
                      next.layer_phy2log(l).begin()))
        changed.push_back(l);
    {
      std::lock_guard<std::mutex> lock(mu);
      live.policy_seconds = SecondsSince(policy_start);
      live.balancedness_before = ComputeBalancedness(load, cur).mean;
      live.balancedness_after = ComputeBalancedness(load, next).mean;
      live.layers_changed = static_cast<int>(changed.size());
      metrics.balancedness = live.balancedness_before;
    }

    for (size_t i = 0; i < changed.size(); ++i) {
      layer = changed[i];
      where = "migration";
      if (async()) {
        MigrateLayerAsync(static_cast<int>(i % executors.size()), layer, cur, next,
                          i + 1 == changed.size());
      } else {
        MigrateLayerSync(layer, cur, next);
      }
    }
    layer = -1;
    if (async()) {
      if (changed.empty()) {
        where = "end-of-cycle agreement";
        EndRound();
      }
      std::lock_guard<std::mutex> lock(mu);
      bg_op.clear();
    } else {
      std::lock_guard<std::mutex> lock(mu);
      Publish();
      bg_op.clear();
      FinishCycleLocked(step);
    }
  } catch (const Stopped&) {
    throw;
  } catch (const std::exception& e) {
    if (groups_used) failed_since_rebuild = true;
    int blamed = -1;
    if (auto* err = dynamic_cast<const Error*>(&e)) blamed = err->peer();
    std::string chain;
    if (groups_used) blamed = FollowBlame(req.cycle, blamed, &chain);
    // Commits already agreed still happen (every rank promised them); wait
    // for them so the next cycle starts from a settled placement.
    if (async()) {
      SetOp("the commits agreed before the failure");
      try {
        WaitFor([&] {
          return std::all_of(scheduled.begin(), scheduled.end(),
                             [](const Staged& s) { return s.step < 0; });
        });
      } catch (const Stopped&) {
        throw;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    const bool started = live.cycle == req.cycle;
    if (!started) {
      live = CycleReport{};
      live.cycle = req.cycle;
      live.trigger_step = req.trigger_step;
    }
    live.ok = false;
    live.error = e.what();
    live.blamed_rank = blamed;
    live.end_step = step;
    live.seconds = SecondsSince(started ? live_start : start);
    if (!started) ++metrics.cycles_started;
    ++metrics.cycles_failed;
    if (summed) metrics.balancedness = ComputeBalancedness(load, current).mean;
    metrics.last_cycle = live;
    metrics.last_error = e.what();
    if (!async()) Publish();
    pending_reports.push_back(live);
    cycle_active = false;
    phase = Phase::kIdle;
    end_step = -1;
    floor_step = -1;
    bg_op.clear();
    const std::string at = layer >= 0 ? fmt::format(" of MoE layer {}", layer) : std::string();
    std::string kept = "no layer was touched";
    if (live.layers_changed > 0)
      kept = fmt::format("{} of {} changed layers were committed on every rank, the others keep their "
                         "placement{}",
                         live.layers_committed, live.layers_changed,
                         doubt ? fmt::format(" (MoE layer {} is staged in doubt until the next "
                                             "handshake)",
                                             doubt->staged.plan.layer)
                               : "");
    spdlog::error(
        "eplb: rank {}: rebalance cycle {} abandoned in the {}{}{}: {}. {}. Serving continues; the "
        "next cycle starts fresh.",
        me, req.cycle, where, at,
        blamed >= 0 ? fmt::format(" (rank {} is to blame{})", blamed, chain) : "", e.what(), kept);
    cv.notify_all();
  }
}

// --- public face ----------------------------------------------------------------

Balancer::Balancer(BalancerLinks links, std::vector<LayerWeights> weights,
                   const BalancerConfig& config, Placement initial)
    : s_(std::make_unique<State>(std::move(links), std::move(weights), config, std::move(initial))) {}

Balancer::~Balancer() = default;

void Balancer::RecordLoad(int layer, std::span<const int64_t> counts) { s_->window.Add(layer, counts); }

void Balancer::Step(void* stream) { s_->StepEngine(stream); }

LoadMatrix Balancer::window_load() const {
  LoadMatrix m(s_->cfg.num_layers, s_->cfg.num_experts);
  auto sum = s_->window.sum();
  for (size_t i = 0; i < sum.size(); ++i) m.values[i] = static_cast<double>(sum[i]);
  return m;
}

#if EPLB_HAVE_CUDA
void Balancer::RecordTopK(int layer, const TopkIds& topk, void* stream, int32_t* physical_ids) {
  if (!s_->device_load)
    throw InvalidArgument("RecordTopK: the balancer has no CUDA device (BalancerConfig::device)");
  s_->device_load->Record(layer, topk, stream, physical_ids);
}

DeviceExpertMap Balancer::device_map(int layer) const {
  if (!s_->device_load)
    throw InvalidArgument("device_map: the balancer has no CUDA device (BalancerConfig::device)");
  if (layer < 0 || layer >= s_->cfg.num_layers)
    throw InvalidArgument("device_map: layer " + std::to_string(layer) + " out of range");
  return s_->device_load->map(layer);
}
#endif

std::shared_ptr<const Placement> Balancer::placement() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->published;
}

int64_t Balancer::step() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->step;
}

bool Balancer::idle() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return !s_->cycle_active;
}

BalancerMetrics Balancer::metrics() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->MetricsLocked();
}

void Balancer::set_on_commit(std::function<void(const CommitEvent&)> f) { s_->on_commit = std::move(f); }
void Balancer::set_on_cycle(std::function<void(const CycleReport&)> f) { s_->on_cycle = std::move(f); }

const BalancerConfig& Balancer::config() const { return s_->cfg; }
int Balancer::rank() const { return s_->me; }
int Balancer::world_size() const { return s_->world; }

}  // namespace eplb
