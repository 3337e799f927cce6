// Staging and migrating one layer: the executor's transfers, then (async)
// the commit scheduled at the agreed step or (sync) the commit at once.
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

void Balancer::State::MigrateLayerAsync(int x, int layer, const Placement& cur,
                                        const Placement& next, bool last) {
  // The engine commits the layer the buffer holds at its agreed step, a few
  // steps from now; an engine that does not get there is blocked.
  SetOp(fmt::format("waiting for staging buffer {} (commit of an earlier layer)", x), EngineBudget());
  WaitForScheduledCommits(fmt::format("stage of MoE layer {}", layer), x);
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
    util::MutexLock lock(&mu);
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
  cv.NotifyAll();
  if (after) std::rethrow_exception(after);  // committed as recorded; the cycle ends here
}

// Plans and stages one layer on executor x; a failure to stage is returned
// (every rank votes on it), bad input thrown.
Balancer::State::StagedOutcome Balancer::State::StageLayer(int x, int layer, const Placement& cur,
                                                           const Placement& next) {
  StagedOutcome o;
  {
    util::MutexLock lock(&mu);
    o.staged.cycle = live.cycle;
  }
  o.staged.plan = executors[x]->Plan(cur, next, layer);
  auto row = next.layer_phy2log(layer);
  o.staged.phy2log.assign(row.begin(), row.end());
  SetOp(fmt::format("the transfers of MoE layer {}", layer));
  try {
    LayerMigrationReport r = executors[x]->Stage(o.staged.plan, WaitDeadline());
    util::MutexLock lock(&mu);
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
  engine_role.Assume();  // sync mode: the cycle runs on the engine thread
  CommitNow(0, st, /*publish=*/false);
  if (after) std::rethrow_exception(after);  // committed as recorded; the cycle ends here
}

}  // namespace eplb
