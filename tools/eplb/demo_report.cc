#include "demo_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <vector>

namespace eplb::cli::demo {

using nlohmann::json;
using EventKind = ElasticEvent::Kind;

namespace {

json Percentiles(std::vector<double> v) {
  if (v.empty()) return json{{"count", 0}};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))]; };
  return json{{"count", v.size()}, {"p50", at(0.5)}, {"p90", at(0.9)}, {"p99", at(0.99)}, {"max", v.back()}};
}

std::string PercentileText(const json& p) {
  if (p.value("count", 0) == 0) return "no steps";
  return fmt::format("p50 {:.3f}  p90 {:.3f}  p99 {:.3f}  max {:.3f} ms  ({} steps)",
                     p["p50"].get<double>(), p["p90"].get<double>(), p["p99"].get<double>(),
                     p["max"].get<double>(), p["count"].get<int64_t>());
}

}  // namespace

int ReportRun(const DemoOptions& o, const Model& m, Store& store, const RunReport& r, Deadline results_by,
              Progress& progress) {
  const int size = r.members.size();
  json elastic = r.elastic;
  double commit_ms_max = r.commit_ms_max;
  // The others verify as much as this rank did before they publish.
  std::vector<json> all;
  for (int r : r.members.ranks)
    all.push_back(json::parse(store.GetString("demo/result/" + std::to_string(r), results_by)));
  std::vector<double> d, out, cd, co, rd, ro, bc;
  double served_again = 0;  // the slowest member's
  int64_t total_mismatches = 0, total_checked = 0, waits = 0;
  double wait_ms_max = 0;
  for (const json& j : all) {
    for (double v : j["during"]) d.push_back(v);
    for (double v : j["outside"]) out.push_back(v);
    for (double v : j["calls_during"]) cd.push_back(v);
    for (double v : j["calls_outside"]) co.push_back(v);
    for (double v : j["beyond_commit"]) bc.push_back(v);
    for (double v : j["reduce_during"]) rd.push_back(v);
    for (double v : j["reduce_outside"]) ro.push_back(v);
    wait_ms_max = std::max(wait_ms_max, j["commit_wait_ms_max"].get<double>());
    total_mismatches += j["mismatches"].get<int64_t>();
    served_again = std::max(served_again, j.value("served_again_seconds", 0.0));
    total_checked += j["experts_checked"].get<int64_t>();
    waits += j["commit_waits"].get<int64_t>();
    commit_ms_max = std::max(commit_ms_max, j["commit_ms_max"].get<double>());
  }
  int64_t ok_cycles = 0;
  uint64_t moved = 0, within = 0, between = 0;  // every rebalance, every rank
  for (const auto& c : r.rebalances) {
    ok_cycles += c["ok"].get<bool>() ? 1 : 0;
    moved += c["bytes_moved"].get<uint64_t>();
    within += c["bytes_within_nodes"].get<uint64_t>();
    between += c["bytes_between_nodes"].get<uint64_t>();
  }
  // A membership event must have happened, every slot checked after it.
  const bool event_ok = r.event_kind == EventKind::kNone || (r.changed && elastic.value("verified", false));
  const bool ok = total_mismatches == 0 && ok_cycles > 0 && event_ok;
  if (r.changed) elastic["served_again_seconds"] = served_again;
  json report{{"ok", ok},
              {"communicator", r.selection.name},
              {"communicator_reason", r.selection.reason},
              {"mode", o.sync ? "sync" : "async"},
              {"memory", r.gpu ? "cuda" : "host"},
              {"ranks", size},
              {"model", {{"layers", m.layers}, {"experts", m.experts}, {"slots", size * m.spr},
                         {"groups", o.groups}, {"expert_bytes", o.expert_bytes},
                         {"weights_bytes_per_rank", uint64_t(m.spr) * m.layers * o.expert_bytes}}},
              {"steps", r.steps},
              {"seconds", r.run_seconds},
              {"rebalances", r.rebalances},
              {"membership", r.event_kind == EventKind::kNone ? json(nullptr) : elastic},
              {"hosts", r.hosts->ToJson()},
              {"bytes_moved", moved},
              {"bytes_within_nodes", within},
              {"bytes_between_nodes", between},
              {"step_ms", {{"outside_migration", Percentiles(out)}, {"during_migration", Percentiles(d)}}},
              {"step_call_ms", {{"outside_migration", Percentiles(co)}, {"during_migration", Percentiles(cd)}}},
              {"step_call_beyond_commit_ms", Percentiles(bc)},
              {"engine_all_reduce_ms", {{"outside_migration", Percentiles(ro)}, {"during_migration", Percentiles(rd)}}},
              {"commit_copy_ms_max", commit_ms_max},
              {"commit_waits", waits},
              {"commit_wait_ms_max", wait_ms_max},
              {"experts_checked", total_checked},
              {"mismatches", total_mismatches}};
  // How much slower a step is while a migration runs (median against median).
  if (!d.empty() && !out.empty())
    report["step_ms_p50_during_vs_outside"] =
        report["step_ms"]["during_migration"]["p50"].get<double>() /
            report["step_ms"]["outside_migration"]["p50"].get<double>() - 1;
  if (r.gpu) report["gpu"] = {{"device", r.gpu->device}, {"work", r.gpu->work}};
  if (o.json) {
    std::fprintf(stdout, "%s\n", report.dump(2).c_str());
  } else {
    if (r.changed) {
      const json& e = elastic;
      progress.Line(fmt::format(
          "membership: {} of rank {} at step {} (changed at step {}): ranks {} (generation {}); every expert served "
          "again {:.3f} s after {} (the slowest rank); {} experts ({:.1f} MB) restored from the source, {} ({:.1f} MB) "
          "over the wire",
          e["event"].get<std::string>(), e["rank"].get<int>(), e["at_step"].get<int64_t>(),
          e["changed_at_step"].get<int64_t>(), fmt::join(r.members.ranks, ", "), r.members.generation, served_again,
          r.event_kind == EventKind::kKill ? "the kill" : "the change began",
          e["experts_from_source"].get<int64_t>(), e["bytes_from_source"].get<uint64_t>() / 1e6,
          e["experts_over_wire"].get<int64_t>(), e["bytes_over_wire"].get<uint64_t>() / 1e6));
      progress.Line(fmt::format(
          "  balancedness: {:.3f} before, {:.3f} of the slots left in force, {:.3f} just after the change, {} after "
          "the next rebalance",
          e["balancedness_before_event"].get<double>(), e["balancedness_live_slots_before_change"].get<double>(),
          e["balancedness_after_change"].get<double>(),
          e.contains("balancedness_after_next_rebalance")
              ? fmt::format("{:.3f}", e["balancedness_after_next_rebalance"].get<double>())
              : std::string("none yet")));
    }
    progress.Line(fmt::format("{} steps in {:.1f} s on {} ranks; {} rebalances ({} failed)", r.steps, r.run_seconds, size,
                              ok_cycles, r.rebalances.size() - ok_cycles));
    if (o.nodes > 1)
      progress.Line(fmt::format("moved in all: {:.1f} MB, {:.1f} MB within {} and {:.1f} MB between them ({:.1f}%)",
                                moved / 1e6, within / 1e6, r.hosts->unit(), between / 1e6,
                                moved ? 100.0 * between / moved : 0.0));
    progress.Line(r.gpu ? "step time, every rank (the GPU work on the engine's stream, routing, the step's "
                        "all-reduce, Step(), and waiting for the stream):"
                      : "step time, every rank (routing, expert reads, the step's all-reduce and Step()):");
    progress.Line("  outside migrations: " + PercentileText(report["step_ms"]["outside_migration"]));
    progress.Line("  during migrations:  " + PercentileText(report["step_ms"]["during_migration"]));
    if (report.contains("step_ms_p50_during_vs_outside"))
      progress.Line(fmt::format("  median during migrations vs outside: {:+.2f}%",
                                100 * report["step_ms_p50_during_vs_outside"].get<double>()));
    progress.Line("  of which the step's all-reduce (waiting for the slowest rank):");
    progress.Line("    outside migrations: " + PercentileText(report["engine_all_reduce_ms"]["outside_migration"]));
    progress.Line("    during migrations:  " + PercentileText(report["engine_all_reduce_ms"]["during_migration"]));
    progress.Line("Balancer::Step() alone:");
    progress.Line("  outside migrations: " + PercentileText(report["step_call_ms"]["outside_migration"]));
    progress.Line("  during migrations:  " + PercentileText(report["step_call_ms"]["during_migration"]));
    progress.Line("  during migrations, beyond the step's commit copy: " +
                  PercentileText(report["step_call_beyond_commit_ms"]));
    progress.Line(fmt::format("  longest commit copy {:.3f} ms; {} steps waited for a commit agreement, the "
                              "longest {:.3f} ms",
                              commit_ms_max, waits, wait_ms_max));
    progress.Line(r.gpu ? fmt::format("verified: {} expert slot checks on the GPUs of {} ranks (every byte at the "
                                    "end, both ends of each tensor while serving), {} wrong words",
                                    total_checked, size, total_mismatches)
                      : fmt::format("verified: {} expert slots checked byte for byte on {} ranks, {} mismatches",
                                    total_checked, size, total_mismatches));
    progress.Line(ok ? "result: OK"
                     : total_mismatches ? "result: FAILED (weights do not match the maps)"
                     : !event_ok        ? "result: FAILED (the membership change did not happen)"
                                        : "result: FAILED (no rebalance completed)");
  }
  return ok ? 0 : 3;
}

}  // namespace eplb::cli::demo
