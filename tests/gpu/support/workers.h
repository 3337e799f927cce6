// Multi-process tests for the GPU suite: a test starts N copies of its own
// binary as ranks ("workers"); each runs a registered worker function and
// exits with its status. CUDA IPC needs separate processes (a process cannot
// open its own IPC handles), and a fresh process per rank is what engines run.
//
// A worker is selected by the environment (EPLB_TEST_WORKER=name) and runs
// from a GoogleTest global environment before any test, then exits; results
// go to files in the run's directory for the parent test to check.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace eplb::test {

struct WorkerContext {
  std::string name;
  int rank = 0;
  int size = 1;
  std::string dir;                            // shared by the run's workers
  std::map<std::string, std::string> params;  // from the parent's RunWorkers call

  std::string Param(const std::string& key, const std::string& fallback = "") const;
  int IntParam(const std::string& key, int fallback) const;
  // Writes this rank's result (JSON) for the parent to read.
  void WriteResult(const nlohmann::json& result) const;
};

// Returns the process exit status; an escaping exception exits with 1.
using WorkerFunction = std::function<int(const WorkerContext&)>;

struct WorkerRegistration {
  WorkerRegistration(const std::string& name, WorkerFunction function);
};
#define EPLB_GPU_WORKER(name, function) \
  static ::eplb::test::WorkerRegistration eplb_worker_registration_##name(#name, function)

// Throws std::runtime_error(message) unless `condition`: the checks workers use.
void Require(bool condition, const std::string& message);

struct WorkerOutcome {
  int rank = 0;
  int exit_code = -1;  // -1: killed (timed out or signal)
  bool timed_out = false;
  nlohmann::json result;  // what the worker wrote (null if nothing)
};

// Starts `size` workers running `name`, waits for all of them until
// `timeout` (then kills the rest), and returns their outcomes by rank.
std::vector<WorkerOutcome> RunWorkers(const std::string& name, int size,
                                      const std::map<std::string, std::string>& params,
                                      std::chrono::seconds timeout);

// One line per rank for test failure messages.
std::string Describe(const std::vector<WorkerOutcome>& outcomes);

}  // namespace eplb::test
