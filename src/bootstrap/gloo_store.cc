#include "bootstrap/gloo_store.h"

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

void GlooStoreAdapter::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) {
  // Gloo passes its context timeout here, which eplb sets to a per-connection
  // share of the budget (mesh.cc); the whole rendezvous's deadline bounds it.
  wait(keys);
}

}  // namespace eplb::bootstrap
