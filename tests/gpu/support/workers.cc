#include "gpu/support/workers.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/paths.h"
#include "support/worker_util.h"

namespace eplb::test {

namespace {
constexpr const char* kResultsFlag = "--results=";

std::string ResultPath(const std::string& dir, int rank) {
  return dir + "/result-" + std::to_string(rank) + ".json";
}

// A worker killed by a signal would otherwise leave only "exit -1" and an
// empty stderr: say which signal, with a backtrace, then die of it.
void OnFatalSignal(int sig) {
  char line[96];
  const char* name = strsignal(sig);
  int n = snprintf(line, sizeof line, "worker killed by signal %d (%s); backtrace:\n", sig, name ? name : "?");
  if (n > 0) (void)!write(2, line, static_cast<size_t>(n));
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

void ReportFatalSignals() {
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGPIPE}) {
    struct sigaction action;
    std::memset(&action, 0, sizeof action);
    action.sa_handler = OnFatalSignal;
    action.sa_flags = SA_RESETHAND;
    sigaction(sig, &action, nullptr);
  }
}
}  // namespace

std::string WorkerContext::Param(const std::string& key, const std::string& fallback) const {
  auto it = params.find(key);
  return it == params.end() ? fallback : it->second;
}

int WorkerContext::IntParam(const std::string& key, int fallback) const {
  auto it = params.find(key);
  return it == params.end() ? fallback : std::stoi(it->second);
}

void WorkerContext::WriteResult(const nlohmann::json& result) const {
  const std::string path = ResultPath(results_dir, rank);
  std::ofstream(path + ".tmp") << result.dump(2);
  std::filesystem::rename(path + ".tmp", path);
}

WorkerContext GpuWorkerContext(const std::vector<std::string>& args) {
  ReportFatalSignals();
  WorkerRank joined = JoinRun();
  WorkerContext ctx;
  ctx.rank = joined.env.rank;
  ctx.size = joined.env.world_size;
  ctx.store = joined.store;
  for (const auto& arg : args) {
    if (arg.rfind(kResultsFlag, 0) == 0) ctx.results_dir = arg.substr(std::string(kResultsFlag).size());
  }
  ctx.params = WorkerArgs(args).values();
  ctx.params.erase("--results");
  Require(!ctx.results_dir.empty(), "worker started without " + std::string(kResultsFlag));
  return ctx;
}

void Require(bool condition, const std::string& message) {
  if (!condition) throw std::runtime_error(message);
}

std::vector<WorkerOutcome> RunWorkers(const std::string& name, int size,
                                      const std::map<std::string, std::string>& params,
                                      std::chrono::seconds timeout) {
  const std::string results = MakeTempDir("eplb-gpu-results-");
  std::vector<std::string> args = {kResultsFlag + results};
  for (const auto& [key, value] : params) args.push_back(key + "=" + value);
  RankGroup group(Ranks(name, size, args));
  auto exits = group.Wait(DeadlineAfter(timeout));
  std::vector<WorkerOutcome> outcomes;
  for (const auto& e : exits) {
    WorkerOutcome o;
    o.rank = e.rank;
    o.timed_out = e.timed_out;
    o.exit_code = e.status.exited ? e.status.code : -1;
    o.stderr_text = e.stderr_text;
    std::ifstream in(ResultPath(results, e.rank));
    if (in) o.result = nlohmann::json::parse(in, nullptr, false);
    outcomes.push_back(std::move(o));
  }
  std::error_code ignored;
  std::filesystem::remove_all(results, ignored);
  return outcomes;
}

std::string Describe(const std::vector<WorkerOutcome>& outcomes) {
  std::string s;
  for (const auto& o : outcomes) {
    s += "rank " + std::to_string(o.rank) + ": exit " + std::to_string(o.exit_code) +
         (o.timed_out ? " (timed out, killed)" : "") + " result " + o.result.dump() + "\n";
    if (o.exit_code != 0 && !o.stderr_text.empty()) {
      const size_t keep = 3000;
      s += o.stderr_text.size() > keep ? o.stderr_text.substr(o.stderr_text.size() - keep) : o.stderr_text;
      s += "\n";
    }
  }
  return s;
}

}  // namespace eplb::test
