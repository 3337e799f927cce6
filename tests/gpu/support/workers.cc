#include "gpu/support/workers.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <thread>

#include "support/paths.h"

extern char** environ;

namespace eplb::test {
namespace {

std::map<std::string, WorkerFunction>& Registry() {
  static std::map<std::string, WorkerFunction> registry;
  return registry;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// Runs the worker named in the environment before any test, then exits.
class WorkerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string name = Env("EPLB_TEST_WORKER");
    if (name.empty()) return;
    WorkerContext context;
    context.name = name;
    context.rank = std::atoi(Env("EPLB_TEST_RANK").c_str());
    context.size = std::atoi(Env("EPLB_TEST_WORLD_SIZE").c_str());
    context.dir = Env("EPLB_TEST_DIR");
    for (char** e = environ; *e != nullptr; ++e) {
      std::string entry = *e;
      const std::string prefix = "EPLB_TEST_PARAM_";
      if (entry.rfind(prefix, 0) != 0) continue;
      auto eq = entry.find('=');
      context.params[entry.substr(prefix.size(), eq - prefix.size())] = entry.substr(eq + 1);
    }
    int code = 1;
    auto it = Registry().find(name);
    if (it == Registry().end()) {
      std::fprintf(stderr, "worker %s: not registered in this binary\n", name.c_str());
    } else {
      try {
        code = it->second(context);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "worker %s rank %d failed: %s\n", name.c_str(), context.rank, e.what());
        code = 1;
      }
    }
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
};

[[maybe_unused]] ::testing::Environment* const worker_environment =
    ::testing::AddGlobalTestEnvironment(new WorkerEnvironment);

std::string ResultPath(const std::string& dir, int rank) {
  return dir + "/result-" + std::to_string(rank) + ".json";
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
  const std::string path = ResultPath(dir, rank);
  std::ofstream(path + ".tmp") << result.dump(2);
  std::filesystem::rename(path + ".tmp", path);
}

WorkerRegistration::WorkerRegistration(const std::string& name, WorkerFunction function) {
  Registry()[name] = std::move(function);
}

void Require(bool condition, const std::string& message) {
  if (!condition) throw std::runtime_error(message);
}

std::vector<WorkerOutcome> RunWorkers(const std::string& name, int size,
                                      const std::map<std::string, std::string>& params,
                                      std::chrono::seconds timeout) {
  const std::string dir = MakeTempDir("eplb-gpu-" + name + "-");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  // GoogleTest sets up environments (where the worker runs) only when some
  // test is selected: select the calling test; the worker exits before it.
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  if (test == nullptr) throw std::runtime_error("RunWorkers must be called from a test");
  std::string filter = std::string("--gtest_filter=") + test->test_suite_name() + "." + test->name();
  std::vector<pid_t> pids(size, -1);
  for (int rank = 0; rank < size; ++rank) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string(*e).rfind("EPLB_TEST_", 0) != 0) env.emplace_back(*e);
    }
    env.push_back("EPLB_TEST_WORKER=" + name);
    env.push_back("EPLB_TEST_RANK=" + std::to_string(rank));
    env.push_back("EPLB_TEST_WORLD_SIZE=" + std::to_string(size));
    env.push_back("EPLB_TEST_DIR=" + dir);
    for (const auto& [key, value] : params) env.push_back("EPLB_TEST_PARAM_" + key + "=" + value);
    std::vector<char*> envp;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<char*> argv = {const_cast<char*>(self.c_str()), filter.data(), nullptr};
    pid_t pid = -1;
    if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) != 0) {
      throw std::runtime_error("posix_spawn " + self + " failed");
    }
    pids[rank] = pid;
  }
  std::vector<WorkerOutcome> outcomes(size);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int running = size;
  while (running > 0) {
    for (int rank = 0; rank < size; ++rank) {
      if (pids[rank] < 0) continue;
      int status = 0;
      pid_t done = waitpid(pids[rank], &status, WNOHANG);
      if (done == pids[rank]) {
        outcomes[rank].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        pids[rank] = -1;
        --running;
      }
    }
    if (running > 0 && std::chrono::steady_clock::now() > deadline) {
      for (int rank = 0; rank < size; ++rank) {
        if (pids[rank] < 0) continue;
        kill(pids[rank], SIGKILL);
        waitpid(pids[rank], nullptr, 0);
        outcomes[rank].timed_out = true;
        pids[rank] = -1;
      }
      running = 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int rank = 0; rank < size; ++rank) {
    outcomes[rank].rank = rank;
    std::ifstream in(ResultPath(dir, rank));
    if (in) outcomes[rank].result = nlohmann::json::parse(in, nullptr, false);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return outcomes;
}

std::string Describe(const std::vector<WorkerOutcome>& outcomes) {
  std::string s;
  for (const auto& o : outcomes) {
    s += "rank " + std::to_string(o.rank) + ": exit " + std::to_string(o.exit_code) +
         (o.timed_out ? " (timed out, killed)" : "") + " result " + o.result.dump() + "\n";
  }
  return s;
}

}  // namespace eplb::test
