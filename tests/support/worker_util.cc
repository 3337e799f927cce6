#include "support/worker_util.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace eplb::test {
GlooOptions WorkerRank::Gloo(const std::string& name) const {
  GlooOptions o;
  o.store = store;
  o.rank = env.rank;
  o.world_size = env.world_size;
  o.name = name;
  return o;
}

WorkerRank JoinRun() {
  auto logger = spdlog::stderr_color_mt("worker");
  spdlog::set_default_logger(logger);
  WorkerRank w;
  w.env = ReadLaunchEnv();
  spdlog::set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(w.env.rank) + "] [%l] %v");
  w.store = OpenRunStore("", w.env);
  return w;
}

void ReportError(const std::exception& e, double ms) {
  const char* kind = "other";
  int rank = -1, peer = -1;
  std::string layer = "-", op = "-";
  if (auto* err = dynamic_cast<const Error*>(&e)) {
    kind = dynamic_cast<const TimeoutError*>(&e) ? "timeout" : "error";
    rank = err->rank();
    peer = err->peer();
    layer = err->layer();
    op = err->operation();
  } else if (dynamic_cast<const InvalidArgument*>(&e)) {
    kind = "invalid";
  }
  std::fprintf(stderr, "EPLB-ERROR kind=%s rank=%d peer=%d layer=%s op=%s ms=%.0f: %s\n", kind, rank, peer,
               layer.c_str(), op.c_str(), ms, e.what());
  std::fflush(stderr);
}

double ReportedMs(const std::string& text) {
  auto at = text.find(" ms=");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + 4));
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

WorkerArgs::WorkerArgs(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    auto eq = a.find('=');
    if (eq != std::string::npos) values_[a.substr(0, eq)] = a.substr(eq + 1);
  }
}

void WorkerArgs::Read(const std::string& key, std::string& value) const {
  auto it = values_.find(key);
  if (it != values_.end()) value = it->second;
}

}  // namespace eplb::test
