// The engine side of the balancer: Step() on the engine thread, the
// commits scheduled for a step, and the end of a cycle.
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

void Balancer::State::ApplyCommitLocked(const Staged& st, double seconds, int64_t at_step) {
  const int l = st.plan.layer;
  std::copy(st.phy2log.begin(), st.phy2log.end(), current.layer_phy2log(l).begin());
  current.Derive();
  ++versions[l];
  ++metrics.layers_committed;
  if (st.roll_forward) ++metrics.roll_forwards;
  metrics.bytes_moved_total += st.plan.total.bytes_received;
  const NodeTraffic nodes = CountNodeTraffic(st.plan, cfg.ranks_per_node);
  metrics.bytes_between_nodes_total += nodes.bytes_between_nodes;
  if (!st.roll_forward && st.cycle == live.cycle) {
    ++live.layers_committed;
    live.experts_moved += st.plan.total.experts_received;
    live.slots_changed += st.plan.total.slots_changed();
    live.bytes_moved += st.plan.total.bytes_received;
    live.bytes_received += st.plan.per_rank[me].bytes_received;
    live.bytes_within_nodes += nodes.bytes_within_nodes;
    live.bytes_between_nodes += nodes.bytes_between_nodes;
    live.commit_seconds_max = std::max(live.commit_seconds_max, seconds);
  }
  pending_commits.push_back(CommitEvent{st.cycle, l, at_step, seconds, st.roll_forward});
}

void Balancer::State::UploadMaps(int layer, std::span<const int32_t> phy2log) {
#if EPLB_HAVE_CUDA
  // Engine thread (every commit is): the device maps follow on its stream,
  // before the commit is applied on the host side, as the commit's copies do.
  if (device_load) device_load->Upload(layer, phy2log, WaitDeadline());
#endif
}

void Balancer::State::CommitNow(int x, const Staged& st, bool publish) {
  MigrationExecutor* executor = executors[x].get();
  const auto start = Clock::now();
  executor->CommitOn(st.plan, engine_stream);
  const double seconds = SecondsSince(start);
  UploadMaps(st.plan.layer, st.phy2log);
  util::MutexLock lock(&mu);
  ApplyCommitLocked(st, seconds, step);
  if (publish) Publish();
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
  const Staged* st;
  MigrationExecutor* executor;
  {
    util::MutexLock lock(&mu);
    // Stable until this thread clears its step (balancer_state.h).
    st = &scheduled[x];
    executor = committers[x];
  }
  const auto start = Clock::now();
  try {
    executor->CommitOn(st->plan, engine_stream);
  } catch (const std::exception& e) {
    // Cannot happen unless the bookkeeping is wrong: the layer was staged.
    spdlog::critical("eplb: rank {} could not commit MoE layer {}: {}", me, st->plan.layer, e.what());
    util::MutexLock lock(&mu);
    scheduled[x].step = -1;
    cv.NotifyAll();
    return;
  }
  const double seconds = SecondsSince(start);
  UploadMaps(st->plan.layer, st->phy2log);
  {
    util::MutexLock lock(&mu);
    ApplyCommitLocked(*st, seconds, at_step);
    if (async()) Publish();
    if (st->ends_cycle) FinishCycleLocked(at_step);
    scheduled[x].step = -1;
  }
  cv.NotifyAll();
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
    util::MutexLock lock(&mu);
    now_step = ++step;
    // Watchdog: every wait of the cycle thread has a budget (SetOp), so one
    // that runs 2 s past it is a backend not honouring its deadline; say so
    // instead of going quiet. (It speaks from a Step(): this engine thread
    // is stepping, whatever the others do.)
    if (!bg_op.empty() && !bg_op_warned &&
        Clock::now() - bg_op_since > bg_op_budget + std::chrono::seconds(2)) {
      bg_op_warned = true;
      spdlog::error(
          "eplb: rank {}: the background migration thread has been in {} for {:.1f} s, past its "
          "budget of {:.1f} s: a wait there does not honour its deadline (step {}; the placement "
          "in force stays until it returns)",
          me, bg_op, SecondsSince(bg_op_since), bg_op_budget.count() / 1e3, now_step);
    }
    if (floor_step == now_step) {
      ++metrics.commit_waits;
      const auto wait_start = Clock::now();
      const auto until = wait_start + cfg.deadline + std::chrono::seconds(1);
      bool got = true;
      while (!stop && floor_step == now_step)
        if (!cv.WaitUntil(&mu, until) && floor_step == now_step && !stop) {
          got = false;
          break;
        }
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
    std::sort(to_commit.begin(), to_commit.end(), [&](int a, int b) REQUIRES(mu) {
      return scheduled[a].plan.layer < scheduled[b].plan.layer;
    });
  }
  for (int x : to_commit) CommitScheduled(x, now_step);

  std::optional<Request> inline_request;
  std::vector<CommitEvent> commits;
  std::vector<CycleReport> reports;
  {
    util::MutexLock lock(&mu);
    if (end_step == now_step) {
      end_step = -1;
      FinishCycleLocked(now_step);
    }
    const bool triggers_over = cfg.last_rebalance_step > 0 && now_step >= cfg.last_rebalance_step;
    if (now_step == TriggerStep(next_trigger_index) && !triggers_over) {
      const int64_t c = next_trigger_index++;
      Request req{c + 1, now_step, std::vector<int64_t>(window.sum().begin(), window.sum().end())};
      if (!cycle_active) {
        cycle_active = true;
        phase = Phase::kHandshake;
        if (async()) {
          request = std::move(req);
          cv.NotifyAll();
        } else {
          inline_request = std::move(req);
        }
      } else if (phase == Phase::kHandshake) {
        request = std::move(req);  // the waiting handshake moves on to this cycle
        cv.NotifyAll();
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
    cycle_role.Assume();  // sync mode: the engine thread runs the cycle
    RunCycle(std::move(*inline_request));
    util::MutexLock lock(&mu);
    for (auto& c : pending_commits) commits.push_back(c);
    for (auto& r : pending_reports) reports.push_back(r);
    pending_commits.clear();
    pending_reports.clear();
  }
  if (!reports.empty()) {
    BalancerMetrics m;
    {
      util::MutexLock lock(&mu);
      m = MetricsLocked();
    }
    spdlog::info("eplb: rank {}: {}", me, FormatMetricsLine(m));
  }
  if (on_commit)
    for (const auto& c : commits) on_commit(c);
  if (on_cycle)
    for (const auto& r : reports) on_cycle(r);
}

}  // namespace eplb
