// Helpers for test workers (multiprocess.h): join the run like a launched
// rank, log to stderr, report eplb errors in one parseable line. (Byte
// patterns for checking transfers: transfer_pattern.h.)
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
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

// A test scenario's fields as key=value worker arguments, named once:
//   ArgFields f; f("layers", s.layers)("mode", s.mode);
// Args() writes every field, Read() sets the fields an argument list gives.
// Fields are integers or strings (a duration as whole microseconds, say).
class ArgFields {
 public:
  ArgFields& operator()(const char* key, std::string& field) {
    fields_.push_back({key, [&field] { return field; },
                       [&field](const WorkerArgs& kv, const std::string& k) { kv.Read(k, field); }});
    return *this;
  }
  template <typename T>
  ArgFields& operator()(const char* key, T& field) {
    static_assert(std::is_integral_v<T>);
    fields_.push_back({key, [&field] { return std::to_string(field); },
                       [&field](const WorkerArgs& kv, const std::string& k) { kv.Read(k, field); }});
    return *this;
  }
  std::vector<std::string> Args() const {
    std::vector<std::string> out;
    for (const Field& f : fields_) out.push_back(f.key + "=" + f.get());
    return out;
  }
  void Read(const std::vector<std::string>& args) const {
    const WorkerArgs kv(args);
    for (const Field& f : fields_) f.set(kv, f.key);
  }

 private:
  struct Field {
    std::string key;
    std::function<std::string()> get;
    std::function<void(const WorkerArgs&, const std::string&)> set;
  };
  std::vector<Field> fields_;
};

// Args() and Parse() for a scenario struct S that names its fields once, in
// `test::ArgFields Fields()`.
template <typename S>
struct FieldsAsArgs {
  std::vector<std::string> Args() const {
    S copy = static_cast<const S&>(*this);
    return copy.Fields().Args();
  }
  static S Parse(const std::vector<std::string>& args) {
    S s;
    s.Fields().Read(args);
    return s;
  }
};

// The three tensors of a test expert (w1, w2, w3 sizes) from the first one's
// bytes: unequal on purpose, one not a multiple of 8.
inline std::vector<uint64_t> ThreeTensorBytes(uint64_t first) { return {first, first / 2, first + 24}; }

// "EPLB-ERROR kind=<timeout|error|invalid> rank=R peer=P layer=L op=O ms=T: what"
void ReportError(const std::exception& e, double ms);

// The "ms=<n>" of the first EPLB-ERROR line in a worker's stderr; -1 if none.
double ReportedMs(const std::string& text);

// Milliseconds since `start`, for ReportError.
double MsSince(Clock::time_point start);

}  // namespace eplb::test
