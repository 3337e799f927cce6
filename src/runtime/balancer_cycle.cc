// The balancer's cycle: the loop of the background thread, the handshake
// (which cycle every rank runs), settling a layer left in doubt, and the run
// of one cycle (load sum, policy, layers staged and committed).
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

void Balancer::State::Loop() {
  cycle_role.Assume();  // the background thread: async mode's cycle thread
  for (;;) {
    Request req;
    {
      util::MutexLock lock(&mu);
      while (!stop && !request) cv.Wait(&mu);
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

// The handshake (the store round and its rule: handshake_round.h). A rank
// still waiting when the next trigger comes joins that cycle too; it gives
// up `deadline` after its first join.
std::vector<RankState> Balancer::State::Handshake(Request& req) {
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
    util::MutexLock lock(&mu);
    mine.versions = versions;
    for (int l = 0; l < cfg.num_layers; ++l) mine.hashes.push_back(HashLayer(current.layer_phy2log(l)));
  }
  HandshakeRound round(*links.store, cfg.name, me, world, cfg.num_layers);
  auto join = [&](int64_t cycle) {
    SetOp(fmt::format("the handshake of cycle {}", cycle));
    round.Join(cycle, mine);
  };
  join(req.cycle);
  const Deadline deadline = WaitDeadline();
  const Clock::time_point since = Clock::now();
  for (;;) {
    if (auto complete = round.Poll(std::min(deadline, DeadlineAfter(1ms)))) {
      util::MutexLock lock(&mu);
      if (complete->cycle != req.cycle)
        spdlog::info("eplb: rank {}: every rank joined cycle {}: running it", me, complete->cycle);
      // A trigger that came meanwhile is dropped, on every rank alike.
      if (request) {
        req = std::move(*request);
        request.reset();
      }
      metrics.cycles_skipped += static_cast<int64_t>(round.joins()) - 1;
      req.cycle = complete->cycle;
      phase = Phase::kRunning;
      return std::move(complete->states);
    }
    const std::vector<int> missing = round.MissingFromLast();
    std::optional<Request> next;
    {
      util::MutexLock lock(&mu);
      if (stop) throw Stopped{};
      if (request) {
        next = std::move(*request);
        request.reset();
      }
    }
    if (next) {
      spdlog::log(round.joins() == 1 ? spdlog::level::warn : spdlog::level::debug,
                  "eplb: rank {}: rank{} {} did not join cycle {} yet; joining cycle {} as well", me,
                  missing.size() > 1 ? "s" : "", RankList(missing), round.last_cycle(), next->cycle);
      req = std::move(*next);
      join(req.cycle);
      continue;
    }
    if (Expired(deadline))
      throw TimeoutError("balancer", fmt::format("handshake of cycle {}", round.last_cycle()),
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
  const DoubtOutcome outcome = ResolveHandshake(states, me, cfg.num_layers);
  if (!doubt) return;
  const int l = doubt->staged.plan.layer;
  if (outcome != DoubtOutcome::kRollForward) {
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
      util::MutexLock lock(&mu);
      d.staged.step = step + 1;
      scheduled[d.executor] = std::move(d.staged);
    }
    SetOp(fmt::format("the roll-forward commit of MoE layer {}", l));
    WaitFor([&]() REQUIRES(mu) { return scheduled[d.executor].step < 0; });
  } else {
    engine_role.Assume();  // sync mode: the cycle runs on the engine thread
    CommitNow(d.executor, d.staged, /*publish=*/true);
  }
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
      util::MutexLock lock(&mu);
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
      util::MutexLock lock(&mu);
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
      util::MutexLock lock(&mu);
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
      util::MutexLock lock(&mu);
      live.policy_seconds = SecondsSince(policy_start);
      live.balancedness_before = ComputeBalancedness(load, cur).mean;
      live.balancedness_after = ComputeBalancedness(load, next).mean;
      live.layers_changed = static_cast<int>(changed.size());
      metrics.balancedness = live.balancedness_before;
    }
    // The migration starts here (what an operator, or a fault test, waits for).
    spdlog::info("eplb: rank {}: cycle {} (step {}): {} of {} layers change; migrating", me, req.cycle,
                 req.trigger_step, changed.size(), cfg.num_layers);

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
      util::MutexLock lock(&mu);
      bg_op.clear();
    } else {
      util::MutexLock lock(&mu);
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
        WaitFor([&]() REQUIRES(mu) {
          return std::all_of(scheduled.begin(), scheduled.end(),
                             [](const Staged& s) { return s.step < 0; });
        });
      } catch (const Stopped&) {
        throw;
      }
    }
    util::MutexLock lock(&mu);
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
    cv.NotifyAll();
  }
}

}  // namespace eplb
