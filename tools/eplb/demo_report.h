// eplb demo: rank 0's report -- every member's figures read from the
// store, the step-time percentiles, the rebalances, the membership event,
// the checks -- as text or one JSON document (--json).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "eplb/deadline.h"
#include "eplb/membership.h"
#include "eplb/selection.h"
#include "eplb/store.h"
#include "demo_elastic.h"
#include "demo_hosts.h"
#include "demo_options.h"

namespace eplb::cli::demo {

// Rank 0's lines on stdout; on a terminal, a progress line rewritten in place.
class Progress {
 public:
  explicit Progress(bool on) : on_(on) {}
  bool on() const { return on_; }
  void Show(const std::string& text) {
    if (!on_) return;
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    std::fprintf(stdout, "\r\x1b[K%s", text.c_str());
    std::fflush(stdout);
    shown_ = true;
  }
  void Line(const std::string& text) {
    if (shown_) std::fprintf(stdout, "\r\x1b[K");
    shown_ = false;
    std::fprintf(stdout, "%s\n", text.c_str());
    std::fflush(stdout);
  }

 private:
  bool on_;
  bool shown_ = false;
  Clock::time_point last_{};
};

// What rank 0 knows beyond the figures every member published under
// "demo/result/<rank>".
struct RunReport {
  Membership members;                    // whose figures to read
  nlohmann::json rebalances = nlohmann::json::array();  // this rank's cycle reports
  nlohmann::json elastic = nlohmann::json::object();    // the membership event's figures
  ElasticEvent::Kind event_kind = ElasticEvent::Kind::kNone;
  bool changed = false;                  // the event happened
  Selection selection;
  const DemoHosts* hosts = nullptr;
  int64_t steps = 0;
  double run_seconds = 0;
  double commit_ms_max = 0;              // this rank's
  struct Gpu {
    std::string device, work;
  };
  std::optional<Gpu> gpu;                // --gpu
};

// Reads every member's figures (until `results_by`), prints the report and
// returns the exit status: 0 when every check passed, a rebalance completed
// and the membership event (if any) happened; 3 otherwise.
int ReportRun(const DemoOptions& o, const Model& m, Store& store, const RunReport& r, Deadline results_by,
              Progress& progress);

}  // namespace eplb::cli::demo
