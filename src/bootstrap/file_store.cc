// eplb::Store over Gloo's FileStore: one file per key in a directory.
#include <gloo/rendezvous/file_store.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "bootstrap/store_util.h"
#include "util/backoff.h"
#include "eplb/bootstrap.h"
#include "util/mutex.h"

namespace eplb {
namespace {

// Gloo's FileStore with its key check made reachable: Gloo's own get() waits
// with a fixed 30 s timeout, so eplb polls check() under its own deadline.
class GlooFileStore : public gloo::rendezvous::FileStore {
 public:
  using FileStore::FileStore;
  bool Has(const std::string& key) { return check({key}); }
  // Where Gloo keeps `key`: a value written there is what get() reads.
  std::string PathOf(const std::string& key) { return objectPath(key); }
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
    util::MutexLock lock(&mu_);
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

  // First writer wins across processes: the value is written to a file of
  // this writer's own, then hard-linked to the key's path, which fails with
  // EEXIST if another writer linked first (link(2) is atomic, and Gloo's
  // readers only ever see a complete file).
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    static std::atomic<uint64_t> serial{0};
    std::string path;
    {
      util::MutexLock lock(&mu_);
      path = gloo_->PathOf(key);
    }
    const std::string tmp = path + ".eplb-tmp-" + std::to_string(::getpid()) + "-" +
                            std::to_string(serial.fetch_add(1));
    auto fail = [&](const std::string& what) {
      const int err = errno;  // before unlink can change it
      ::unlink(tmp.c_str());
      return Error("store", "set-if-absent",
                   "key '" + key + "' in file store " + dir_ + ": " + what + ": " + std::strerror(err));
    };
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw fail("cannot create " + tmp);
    std::vector<char> data;
    data.reserve(value.size() + 1);
    data.push_back(kTag);
    data.insert(data.end(), value.begin(), value.end());
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        throw fail("cannot write " + tmp);
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) throw fail("cannot write " + tmp);
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return std::vector<uint8_t>(value.begin(), value.end());
    }
    if (errno != EEXIST) throw fail("cannot link " + path);
    ::unlink(tmp.c_str());
    return Get(key, Clock::now());
  }

  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    auto start = Clock::now();
    bool found = util::PollUntil([&] {
      util::MutexLock lock(&mu_);
      return gloo_->Has(key);
    }, deadline, util::Backoff());
    if (!found) {
      throw TimeoutError("store", "get",
                         "key '" + key + "' not set within " + bootstrap::Seconds(Clock::now() - start) +
                             " (file store " + dir_ + ")");
    }
    std::vector<char> data;
    try {
      util::MutexLock lock(&mu_);
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
  util::Mutex mu_;  // Gloo's FileStore is not thread-safe
  std::unique_ptr<GlooFileStore> gloo_ PT_GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<Store> MakeFileStore(const std::string& dir) {
  return std::make_shared<FileStoreImpl>(dir);
}

}  // namespace eplb
