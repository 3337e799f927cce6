// eplb::Store over Gloo's FileStore: one file per key in a directory.
#include <gloo/rendezvous/file_store.h>

#include <filesystem>
#include <mutex>

#include "bootstrap/store_util.h"
#include "eplb/bootstrap.h"

namespace eplb {
namespace {

// Gloo's FileStore with its key check made reachable: Gloo's own get() waits
// with a fixed 30 s timeout, so eplb polls check() under its own deadline.
class GlooFileStore : public gloo::rendezvous::FileStore {
 public:
  using FileStore::FileStore;
  bool Has(const std::string& key) { return check({key}); }
};

// Gloo's FileStore refuses empty values, so every value is stored behind a
// one-byte tag.
constexpr char kTag = 'e';

class FileStoreImpl final : public Store {
 public:
  explicit FileStoreImpl(const std::string& dir) : dir_(dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error("store", "open", "cannot create file store directory " + dir + ": " + ec.message());
    try {
      gloo_ = std::make_unique<GlooFileStore>(dir);
    } catch (const std::exception& e) {
      throw Error("store", "open", "file store " + dir + ": " + e.what());
    }
  }

  std::string_view kind() const override { return "file"; }

  void Set(const std::string& key, std::span<const uint8_t> value) override {
    std::vector<char> data;
    data.reserve(value.size() + 1);
    data.push_back(kTag);
    data.insert(data.end(), value.begin(), value.end());
    std::lock_guard<std::mutex> lock(mu_);
    if (gloo_->Has(key)) {
      throw Error("store", "set", "key '" + key + "' is already set in file store " + dir_ +
                                      " (keys are write-once; a stale run directory?)");
    }
    try {
      gloo_->set(key, data);
    } catch (const std::exception& e) {
      throw Error("store", "set", "key '" + key + "' in file store " + dir_ + ": " + e.what());
    }
  }

  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    auto start = Clock::now();
    bool found = bootstrap::PollUntil(deadline, [&] {
      std::lock_guard<std::mutex> lock(mu_);
      return gloo_->Has(key);
    });
    if (!found) {
      throw TimeoutError("store", "get",
                         "key '" + key + "' not set within " + bootstrap::Seconds(Clock::now() - start) +
                             " (file store " + dir_ + ")");
    }
    std::vector<char> data;
    try {
      std::lock_guard<std::mutex> lock(mu_);
      data = gloo_->get(key);
    } catch (const std::exception& e) {
      throw Error("store", "get", "key '" + key + "' in file store " + dir_ + ": " + e.what());
    }
    if (data.empty() || data[0] != kTag) {
      throw Error("store", "get", "key '" + key + "' in file store " + dir_ + " was not written by eplb");
    }
    return std::vector<uint8_t>(data.begin() + 1, data.end());
  }

 private:
  std::string dir_;
  std::mutex mu_;  // Gloo's FileStore is not thread-safe
  std::unique_ptr<GlooFileStore> gloo_;
};

}  // namespace

std::shared_ptr<Store> MakeFileStore(const std::string& dir) {
  return std::make_shared<FileStoreImpl>(dir);
}

}  // namespace eplb
