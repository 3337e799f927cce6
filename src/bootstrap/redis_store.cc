// eplb::Store over Gloo's RedisStore (a real redis-server).
// Debian installs hiredis.h under hiredis/.
#define HIREDIS_NESTED_INCLUDE 1
#include <gloo/rendezvous/redis_store.h>


#include "bootstrap/store_util.h"
#include "util/backoff.h"
#include "eplb/bootstrap.h"
#include "io/sigpipe.h"
#include "util/mutex.h"

namespace eplb {
namespace {

// Gloo's RedisStore with its hiredis context reachable, to give every command
// a timeout (Gloo sets none: a stalled server would block forever), and its
// check() polled under eplb's deadline (Gloo's get() waits a fixed 30 s).
class GlooRedisStore : public gloo::rendezvous::RedisStore {
 public:
  using RedisStore::RedisStore;
  void SetCommandTimeout(std::chrono::milliseconds t) {
    struct timeval tv;
    tv.tv_sec = t.count() / 1000;
    tv.tv_usec = (t.count() % 1000) * 1000;
    redisSetTimeout(redis_, tv);
  }
};

class RedisStoreImpl final : public Store {
 public:
  RedisStoreImpl(const std::string& host, int port)
      : where_("redis://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
               std::to_string(port)) {
    try {
      gloo_ = std::make_unique<GlooRedisStore>(host, port);
    } catch (const std::exception& e) {
      throw Error("store", "connect", "cannot reach redis server at " + where_ + ": " + e.what());
    }
    gloo_->SetCommandTimeout(std::chrono::seconds(5));
  }

  std::string_view kind() const override { return "redis"; }

  void Set(const std::string& key, std::span<const uint8_t> value) override {
    std::vector<char> data(value.begin(), value.end());
    util::MutexLock lock(&mu_);
    io::SigpipeBlock no_sigpipe;  // a server gone is an error, not a signal
    try {
      gloo_->set(key, data);
    } catch (const std::exception& e) {
      std::string what = e.what();
      if (what.find("already set") != std::string::npos) {
        throw Error("store", "set", "key '" + key + "' is already set on " + where_ +
                                        " (keys are write-once; reusing a run id? set EPLB_RUN_ID)");
      }
      throw Error("store", "set", "key '" + key + "' on " + where_ + ": " + what);
    }
  }

  // Gloo's set is SETNX, atomic on the server: a key already set means
  // another writer won, and its value stands.
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    try {
      Set(key, value);
      return std::vector<uint8_t>(value.begin(), value.end());
    } catch (const Error& e) {
      if (std::string(e.what()).find("already set") == std::string::npos) throw;
    }
    return Get(key, Clock::now());
  }

  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    auto start = Clock::now();
    io::SigpipeBlock no_sigpipe;  // a server gone is an error, not a signal
    bool found = util::PollUntil([&] {
      util::MutexLock lock(&mu_);
      try {
        return gloo_->check({key});
      } catch (const std::exception& e) {
        throw Error("store", "get", "key '" + key + "' on " + where_ + ": " + e.what());
      }
    }, deadline, util::Backoff());
    if (!found) {
      throw TimeoutError("store", "get",
                         "key '" + key + "' not set within " + bootstrap::Seconds(Clock::now() - start) +
                             " (" + where_ + ")");
    }
    std::vector<char> data;
    try {
      util::MutexLock lock(&mu_);
      data = gloo_->get(key);
    } catch (const std::exception& e) {
      throw Error("store", "get", "key '" + key + "' on " + where_ + ": " + e.what());
    }
    return std::vector<uint8_t>(data.begin(), data.end());
  }

 private:
  std::string where_;
  util::Mutex mu_;  // one hiredis connection: one command at a time
  std::unique_ptr<GlooRedisStore> gloo_ PT_GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<Store> MakeRedisStore(const std::string& host, int port) {
  return std::make_shared<RedisStoreImpl>(host, port);
}

}  // namespace eplb
