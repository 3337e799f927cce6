#include "support/in_memory_store.h"

#include "eplb/error.h"

namespace eplb::test {

void InMemoryStore::Set(const std::string& key, std::span<const uint8_t> value) {
  {
    util::MutexLock lock(&mu_);
    if (!values_.emplace(key, std::vector<uint8_t>(value.begin(), value.end())).second)
      throw Error("store", "set", "key '" + key + "' is already set in the in-memory store");
  }
  set_.NotifyAll();
}

std::vector<uint8_t> InMemoryStore::Get(const std::string& key, Deadline deadline) {
  util::MutexLock lock(&mu_);
  for (;;) {
    auto it = values_.find(key);
    if (it != values_.end()) return it->second;
    if (!set_.WaitUntil(&mu_, deadline) && !values_.count(key))
      throw TimeoutError("store", "get", "key '" + key + "' not set in the in-memory store");
  }
}

std::vector<uint8_t> InMemoryStore::SetIfAbsent(const std::string& key, std::span<const uint8_t> value) {
  std::vector<uint8_t> stands;
  {
    util::MutexLock lock(&mu_);
    stands = values_.emplace(key, std::vector<uint8_t>(value.begin(), value.end())).first->second;
  }
  set_.NotifyAll();
  return stands;
}

bool InMemoryStore::Has(const std::string& key) {
  util::MutexLock lock(&mu_);
  return values_.count(key) > 0;
}

}  // namespace eplb::test
