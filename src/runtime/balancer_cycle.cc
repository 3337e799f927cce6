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
      // Idle until the engine asks for a cycle; the destructor's stop wakes it.
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
// up `deadline` after its first join -- or, right after a cycle that failed
// here, once its peers have had the time to leave that cycle too: a rank
// that fails fast (its rebuild refused at once) must not give up on peers
// still waiting out their deadline in the same cycle, or the ranks stay out
// of phase, each giving up before the others join.
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
  // The peers of a cycle that failed here leave it by the failure + the
  // longest wait they may be in + the blame budget (FollowBlame).
  std::chrono::milliseconds budget = cfg.deadline;
  if (last_failure) {
    const auto peers_out = *last_failure + last_failure_lag + runtime::BlameBudget(cfg.deadline);
    budget = std::max(budget, std::chrono::ceil<std::chrono::milliseconds>(peers_out - Clock::now()));
    last_failure.reset();
  }
  HandshakeRound round(*links.store, cfg.name, me, world, cfg.num_layers);
  handshake_joined.clear();
  handshake_rebuild = false;
  auto join = [&](int64_t cycle) REQUIRES(cycle_role) {
    SetOp(fmt::format("the handshake of cycle {}", cycle), budget);
    handshake_joined.push_back(cycle);
    round.Join(cycle, mine);
  };
  join(req.cycle);
  const Deadline deadline = DeadlineAfter(budget);
  const Clock::time_point since = Clock::now();
  for (;;) {
    if (auto complete = round.Poll(std::min(deadline, DeadlineAfter(1ms)))) {
      handshake_rebuild = false;
      for (const RankState& s : complete->states) handshake_rebuild |= s.failed != 0 || s.label != label;
      // Every rank joined it, but a peer that gave up on it before this rank
      // joined (this rank was stalled) noted whom it blamed: it does not run
      // this cycle, so neither can this rank.
      const auto gave_up = runtime::NotesNow(*links.store, BlamePrefix(complete->cycle), me, world);
      if (!gave_up.empty()) {
        req.cycle = complete->cycle;
        std::vector<int> ranks, blamed;
        for (const auto& [r, who] : gave_up) {
          ranks.push_back(r);
          blamed.push_back(who);
        }
        throw Error("balancer", fmt::format("handshake of cycle {}", complete->cycle),
                    fmt::format("rank{} {} gave up on this cycle before this rank started it (blaming "
                                "rank{} {})",
                                ranks.size() > 1 ? "s" : "", RankList(ranks),
                                blamed.size() > 1 ? "s" : "", RankList(blamed)),
                    me, ranks[0]);
      }
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
    if (Expired(deadline)) {
      // The ranks that joined none of the cycles are the ones to blame; a
      // rank that joined an earlier one is only a trigger behind.
      const std::vector<int> gone = round.MissingFromAll();
      const std::vector<int>& named = gone.empty() ? missing : gone;
      throw TimeoutError("balancer", fmt::format("handshake of cycle {}", round.last_cycle()),
                         fmt::format("rank{} {} did not join {} within {:.1f} s (stalled, dead or "
                                     "still busy with an earlier cycle)",
                                     named.size() > 1 ? "s" : "", RankList(named),
                                     round.joins() > 1 ? "any of the cycles joined" : "it",
                                     SecondsSince(since)),
                         me, named.size() == 1 ? named[0] : -1);
    }
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
    SetOp(fmt::format("the roll-forward commit of MoE layer {}", l), EngineBudget());
    WaitForScheduledCommits(fmt::format("roll-forward commit of MoE layer {}", l), d.executor);
  } else {
    engine_role.Assume();  // sync mode: the cycle runs on the engine thread
    CommitNow(d.executor, d.staged, /*publish=*/true);
  }
}

void Balancer::State::WaitForScheduledCommits(const std::string& why, int executor) {
  auto pending = [&](size_t x) REQUIRES(mu) {
    return (executor < 0 || static_cast<int>(x) == executor) && scheduled[x].step >= 0;
  };
  auto none = [&]() REQUIRES(mu) {
    for (size_t x = 0; x < scheduled.size(); ++x)
      if (pending(x)) return false;
    return true;
  };
  const auto since = Clock::now();
  if (WaitFor(none, DeadlineAfter(EngineBudget()))) return;
  util::MutexLock lock(&mu);
  const Staged* first = nullptr;
  for (size_t x = 0; x < scheduled.size(); ++x)
    if (pending(x) && (first == nullptr || scheduled[x].step < first->step)) first = &scheduled[x];
  if (first == nullptr) return;  // committed just now
  throw Error("balancer", why,
              fmt::format("this rank's engine is at step {} and did not reach step {}, where MoE layer "
                          "{} is to be committed (as every rank agreed), within {:.1f} s: its thread is "
                          "blocked (on a stalled peer in its own collectives?) or stopped; it commits "
                          "the layer when it gets there",
                          step, first->step, first->plan.layer, SecondsSince(since)),
              me);
}

