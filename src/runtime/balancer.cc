// The online balancer: construction, connection of its groups, and the
// public face (include/eplb/balancer.h; the state is in balancer_state.h).
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

const char* BalancerModeName(BalancerMode mode) {
  return mode == BalancerMode::kAsync ? "async" : "sync";
}

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
  if (cfg.connect_timeout.count() <= 0) fail("connect_timeout must be positive");
  if (cfg.rebuild_timeout.count() < 0) fail("rebuild_timeout must be positive (or 0: derived from deadline)");
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
    device_load = std::make_unique<runtime::DeviceLoad>(cfg.device, current, DeadlineAfter(cfg.connect_timeout));
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
  Connect("init", DeadlineAfter(cfg.connect_timeout), cfg.connect_timeout);
  if (metrics.communicator.empty()) metrics.communicator = std::string(comm->name());
  spdlog::info("eplb: rank {} balancer ready: {} mode, {} layers x {} experts -> {} slots on {} ranks, "
               "window {} steps, first rebalance at step {}, then every {} steps, deadline {} ms, "
               "rebuild {} ms",
               me, metrics.mode, cfg.num_layers, cfg.num_experts, cfg.num_slots, world,
               cfg.window_steps, first_trigger, cfg.step_interval, cfg.deadline.count(),
               RebuildBudget().count());
  if (async()) bg = std::thread([this] { Loop(); });
}

Balancer::State::~State() {
  {
    util::MutexLock lock(&mu);
    stop = true;
  }
  cv.NotifyAll();
  if (bg.joinable()) bg.join();
}

void Balancer::State::Connect(const std::string& new_label, Deadline groups_by,
                              std::chrono::milliseconds register_budget) {
  executors.clear();
  comm.reset();
  control.reset();
  label = new_label;
  control = links.make_control_group(cfg.name + "/ctl/" + new_label, groups_by);
  comm = links.make_communicator(cfg.name + "/comm/" + new_label, groups_by);
  if (async() && IsNcclFamily(comm->name()))
    throw InvalidArgument("balancer: the " + std::string(comm->name()) +
                          " communicator cannot be used in async mode");
  // One executor per staging buffer: the cycle thread stages into one while
  // the engine thread commits out of the other, and two executors share no
  // state (one executor's buffers share its copier and bookkeeping).
  MigrationOptions mo;
  mo.ranks_per_node = cfg.ranks_per_node;
  mo.staging_layers = 1;
  mo.copy_timeout = cfg.deadline;
  size_t count;
  {
    util::MutexLock lock(&mu);
    committers.clear();
    count = scheduled.size();
  }
  const Deadline register_by = DeadlineAfter(register_budget);
  for (size_t x = 0; x < count; ++x)
    executors.push_back(std::make_unique<MigrationExecutor>(*comm, *control, weights, spr,
                                                            links.make_copier(), mo, register_by));
  util::MutexLock lock(&mu);
  for (auto& e : executors) committers.push_back(e.get());
}

void Balancer::State::Publish() { published = std::make_shared<const Placement>(current); }

void Balancer::State::SetOp(std::string op, std::chrono::milliseconds budget) {
  util::MutexLock lock(&mu);
  bg_op = std::move(op);
  bg_op_since = Clock::now();
  bg_op_budget = budget.count() > 0 ? budget : cfg.deadline;
  bg_op_warned = false;
}

// --- public face ----------------------------------------------------------------

Balancer::Balancer(BalancerLinks links, std::vector<LayerWeights> weights,
                   const BalancerConfig& config, Placement initial)
    : s_(std::make_unique<State>(std::move(links), std::move(weights), config, std::move(initial))) {}

Balancer::~Balancer() = default;

// The engine-thread entry points (balancer.h: RecordLoad, RecordTopK, Step,
// window_load, device_map and the callbacks' setters are the engine's).
void Balancer::RecordLoad(int layer, std::span<const int64_t> counts) {
  s_->engine_role.Assume();
  s_->window.Add(layer, counts);
}

void Balancer::Step(void* stream) {
  s_->engine_role.Assume();
  s_->StepEngine(stream);
}

LoadMatrix Balancer::window_load() const {
  s_->engine_role.Assume();
  LoadMatrix m(s_->cfg.num_layers, s_->cfg.num_experts);
  auto sum = s_->window.sum();
  for (size_t i = 0; i < sum.size(); ++i) m.values[i] = static_cast<double>(sum[i]);
  return m;
}

#if EPLB_HAVE_CUDA
void Balancer::RecordTopK(int layer, const TopkIds& topk, void* stream, int32_t* physical_ids) {
  s_->engine_role.Assume();
  if (!s_->device_load)
    throw InvalidArgument("RecordTopK: the balancer has no CUDA device (BalancerConfig::device)");
  s_->device_load->Record(layer, topk, stream, physical_ids);
}

DeviceExpertMap Balancer::device_map(int layer) const {
  s_->engine_role.Assume();
  if (!s_->device_load)
    throw InvalidArgument("device_map: the balancer has no CUDA device (BalancerConfig::device)");
  if (layer < 0 || layer >= s_->cfg.num_layers)
    throw InvalidArgument("device_map: layer " + std::to_string(layer) + " out of range");
  return s_->device_load->map(layer);
}
#else
void Balancer::RecordTopK(int, const TopkIds&, void*, int32_t*) {
  throw InvalidArgument("RecordTopK: eplb was built without CUDA");
}

DeviceExpertMap Balancer::device_map(int) const {
  throw InvalidArgument("device_map: eplb was built without CUDA");
}
#endif

std::shared_ptr<const Placement> Balancer::placement() const {
  util::MutexLock lock(&s_->mu);
  return s_->published;
}

int64_t Balancer::step() const {
  util::MutexLock lock(&s_->mu);
  return s_->step;
}

bool Balancer::idle() const {
  util::MutexLock lock(&s_->mu);
  return !s_->cycle_active;
}

BalancerMetrics Balancer::metrics() const {
  util::MutexLock lock(&s_->mu);
  return s_->MetricsLocked();
}

void Balancer::set_on_commit(std::function<void(const CommitEvent&)> f) {
  s_->engine_role.Assume();
  s_->on_commit = std::move(f);
}
void Balancer::set_on_cycle(std::function<void(const CycleReport&)> f) {
  s_->engine_role.Assume();
  s_->on_cycle = std::move(f);
}

const BalancerConfig& Balancer::config() const { return s_->cfg; }
int Balancer::rank() const { return s_->me; }
int Balancer::world_size() const { return s_->world; }

}  // namespace eplb
