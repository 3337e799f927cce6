// eplb demo: one rank -- weights with fingerprints, the simulated engine
// under the online Balancer, the checks, and (rank 0) the report.
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/command.h"
#include "eplb/elastic.h"
#include "eplb/membership.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/policy.h"
#include "eplb/selection.h"
#include "demo/synthetic_load.h"
#include "io/files.h"
#include "io/process.h"
#include "demo/fingerprint.h"
#include "cuda/runtime.h"
#include "demo_elastic.h"
#include "demo_failure.h"
#include "demo_gpu.h"
#include "demo_hosts.h"
#include "demo_options.h"
#include "demo_report.h"

namespace eplb::cli::demo {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace


int RunRank(const DemoOptions& o, const LaunchEnv& env) {
  const int me = env.rank, capacity = env.world_size;
  // Logs go to stderr (a file per rank when the demo starts the ranks);
  // stdout carries rank 0's report.
  spdlog::set_default_logger(spdlog::stderr_color_mt("demo"));
  spdlog::set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}] [%l] %v", me));
  // A membership event (demo_elastic.h): the first members are every
  // process but the one that joins later.
  const ElasticEvent event = ElasticEvent::From(o);
  using EventKind = ElasticEvent::Kind;
  if (o.elastic() && capacity != o.Capacity())
    throw InvalidArgument(fmt::format("demo: {} processes for a run of {} (the demo's launcher starts them)", capacity,
                                      o.Capacity()));
  const int world = event.kind == EventKind::kJoin ? capacity - 1 : capacity;
  const bool joiner = event.kind == EventKind::kJoin && me == event.rank;
  const Model m = Validate(o, world);
  // Who serves: generation 0 is ranks [0, world); this rank's group rank is
  // its position (-1 while it is not a member).
  Membership members = Membership::All(world);
  int index = members.index_of(me), size = world;
  const bool talk = me == 0 && !o.json;
  Progress progress(talk && !o.no_progress && isatty(STDOUT_FILENO));
  auto store = OpenRunStore("", env);
  const auto deadline = std::chrono::milliseconds(o.deadline_ms);
  const auto connect_timeout = std::chrono::seconds(o.connect_timeout_s);
  const Deadline connect = DeadlineAfter(connect_timeout);

  // Weights: per layer three tensors (w1, w3, w2) of slots_per_rank experts.
  struct Buffer {
    uint8_t* data;
    size_t bytes;
  };
  std::vector<std::vector<Buffer>> buffers(m.layers);
  std::vector<LayerWeights> weights(m.layers);
  const Placement initial = Placement::Identity(m.layers, m.experts, m.slots, world);
  // --gpu: the weights on this rank's GPU, the step's work on its stream.
  std::unique_ptr<GpuDemo> gpu;
  if (o.gpu) {
    const int devices = std::max(1, cuda::Probe().devices);
    GpuWorkOptions work;
    work.kind = o.gpu_work;
    work.step_ms = o.step_ms;
    work.startup = connect_timeout;
    work.step = deadline + std::chrono::milliseconds(static_cast<int64_t>(o.step_ms));
    gpu = std::make_unique<GpuDemo>(env.local_rank % devices, me, m.layers, m.spr, m.tensor_bytes, initial, work);
    weights = gpu->weights();
  }
  for (int l = 0; l < m.layers && !gpu; ++l)
    for (size_t t = 0; t < m.tensor_bytes.size(); ++t) {
      const size_t bytes = (m.tensor_bytes[t] * m.spr + 4095) / 4096 * 4096;
      auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, bytes));
      if (p == nullptr) throw Error("demo", "allocate", fmt::format("{} bytes of expert weights", bytes), me);
      buffers[l].push_back({p, bytes});
      weights[l].tensors.push_back({MemoryRegion{p, bytes, MemoryKind::kHost, -1}, m.tensor_bytes[t], 0});
      if (joiner) std::memset(p, 0, bytes);  // empty slots: the change fills them
      for (int i = 0; i < m.spr && !joiner; ++i)
        runtime::FillFingerprint(p + m.tensor_bytes[t] * i, m.tensor_bytes[t], l,
                                 initial.expert_at(l, me * m.spr + i), static_cast<int>(t));
    }
  struct Free {
    std::vector<std::vector<Buffer>>& b;
    ~Free() {
      for (auto& layer : b)
        for (auto& x : layer) std::free(x.data);
    }
  } free_buffers{buffers};
  auto slot_ptr = [&](int l, int t, int local) { return buffers[l][t].data + m.tensor_bytes[t] * local; };

  // Every own slot of layer l holds the expert `p` names, every byte.
  int64_t mismatches = 0, experts_checked = 0;
  std::vector<int> all_slots(m.spr);
  std::iota(all_slots.begin(), all_slots.end(), 0);
  // `full`: every byte; otherwise (GPU only, where the checks run on the
  // engine's stream and cost it time) both ends of every tensor.
  auto verify_layer = [&](const Placement& p, int l, const char* when, bool full = true) {
    if (gpu) {
      experts_checked += gpu->CheckSlots(p, l, all_slots, full);
      return;
    }
    for (int i = 0; i < m.spr; ++i) {
      const int e = p.expert_at(l, index * m.spr + i);
      for (size_t t = 0; t < m.tensor_bytes.size(); ++t) {
        const int64_t bad = runtime::FindFingerprintMismatch(slot_ptr(l, t, i), m.tensor_bytes[t], l, e,
                                                             static_cast<int>(t));
        if (bad >= 0) {
          ++mismatches;
          spdlog::error("demo: {}: MoE layer {} slot {} should hold expert {} but byte {} of tensor {} "
                        "differs",
                        when, l, index * m.spr + i, e, bad, t);
          break;
        }
      }
      ++experts_checked;
    }
  };

  // Where every rank runs: the nodes the policy and the plan assume must be
  // the hosts, where the ranks run on several.
  // A process that joins later finds the others' hosts in the report only.
  const DemoHosts hosts = joiner ? DemoHosts{} : ExchangeHosts(*store, me, world, o.nodes, connect);
  SelectionRequest request;
  request.communicator = o.communicator;
  request.async = !o.sync;

  BalancerConfig cfg;
  cfg.num_layers = m.layers;
  cfg.num_experts = m.experts;
  cfg.num_slots = m.slots;
  cfg.num_groups = o.groups;
  cfg.num_nodes = o.nodes;
  cfg.ranks_per_node = o.nodes > 1 ? hosts.ranks_per_node : 0;  // the plan prefers senders on the node
  cfg.policy = o.policy;
  cfg.mode = o.sync ? BalancerMode::kSync : BalancerMode::kAsync;
  cfg.window_steps = o.window;
  cfg.step_interval = o.interval;
  cfg.first_rebalance_step = o.FirstRebalance();
  cfg.last_rebalance_step = o.steps;  // draining after the last step starts no new cycle
  cfg.deadline = deadline;
  cfg.connect_timeout = connect_timeout;
  cfg.staging_layers = o.staging;
  cfg.commit_lead_steps = o.lead;

  // One generation's groups: the balancer's links and the engine's step
  // group over the members (group rank = position), keys of their own after
  // a membership change, and a Balancer over them from `placement`.
  std::unique_ptr<ControlGroup> engine;
  std::unique_ptr<Balancer> balancer;
  Selection selection;
  json elastic = json::object();  // the membership event's figures (the report's "membership")
  bool changed = false, announced = false;
  int64_t step_offset = 0, cycle_offset = 0;  // where this generation's Balancer began
  json rebalances = json::array();
  std::function<void()> attach_callbacks;  // set below, once the callbacks exist
  auto serve = [&](const Placement& placement, int64_t from_step, Deadline by) {
    const int64_t gen = members.generation;
    auto gstore = gen == 0 ? store : MakePrefixStore(store, fmt::format("demo/g{}/", gen));
    BalancerLinks links = MakeBalancerLinks(gstore, index, size, request, by, gpu ? gpu->device() : -1);
    selection = links.selection;
    GlooOptions engine_opts;
    engine_opts.store = gstore;
    engine_opts.rank = index;
    engine_opts.world_size = size;
    engine_opts.name = "demo/engine";
    engine_opts.name_lost_peers = true;  // a host lost: name all its ranks
    engine = ConnectGlooControlGroup(engine_opts, by);
    BalancerConfig c = cfg;
    c.num_slots = size * m.spr;
    if (from_step > 0) {  // a new Balancer counts its steps from 0: a fresh window first
      c.first_rebalance_step = o.window;
      c.last_rebalance_step = std::max<int64_t>(1, o.steps - from_step);
    }
    balancer = std::make_unique<Balancer>(links, weights, c, placement);
    step_offset = from_step;
    cycle_offset = static_cast<int64_t>(rebalances.size());
    if (attach_callbacks) attach_callbacks();
  };
  if (!joiner) serve(initial, 0, connect);
  if (talk) {
    progress.Line(fmt::format("eplb demo: {} ranks, {} mode", world, o.sync ? "sync" : "async"));
    progress.Line(fmt::format(
        "model: {} MoE layers x {} experts -> {} slots ({} per rank), {} groups; {:.1f} KiB per expert in "
        "3 tensors; {:.1f} MB of expert weights per rank",
        m.layers, m.experts, m.slots, m.spr, o.groups, o.expert_bytes / 1024.0,
        double(m.spr) * m.layers * o.expert_bytes / 1e6));
    progress.Line(fmt::format(
        "load: {}, hot experts drift by one every {} steps; {} tokens x top-{} per rank per step",
        o.load_path.empty() ? fmt::format("synthetic Zipf({})", o.skew) : o.load_path, o.drift, o.tokens,
        o.top_k));
    progress.Line(fmt::format("rebalance: window {} steps, first at step {}, then every {} steps; "
                              "deadline {} ms; {} steps of {} ms",
                              o.window, o.FirstRebalance(), o.interval, o.deadline_ms, o.steps,
                              o.step_ms));
    progress.Line("eplb: " + DescribeSelection(selection));
    progress.Line(hosts.Describe());
    if (event.kind != EventKind::kNone)
      progress.Line(event.kind == EventKind::kJoin
                        ? fmt::format("membership: a new process (rank {}) joins at step {}", event.rank, event.at)
                        : fmt::format("membership: rank {} {} at step {}", event.rank,
                                      event.kind == EventKind::kKill ? "is killed" : "leaves", event.at));
    if (gpu)
      progress.Line(fmt::format("GPU: weights on GPU {} ({}) per rank; the step is {}", gpu->device(),
                                gpu->device_name(), gpu->work_description()));
  }

  // Time spent checking inside the balancer's callbacks: not engine time.
  Clock::duration check_time{};
  double commit_ms_in_step = 0;  // the commit copies of the current Step()
  const auto on_commit = [&](const CommitEvent& e) {
    commit_ms_in_step += e.copy_seconds * 1e3;
    const auto t = Clock::now();
    verify_layer(*balancer->placement(), e.layer, "after a commit", /*full=*/false);
    check_time += Clock::now() - t;
  };
  const auto on_cycle = [&](const CycleReport& r) {
    const auto t = Clock::now();
    auto maps = balancer->placement();
    const int64_t before = mismatches;
    for (int l = 0; l < m.layers; ++l) verify_layer(*maps, l, "after a rebalance", /*full=*/false);
    check_time += Clock::now() - t;
    // A generation's Balancer counts its cycles and steps from 0: the run's.
    const int64_t cycle = r.cycle + cycle_offset, trigger_step = r.trigger_step + step_offset;
    json j{{"cycle", cycle},
           {"trigger_step", trigger_step},
           {"end_step", r.end_step + step_offset},
           {"ok", r.ok},
           {"balancedness_before", r.balancedness_before},
           {"balancedness_after", r.balancedness_after},
           {"layers_changed", r.layers_changed},
           {"layers_committed", r.layers_committed},
           {"experts_moved", r.experts_moved},
           {"bytes_moved", r.bytes_moved},
           {"bytes_within_nodes", r.bytes_within_nodes},
           {"bytes_between_nodes", r.bytes_between_nodes},
           {"seconds", r.seconds},
           {"transfer_seconds", r.transfer_seconds},
           {"GBps", r.GBps()},
           {"commit_ms_max", r.commit_seconds_max * 1e3},
           {"verified", mismatches == before}};
    if (gpu) j["verified"] = "on the GPU, counted at the end";
    if (changed) j["generation"] = members.generation;
    if (changed && r.ok && !elastic.contains("balancedness_after_next_rebalance"))
      elastic["balancedness_after_next_rebalance"] = r.balancedness_after;
    if (!r.ok) j["error"] = r.error;
    rebalances.push_back(j);
    if (talk)
      progress.Line(r.ok ? fmt::format("rebalance {} at step {}: balancedness {:.3f} -> {:.3f} | {} experts "
                                       "({:.1f} MB) moved, {}/{} layers{} | {:.2f} s, {:.2f} GB/s | {} | "
                                       "weights {}",
                                       cycle, trigger_step, r.balancedness_before,
                                       r.balancedness_after, r.experts_moved, r.bytes_moved / 1e6,
                                       r.layers_committed, m.layers,
                                       o.nodes > 1 ? fmt::format(" | {:.1f} MB within {}, {:.1f} MB between",
                                                                 r.bytes_within_nodes / 1e6, hosts.unit(),
                                                                 r.bytes_between_nodes / 1e6)
                                                   : std::string(),
                                       r.seconds, r.GBps(),
                                       selection.name,
                                       gpu ? "checked on the GPU" : mismatches == before ? "verified" : "MISMATCH")
                         : fmt::format("rebalance {} at step {} FAILED: {}", cycle, trigger_step, r.error));
  };
  attach_callbacks = [&] {
    balancer->set_on_commit(on_commit);
    balancer->set_on_cycle(on_cycle);
  };
  if (balancer) attach_callbacks();

  SyntheticLoadOptions lo;
  lo.num_layers = m.layers;
  lo.num_experts = m.experts;
  lo.skew = o.skew;
  lo.tokens_per_step = double(o.tokens) * o.top_k;
  lo.drift_period_steps = o.drift;
  lo.seed = o.seed;
  if (m.base) lo.base = &*m.base;
  SyntheticLoad load(lo);

  std::vector<int64_t> counts(m.experts);
  std::vector<int64_t> slot_tokens(m.spr);
  std::vector<double> during, outside, calls_during, calls_outside, reduce_during, reduce_outside;
  std::vector<double> beyond_commit;  // Step() minus its commit copies, during migrations
  uint64_t checksum = 0;
  const auto start = Clock::now();
  const auto period = std::chrono::duration<double, std::milli>(o.step_ms);
  int64_t step = 0;
  bool draining = false;
  // Nothing half-written: when serving fails (a peer lost, a wait past its
  // deadline), every slot of this rank still holds what the placement in
  // force names -- a layer is switched only by a commit, whole -- checked
  // here while the error propagates.
  struct CheckOnFailure {
    std::function<void()> check;
    int exceptions = std::uncaught_exceptions();
    ~CheckOnFailure() {
      if (std::uncaught_exceptions() > exceptions) check();
    }
  } check_on_failure{[&] {
    if (!balancer) return;  // between generations: the change's own error says what holds
    try {
      const int64_t before = mismatches, checked = experts_checked;
      auto maps = balancer->placement();
      for (int l = 0; l < m.layers; ++l) verify_layer(*maps, l, "after the failure");
      if (gpu) mismatches += static_cast<int64_t>(gpu->mismatches(nullptr));
      const BalancerMetrics bm = balancer->metrics();
      const std::string text = fmt::format(
          "demo: failed at step {} ({}); every slot checked after the failure: {} slots, {} hold another "
          "expert than the placement in force names",
          step,
          bm.cycle_in_progress ? fmt::format("a migration in flight: cycle {}, {} layers committed so far",
                                             bm.cycles_started, bm.layers_committed)
                               : std::string("no migration in flight"),
          experts_checked - checked, mismatches - before);
      if (mismatches == before)
        spdlog::warn("{}", text);
      else
        spdlog::critical("{}", text);
    } catch (const std::exception& e) {
      spdlog::critical("demo: the check after the failure could not run: {}", e.what());
    }
  }};

  // The membership event (demo_elastic.h): the old generation's groups end,
  // ChangeMembership fills every slot of the new one (from surviving
  // replicas, else from the source: the fingerprints regenerated), every
  // slot is checked, and the new generation serves. False: this process
  // serves no more (it left).
  auto change_membership = [&](const MembershipChangeRequest& req, Clock::time_point since) {
    Placement in_force;
    double before_event = std::numeric_limits<double>::quiet_NaN();
    if (balancer) {
      in_force = *balancer->placement();
      before_event = balancer->metrics().balancedness;
    }
    balancer.reset();
    engine.reset();
    const LoadMatrix window = joiner ? LoadMatrix(m.layers, m.experts) : load.Expected(step);
    const MembershipChangeResult r =
        ChangeMembership(store, me, joiner ? Membership{} : members, in_force, window, req, weights,
                         FingerprintSource(), DemoChangeOptions(o, capacity, m.spr, request, connect_timeout + deadline));
    elastic = DescribeChange(event, step, r, before_event);
    if (!r.serves) {
      spdlog::info("demo: rank {} left at step {}: {}; {} experts sent", me, step, r.after.Describe(),
                   r.experts_over_wire);
      return false;
    }
    members = r.after;
    index = members.index_of(me);
    size = members.size();
    // Every slot holds what the new placement names, and every expert has a
    // slot: the maps name live members only.
    const int64_t bad_before = mismatches;
    for (int l = 0; l < m.layers; ++l) verify_layer(r.placement, l, "after the membership change");
    for (int l = 0; l < m.layers; ++l)
      for (int e = 0; e < m.experts; ++e)
        if (r.placement.replicas(l, e) < 1) {
          ++mismatches;
          spdlog::error("demo: expert {} of MoE layer {} has no slot after the membership change", e, l);
        }
    serve(r.placement, step, DeadlineAfter(connect_timeout));
    elastic["served_again_seconds"] = std::chrono::duration<double>(Clock::now() - since).count();
    elastic["verified"] = mismatches == bad_before;
    changed = true;
    spdlog::info("demo: step {}: {}: every expert served again {:.3f} s after the {}; {} experts from the source, {} "
                 "over the wire; slots checked: {}",
                 step, members.Describe(), elastic["served_again_seconds"].get<double>(), event.name(),
                 r.experts_from_source, r.experts_over_wire, mismatches == bad_before ? "ok" : "MISMATCH");
    return true;
  };
  auto launcher_time = [](const EventRecord& rec) {
    return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(rec.when_ns)));
  };
  if (joiner) {
    // Started by the launcher once the members reached the step: join them.
    const EventRecord rec = WaitEvent(*store, me, connect);
    step = rec.step;
    change_membership({{}, {}, {me}}, launcher_time(rec));
  }

  for (;;) {
    if (event.kind == EventKind::kKill && me == event.rank && step >= event.at && !announced) {
      AnnounceReached(*store, step);  // the launcher kills this process now
      announced = true;
    }
    bool migrating = !balancer->idle();
    const auto t0 = Clock::now();
    const auto checks_before = check_time;
    auto maps = balancer->placement();
    if (gpu) gpu->LaunchWork();
    int64_t routed = 0;
    for (int l = 0; l < m.layers; ++l) {
      load.Counts(step, me, l, counts);
      balancer->RecordLoad(l, counts);
      // Route: expert e's tokens spread over its replicas as an engine's
      // router would; this rank computes for its own slots (the tokens of
      // every rank land there in a real engine; this rank's share stands in).
      std::fill(slot_tokens.begin(), slot_tokens.end(), 0);
      for (int e = 0; e < m.experts; ++e) {
        const int n = maps->replicas(l, e);
        const int32_t* slots = maps->log2phy.data() + (static_cast<size_t>(l) * m.experts + e) * maps->max_replicas;
        for (int k = 0; k < n; ++k) {
          const int slot = slots[k];
          if (slot / m.spr != index) continue;
          slot_tokens[slot % m.spr] += counts[e] / n + (k < counts[e] % n ? 1 : 0);
        }
      }
      // Compute is the GPU's part: --step-ms of sleep. Here one layer a step
      // (in turn) checks that every routed slot holds the expert the maps
      // name, reading its first bytes.
      for (int i = 0; i < m.spr; ++i) routed += slot_tokens[i];
      if (l != step % m.layers) continue;
      if (gpu) {
        std::vector<int> used;
        for (int i = 0; i < m.spr; ++i)
          if (slot_tokens[i] > 0) used.push_back(i);
        gpu->CheckSlots(*maps, l, used, /*full=*/false);
        continue;
      }
      for (int i = 0; i < m.spr; ++i) {
        if (slot_tokens[i] == 0) continue;
        const int e = maps->expert_at(l, index * m.spr + i);
        uint64_t first;
        std::memcpy(&first, slot_ptr(l, 0, i), 8);
        checksum += first;
        if (first != runtime::FingerprintWord(l, e, 0, 0)) {
          ++mismatches;
          spdlog::error("demo: step {}: routed to slot {} of MoE layer {} for expert {}, which it does not hold",
                        step, index * m.spr + i, l, e);
        }
      }
    }
    // The dispatch all-to-all of an EP engine keeps ranks in step; here an
    // all-reduce of (tokens, busy) does, and tells every rank when all are done.
    // (tokens, busy, ranks with a migration in flight)
    std::array<int64_t, 3> sync{routed, (!balancer->idle() || step + 1 < o.steps) ? 1 : 0,
                                balancer->idle() ? 0 : 1};
    const auto a0 = Clock::now();
    // The run's deadline, from entering it; but a step whose Step() already
    // waited long (a late commit agreement) gets what is left of deadline +
    // 0.5 s from its start, so a rank that stalls meanwhile is still named
    // within deadline + 1 s.
    const Deadline step_by =
        std::min(a0 + deadline, std::max(t0 + deadline + 500ms, a0 + 100ms));
    bool peer_lost = false;
    try {
      engine->AllReduceSum(std::span<int64_t>(sync), step_by);
    } catch (const Error& e) {
      if (event.kind != EventKind::kKill || changed) FailEngineStep(*store, me, size, step, e, deadline);
      // The control plane (the launcher) says which rank it stopped.
      spdlog::warn("demo: step {}: the engine's step failed: {}", step, e.what());
      peer_lost = true;
    }
    if (peer_lost) {
      const EventRecord rec = WaitEvent(*store, me, DeadlineAfter(deadline + 5s));
      spdlog::info("demo: step {}: the launcher killed rank {} at step {}: changing the membership", step,
                   event.rank, rec.step);
      change_membership({{event.rank}, {}, {}}, launcher_time(rec));
      continue;  // the failed step again, in the new generation
    }
    // Leave and join: every rank at the first step past the event's with no
    // migration in flight anywhere, before Step() could start one.
    if (!changed && (event.kind == EventKind::kLeave || event.kind == EventKind::kJoin) && step >= event.at &&
        sync[2] == 0) {
      const auto now = Clock::now();
      if (event.kind == EventKind::kJoin && me == 0) AnnounceReached(*store, step);  // the launcher starts it
      MembershipChangeRequest req;
      (event.kind == EventKind::kLeave ? req.leaving : req.joining).push_back(event.rank);
      if (!change_membership(req, now)) return 0;  // this rank left
      continue;
    }
    const int64_t started = balancer->metrics().cycles_started;
    const auto c0 = Clock::now();
    balancer->Step(gpu ? gpu->stream() : nullptr);
    const auto c1 = Clock::now();
    // The engine waits for its GPU work (and the commits queued behind it).
    if (gpu) gpu->Synchronize();
    const auto g1 = Clock::now();
    // Sync mode migrates inside the Step() that starts a cycle.
    if (balancer->metrics().cycles_started != started) migrating = true;
    (migrating ? reduce_during : reduce_outside).push_back(Ms(c0 - a0));
    const double busy = Ms(g1 - t0 - (check_time - checks_before));
    const double call = Ms(c1 - c0 - (check_time - checks_before));
    (migrating ? during : outside).push_back(busy);
    (migrating ? calls_during : calls_outside).push_back(call);
    if (migrating) beyond_commit.push_back(std::max(0.0, call - commit_ms_in_step));
    commit_ms_in_step = 0;
    ++step;
    if (sync[1] == 0) break;
    if (step >= o.steps && !draining) draining = true;
    if (step > int64_t(o.steps) + 100000) throw Error("demo", "drain", "the last rebalance never ended", me);
    if (progress.on()) {
      const BalancerMetrics bm = balancer->metrics();
      progress.Show(fmt::format("step {}/{} | {} | balancedness {} | next rebalance in {} steps | "
                                "{} rebalances",
                                step, o.steps, bm.cycle_in_progress ? "migrating" : "serving",
                                std::isnan(bm.balancedness) ? std::string("n/a")
                                                            : fmt::format("{:.3f}", bm.balancedness),
                                bm.steps_to_next_rebalance, bm.cycles_completed));
    }
    if (Clock::now() - start > std::chrono::seconds(o.timeout_s))
      throw Error("demo", "run", fmt::format("still running after {} s (--timeout)", o.timeout_s), me);
    // The GPU's forward pass: the engine's CPU thread waits for it.
    if (!gpu) std::this_thread::sleep_for(period);
  }
  const double run_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto verify_start = Clock::now();
  {
    auto maps = balancer->placement();
    for (int l = 0; l < m.layers; ++l) verify_layer(*maps, l, "at the end");
  }
  if (gpu) {
    int64_t first_bad = -1;
    mismatches += static_cast<int64_t>(gpu->mismatches(&first_bad));
    if (first_bad >= 0)
      spdlog::error("demo: the GPU checks found {} wrong words; the first in MoE layer {} slot {}", mismatches,
                    first_bad >> 16, index * m.spr + (first_bad & 0xffff));
  }
  const BalancerMetrics bm = balancer->metrics();

  // Every rank's figures to rank 0, through the store.
  json mine{{"rank", me},
            {"mismatches", mismatches},
            {"experts_checked", experts_checked},
            {"steps", step},
            {"during", during},
            {"outside", outside},
            {"calls_during", calls_during},
            {"calls_outside", calls_outside},
            {"beyond_commit", beyond_commit},
            {"reduce_during", reduce_during},
            {"reduce_outside", reduce_outside},
            {"commit_wait_ms_max", bm.commit_wait_seconds_max * 1e3},
            {"cycles_completed", bm.cycles_completed},
            {"cycles_failed", bm.cycles_failed},
            {"commit_waits", bm.commit_waits},
            {"checksum", checksum},
            {"served_again_seconds", elastic.value("served_again_seconds", 0.0)}};
  double commit_ms_max = 0;
  for (const auto& r : rebalances) commit_ms_max = std::max(commit_ms_max, r["commit_ms_max"].get<double>());
  mine["commit_ms_max"] = commit_ms_max;
  store->SetString("demo/result/" + std::to_string(me), mine.dump());
  if (me != 0) return mismatches == 0 ? 0 : 3;

  // The others verify as much as this rank did before they publish.
  RunReport report;
  report.members = members;
  report.rebalances = rebalances;
  report.elastic = elastic;
  report.event_kind = event.kind;
  report.changed = changed;
  report.selection = selection;
  report.hosts = &hosts;
  report.steps = step;
  report.run_seconds = run_seconds;
  report.commit_ms_max = commit_ms_max;
  if (gpu) report.gpu = RunReport::Gpu{gpu->device_name(), gpu->work_description()};
  return ReportRun(o, m, *store, report, DeadlineAfter(deadline) + 2 * (Clock::now() - verify_start), progress);
}

}  // namespace eplb::cli::demo