void Balancer::State::RunCycle(Request req) {
  const auto start = Clock::now();
  std::string where = "wait for the engine's earlier commits";
  int layer = -1;
  bool groups_used = false, summed = false, rebuilt = false, engine_stuck = false;
  LoadMatrix load(cfg.num_layers, cfg.num_experts);
  try {
    // A failed cycle's agreed commits may still wait for their step on the
    // engine: they must be made before this rank states its versions at the
    // handshake, and before a rebuild replaces the executors they use.
    SetOp("waiting for the commits of an earlier cycle", EngineBudget());
    try {
      WaitForScheduledCommits(fmt::format("start of cycle {}", req.cycle));
    } catch (const Error&) {
      engine_stuck = true;
      throw;
    }
    // Commits queued on the engine's stream must have landed before any peer
    // reads these weights for the next transfers (they stage after the
    // handshake, which waits for this rank).
    SetOp("waiting for the last cycle's commits to land");
    for (auto& x : executors) x->WaitForCommits(WaitDeadline());
    where = "handshake";
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
    Resolve(states);
    if (handshake_rebuild) {
      where = "rebuild of the groups";
      groups_used = rebuilt = true;
      SetOp(fmt::format("the rebuild of the groups (cycle {})", req.cycle), RebuildBudget() + cfg.deadline);
      const auto t = Clock::now();
      // Connecting has its budget, registering the regions its own.
      Connect("c" + std::to_string(req.cycle), DeadlineAfter(RebuildBudget()), cfg.deadline);
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
    AbandonCycle(req, start, e, where, layer, groups_used, summed, rebuilt, engine_stuck, load);
  }
}

// A cycle that failed on this rank: the blame followed to the rank that
// stalled or died, the failure logged and counted at once, then (async) the
// commits every rank agreed on before the failure, made by the engine at
// their steps, waited for (at most EngineBudget()); then the report.
void Balancer::State::AbandonCycle(const Request& req, Clock::time_point start, const std::exception& e,
                                   const std::string& where, int layer, bool groups_used, bool summed,
                                   bool rebuilt, bool engine_stuck, const LoadMatrix& load) {
  if (groups_used) failed_since_rebuild = true;
  int direct = -1;
  if (auto* err = dynamic_cast<const Error*>(&e)) direct = err->peer();
  SetOp(fmt::format("following the blame of cycle {}", req.cycle), runtime::BlameBudget(cfg.deadline));
  // A handshake given up: the other cycles it joined are given up too.
  if (where == "handshake")
    for (int64_t c : handshake_joined)
      if (c != req.cycle) runtime::NoteBlame(*links.store, BlamePrefix(c), me, world, direct);
  handshake_joined.clear();
  const runtime::BlameVerdict verdict = FollowBlame(req.cycle, direct);
  std::string error = e.what();
  const std::string blame = verdict.Describe(me, direct);
  if (!blame.empty()) error = blame + "; here: " + error;
  const std::string at = layer >= 0 ? fmt::format(" of MoE layer {}", layer) : std::string();
  int agreed = 0;
  {
    util::MutexLock lock(&mu);
    const bool started = live.cycle == req.cycle;
    if (!started) {
      live = CycleReport{};
      live.cycle = req.cycle;
      live.trigger_step = req.trigger_step;
      ++metrics.cycles_started;
    }
    live.ok = false;
    live.error = error;
    live.blamed_rank = verdict.rank;
    live.end_step = step;
    live.seconds = SecondsSince(started ? live_start : start);
    ++metrics.cycles_failed;
    if (summed) metrics.balancedness = ComputeBalancedness(load, current).mean;
    metrics.last_cycle = live;
    metrics.last_error = error;
    // Commits agreed before the failure still happen at their steps (every
    // rank promised them), but none of them ends this cycle any more.
    for (Staged& st : scheduled) {
      if (st.step < 0) continue;
      st.ends_cycle = false;
      ++agreed;
    }
    end_step = -1;
    floor_step = -1;
    std::string kept = "no layer was touched";
    if (live.layers_changed > 0)
      kept = fmt::format("{} of {} changed layers were committed on every rank{}, the others keep "
                         "their placement{}",
                         live.layers_committed, live.layers_changed,
                         agreed > 0 ? fmt::format(" and {} more are agreed, to be committed at their steps",
                                                  agreed)
                                    : "",
                         doubt ? fmt::format(" (MoE layer {} is staged in doubt until the next "
                                             "handshake)",
                                             doubt->staged.plan.layer)
                               : "");
    spdlog::error(
        "eplb: rank {}: rebalance cycle {} abandoned in the {}{}{}: {}. {}. Serving continues; the "
        "next cycle starts fresh.",
        me, req.cycle, where, at,
        verdict.rank >= 0 && !verdict.left_behind ? fmt::format(" (rank {} is to blame)", verdict.rank)
                                                  : std::string(),
        error, kept);
  }
  cv.NotifyAll();
  if (async() && agreed > 0 && !engine_stuck) {
    SetOp("the commits agreed before the failure", EngineBudget());
    try {
      WaitForScheduledCommits(fmt::format("end of the failed cycle {}", req.cycle));
    } catch (const Error& late) {
      spdlog::error("eplb: rank {}: {}", me, late.what());
    }
  }
  util::MutexLock lock(&mu);
  metrics.last_cycle = live;  // with the agreed commits made since
  if (!async()) Publish();
  pending_reports.push_back(live);
  cycle_active = false;
  phase = Phase::kIdle;
  bg_op.clear();
  // The longest wait a peer may still be in, in this cycle: the rebuild's
  // rendezvous when the handshake asked for one (this rank may have left
  // before it), else a deadline.
  last_failure = Clock::now();
  last_failure_lag = rebuilt || handshake_rebuild ? RebuildBudget() : cfg.deadline;
  cv.NotifyAll();
}

}  // namespace eplb
