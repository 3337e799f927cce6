// eplb::Store over Gloo's FileStore: one file per key (0600) in a directory
// of this user's that nobody else may write to (0700 when eplb creates it).
#include <gloo/rendezvous/file_store.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
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

// The store's folder, private to this user: an existing one must be a
// directory of this user that no one else may write to (group or others
// could otherwise add, replace or remove keys); a missing one is created
// 0700, with any missing parents.
void OpenPrivateDirectory(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT)
      throw Error("store", "open", "file store " + dir + ": cannot stat: " + std::strerror(errno));
    const std::filesystem::path path(dir);
    std::filesystem::path at;
    for (const auto& part : path) {
      at /= part;
      if (::mkdir(at.c_str(), 0700) != 0 && errno != EEXIST)
        throw Error("store", "open", "cannot create file store directory " + at.string() + ": " + std::strerror(errno));
    }
    // The mode exactly, whatever the umask took away.
    if (::chmod(dir.c_str(), 0700) != 0 || ::stat(dir.c_str(), &st) != 0)
      throw Error("store", "open", "file store " + dir + ": cannot make it 0700: " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) throw InvalidArgument("file store " + dir + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    throw InvalidArgument("file store " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                          ", not to this user (uid " + std::to_string(::geteuid()) +
                          "): its owner could read and change the run's keys; use a folder of your own");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw InvalidArgument("file store " + dir + " has mode " + mode + ": " +
                          ((st.st_mode & S_IWOTH) ? "others" : "its group") +
                          " may write to it, and so add, replace or remove the run's keys; chmod go-w it "
                          "(or let eplb create the folder: 0700)");
  }
}

class FileStoreImpl final : public Store {
 public:
  explicit FileStoreImpl(const std::string& dir) : dir_(dir) {
    OpenPrivateDirectory(dir);
    try {
      gloo_ = std::make_unique<GlooFileStore>(dir);
    } catch (const std::exception& e) {
      throw Error("store", "open", "file store " + dir + ": " + e.what());
    }
  }

  std::string_view kind() const override { return "file"; }

  // Write-once: the value goes to a file of this writer's own (0600), then
  // is hard-linked to the key's path, which fails with EEXIST if the key is
  // set (link(2) is atomic, like the rename Gloo's own set uses, and unlike
  // it never replaces a value; readers only ever see a complete file).
  void Set(const std::string& key, std::span<const uint8_t> value) override {
    if (!WriteNew(key, value, "set")) {
      throw Error("store", "set", "key '" + key + "' is already set in file store " + dir_ +
                                      " (keys are write-once; a stale run directory?)");
    }
  }

  // First writer wins across processes: the same write, and the value that
  // stands when another writer linked first.
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    if (WriteNew(key, value, "set-if-absent")) return std::vector<uint8_t>(value.begin(), value.end());
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
  // Writes `value` (behind the tag) as `key`'s file unless it exists:
  // false when it does. Throws Error naming `operation` on an I/O failure.
  bool WriteNew(const std::string& key, std::span<const uint8_t> value, const char* operation) {
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
      return Error("store", operation,
                   "key '" + key + "' in file store " + dir_ + ": " + what + ": " + std::strerror(err));
    };
    // 0600: the run's keys are this user's alone.
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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
      return true;
    }
    if (errno != EEXIST) throw fail("cannot link " + path);
    ::unlink(tmp.c_str());
    return false;
  }

  std::string dir_;
  util::Mutex mu_;  // Gloo's FileStore is not thread-safe
  std::unique_ptr<GlooFileStore> gloo_ PT_GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<Store> MakeFileStore(const std::string& dir) {
  return std::make_shared<FileStoreImpl>(dir);
}

}  // namespace eplb
