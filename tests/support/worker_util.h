// Helpers for test workers (multiprocess.h): join the run like a launched
// rank, log to stderr, report eplb errors in one parseable line. (Byte
// patterns for checking transfers: transfer_pattern.h.)
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "eplb/gloo.h"

namespace eplb::test {

struct WorkerRank {
  LaunchEnv env;
  std::shared_ptr<Store> store;
  // GlooOptions for a group of this run.
  GlooOptions Gloo(const std::string& name) const;
};

// ReadLaunchEnv + OpenRunStore; spdlog to stderr with the rank in each line.
WorkerRank JoinRun();

// The key=value arguments a test passes to its workers. Arguments without
// '=' are ignored (flags of the harness itself).
class WorkerArgs {
 public:
  explicit WorkerArgs(const std::vector<std::string>& args);
  bool Has(const std::string& key) const { return values_.count(key) != 0; }
  // Sets `value` from `key` when given; numbers are parsed as integers.
  void Read(const std::string& key, std::string& value) const;
  template <typename T>
  void Read(const std::string& key, T& value) const {
    static_assert(std::is_arithmetic_v<T>);
    auto it = values_.find(key);
    if (it != values_.end()) value = static_cast<T>(std::stoll(it->second));
  }
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  std::map<std::string, std::string> values_;
};

// "EPLB-ERROR kind=<timeout|error|invalid> rank=R peer=P layer=L op=O ms=T: what"
void ReportError(const std::exception& e, double ms);

}  // namespace eplb::test
