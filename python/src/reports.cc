#include "reports.h"

namespace eplb::python {

py::dict CommitEventDict(const CommitEvent& e) {
  py::dict d;
  d["cycle"] = e.cycle;
  d["layer"] = e.layer;
  d["step"] = e.step;
  d["copy_seconds"] = e.copy_seconds;
  d["roll_forward"] = e.roll_forward;
  return d;
}

py::dict CycleReportDict(const CycleReport& r) {
  py::dict d;
  d["cycle"] = r.cycle;
  d["trigger_step"] = r.trigger_step;
  d["end_step"] = r.end_step;
  d["ok"] = r.ok;
  d["error"] = r.error;
  d["blamed_rank"] = r.blamed_rank;
  d["balancedness_before"] = r.balancedness_before;
  d["balancedness_after"] = r.balancedness_after;
  d["layers_changed"] = r.layers_changed;
  d["layers_committed"] = r.layers_committed;
  d["experts_moved"] = r.experts_moved;
  d["slots_changed"] = r.slots_changed;
  d["bytes_moved"] = r.bytes_moved;
  d["bytes_received"] = r.bytes_received;
  d["bytes_within_nodes"] = r.bytes_within_nodes;
  d["bytes_between_nodes"] = r.bytes_between_nodes;
  d["seconds"] = r.seconds;
  d["policy_seconds"] = r.policy_seconds;
  d["transfer_seconds"] = r.transfer_seconds;
  d["commit_seconds_max"] = r.commit_seconds_max;
  d["rebuilt"] = r.rebuilt;
  d["GBps"] = r.GBps();
  return d;
}

py::dict MetricsDict(const BalancerMetrics& m) {
  py::dict d;
  d["rank"] = m.rank;
  d["communicator"] = m.communicator;
  d["mode"] = m.mode;
  d["step"] = m.step;
  d["steps_to_next_rebalance"] = m.steps_to_next_rebalance;
  d["cycle_in_progress"] = m.cycle_in_progress;
  d["balancedness"] = m.balancedness;
  d["cycles_started"] = m.cycles_started;
  d["cycles_completed"] = m.cycles_completed;
  d["cycles_failed"] = m.cycles_failed;
  d["cycles_skipped"] = m.cycles_skipped;
  d["layers_committed"] = m.layers_committed;
  d["roll_forwards"] = m.roll_forwards;
  d["rebuilds"] = m.rebuilds;
  d["commit_waits"] = m.commit_waits;
  d["commit_wait_seconds_max"] = m.commit_wait_seconds_max;
  d["bytes_moved_total"] = m.bytes_moved_total;
  d["bytes_between_nodes_total"] = m.bytes_between_nodes_total;
  d["last_cycle"] = CycleReportDict(m.last_cycle);
  d["last_error"] = m.last_error;
  return d;
}

}  // namespace eplb::python
