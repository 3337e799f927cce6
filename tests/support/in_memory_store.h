// An in-process fake of eplb::Store, for protocol logic tested in one
// process (the handshake's rule, the first-record-stands decision): a map
// under a mutex, Get waiting on a condition variable until its deadline.
// Tests of real processes use the real stores (FileStore, RedisStore).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "eplb/store.h"
#include "util/mutex.h"

namespace eplb::test {

class InMemoryStore final : public Store {
 public:
  std::string_view kind() const override { return "memory"; }
  // Keys are write-once, as in the real stores: a second Set throws Error.
  void Set(const std::string& key, std::span<const uint8_t> value) override;
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override;
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override;

  bool Has(const std::string& key);

 private:
  util::Mutex mu_;
  util::CondVar set_;
  std::map<std::string, std::vector<uint8_t>> values_ GUARDED_BY(mu_);
};

}  // namespace eplb::test
