#include "bootstrap/gloo_store.h"

#include <algorithm>

namespace eplb::bootstrap {

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  store_.Set(prefix_ + key, {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  auto v = store_.Get(prefix_ + key, deadline_);
  return std::vector<char>(v.begin(), v.end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  for (const auto& key : keys) store_.Get(prefix_ + key, deadline_);
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  Deadline d = deadline_;
  if (timeout.count() >= 0) d = std::min(d, Clock::now() + timeout);
  for (const auto& key : keys) store_.Get(prefix_ + key, d);
}

}  // namespace eplb::bootstrap
