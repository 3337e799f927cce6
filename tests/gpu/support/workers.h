// The GPU suite's view of the multi-process harness (support/multiprocess.h):
// a worker (EPLB_TEST_WORKER) turns its arguments into a WorkerContext, and
// the test reads back what each rank wrote as its result (JSON).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "eplb/store.h"
#include "support/multiprocess.h"

namespace eplb::test {

struct WorkerContext {
  int rank = 0;
  int size = 1;
  std::shared_ptr<Store> store;               // the run's store (JoinRun)
  std::string results_dir;                    // where WriteResult puts this rank's JSON
  std::map<std::string, std::string> params;  // from RunWorkers

  std::string Param(const std::string& key, const std::string& fallback = "") const;
  int IntParam(const std::string& key, int fallback) const;
  void WriteResult(const nlohmann::json& result) const;
};

// In a worker: joins the run and reads the arguments RunWorkers passed.
WorkerContext GpuWorkerContext(const std::vector<std::string>& args);

// Throws std::runtime_error(message) unless `condition`: the checks workers use.
void Require(bool condition, const std::string& message);

struct WorkerOutcome {
  int rank = 0;
  int exit_code = -1;  // -1: killed (timed out or signal)
  bool timed_out = false;
  nlohmann::json result;  // what the worker wrote (null if nothing)
  std::string stderr_text;
};

// Runs `size` ranks of worker `name` with `params`, waits up to `timeout`
// (then kills them), and returns their outcomes by rank.
std::vector<WorkerOutcome> RunWorkers(const std::string& name, int size,
                                      const std::map<std::string, std::string>& params,
                                      std::chrono::seconds timeout);

// One line per rank (and the stderr tail of failed ranks) for messages.
std::string Describe(const std::vector<WorkerOutcome>& outcomes);

}  // namespace eplb::test
