// eplb demo: recording and telling a failed run (demo_failure.h).
#include "demo_failure.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/blame.h"
#include "util/text.h"

namespace eplb::cli::demo {

using nlohmann::json;

namespace {

std::string FailureKey(int rank) { return "demo/failure/" + std::to_string(rank); }

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "12:34:56.789", local time (the ranks' log lines use the same clock).
std::string WallClock(int64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  return fmt::format("{:02}:{:02}:{:02}.{:03}", tm.tm_hour, tm.tm_min, tm.tm_sec, unix_ms % 1000);
}

}  // namespace

void RecordFailure(Store& store, int me, int64_t step, int blamed, bool left_behind, const std::string& error) {
  const json record{{"rank", me},           {"step", step},   {"blamed", blamed},
                    {"left_behind", left_behind}, {"error", error}, {"unix_ms", UnixMs()}};
  const std::string text = record.dump();
  try {
    store.SetIfAbsent(FailureKey(me), std::vector<uint8_t>(text.begin(), text.end()));
  } catch (const std::exception& e) {
    spdlog::warn("demo: rank {} could not record its failure in the store: {}", me, e.what());
  }
}

void RecordFailure(const LaunchEnv& env, const std::exception& e) {
  const auto* err = dynamic_cast<const Error*>(&e);
  try {
    auto store = OpenRunStore("", env);
    RecordFailure(*store, env.rank, -1, err != nullptr ? err->peer() : -1, false, e.what());
  } catch (const std::exception& open) {
    spdlog::warn("demo: rank {} could not record its failure: {}", env.rank, open.what());
  }
}

void FailEngineStep(Store& store, int me, int world, int64_t step, const Error& e,
                    std::chrono::milliseconds deadline) {
  const int direct = e.peer();
  const runtime::BlameVerdict v =
      runtime::FollowBlame(store, "demo/engine-blame", me, world, direct, runtime::BlameBudget(deadline));
  std::string msg;
  if (v.left_behind) {
    msg = fmt::format("{}, at engine step {}; here: {}", v.Describe(me, direct), step, e.what());
  } else if (v.rank >= 0) {
    const std::string why = v.Describe(me, direct);
    msg = fmt::format("rank {} stalled or died: the engine step's all-reduce at step {} failed{}: {}", v.rank, step,
                      why.empty() ? std::string() : " (" + why + ")", e.what());
  } else {
    msg = fmt::format("the engine step's all-reduce at step {} failed: {}", step, e.what());
  }
  RecordFailure(store, me, step, v.rank, v.left_behind, msg);
  throw Error("demo", fmt::format("engine step {}", step), msg, me, v.rank);
}

std::string DescribeFailures(Store& store, const std::vector<io::ExitStatus>& statuses,
                             const std::vector<std::string>& notes) {
  const int world = static_cast<int>(statuses.size());
  std::vector<std::optional<json>> records(world);
  for (int r = 0; r < world; ++r) {
    try {
      const auto bytes = store.Get(FailureKey(r), Clock::now());
      records[r] = json::parse(std::string(bytes.begin(), bytes.end()));
    } catch (const std::exception&) {
      // No record: the rank ended without one (killed, or it did not fail).
    }
  }
  if (std::none_of(records.begin(), records.end(), [](const auto& r) { return r.has_value(); })) return "";
  // The ranks blamed, and by whom (a rank left behind blames itself).
  std::map<int, std::vector<int>> blamed_by;
  for (int r = 0; r < world; ++r)
    if (records[r] && records[r]->value("blamed", -1) >= 0 && records[r]->value("blamed", -1) < world)
      blamed_by[records[r]->value("blamed", -1)].push_back(r);
  std::string out;
  if (blamed_by.size() == 1) {
    const auto& [culprit, by] = *blamed_by.begin();
    std::vector<int> others;
    for (int r : by)
      if (r != culprit) others.push_back(r);
    const bool admits = records[culprit] && records[culprit]->value("left_behind", false);
    out += fmt::format("eplb demo: FAILED: rank {} stalled or died{}{}\n", culprit,
                       others.empty() ? std::string()
                                      : fmt::format(": rank{} {} blamed it", others.size() > 1 ? "s" : "",
                                                    util::RankList(others)),
                       admits ? "; it found that it was left behind" : "");
  } else if (blamed_by.empty()) {
    out += "eplb demo: FAILED: no rank named another\n";
  } else {
    std::vector<std::string> parts;
    for (const auto& [culprit, by] : blamed_by)
      parts.push_back(fmt::format("rank {} by rank{} {}", culprit, by.size() > 1 ? "s" : "", util::RankList(by)));
    out += fmt::format("eplb demo: FAILED: the ranks blame different ranks: {}\n", fmt::join(parts, "; "));
  }
  for (int r = 0; r < world; ++r) {
    if (statuses[r].ok() && !records[r]) continue;
    std::string line = fmt::format("  rank {} ({}", r, statuses[r].Describe());
    if (records[r] && records[r]->contains("unix_ms"))
      line += ", failed at " + WallClock(records[r]->value("unix_ms", int64_t{0}));
    line += "): ";
    if (records[r]) {
      line += records[r]->value("error", std::string("(no message)"));
    } else {
      line += "no failure recorded";
      if (!notes[r].empty()) line += " (" + notes[r] + ")";
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace eplb::cli::demo
