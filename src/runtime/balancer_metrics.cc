// The balancer's metrics as Prometheus text and as one log line.
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

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
  metric("eplb_bytes_between_nodes_total", "counter",
         "Of the expert bytes moved, those between ranks of different nodes (ranks_per_node).",
         m.bytes_between_nodes_total);
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

}  // namespace eplb
