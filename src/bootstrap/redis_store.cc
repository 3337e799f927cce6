// eplb::Store over Gloo's RedisStore (a real redis-server).
// Debian installs hiredis.h under hiredis/.
#define HIREDIS_NESTED_INCLUDE 1
#include <gloo/rendezvous/redis_store.h>

#include <cstdarg>

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
  // One command's reply (nullptr with the connection's error when none came).
  redisReply* Command(const char* format, ...) {
    va_list args;
    va_start(args, format);
    void* reply = redisvCommand(redis_, format, args);
    va_end(args);
    return static_cast<redisReply*>(reply);
  }
  const char* ConnectionError() const { return redis_->errstr; }
};

// Frees a hiredis reply when it goes out of scope.
struct Reply {
  redisReply* r;
  ~Reply() {
    if (r != nullptr) freeReplyObject(r);
  }
};

class RedisStoreImpl final : public Store {
 public:
  RedisStoreImpl(const std::string& host, int port, const RedisAuth& auth)
      : where_("redis://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
               std::to_string(port)) {
    try {
      gloo_ = std::make_unique<GlooRedisStore>(host, port);
    } catch (const std::exception& e) {
      throw Error("store", "connect", "cannot reach redis server at " + where_ + ": " + e.what());
    }
    gloo_->SetCommandTimeout(std::chrono::seconds(5));
    io::SigpipeBlock no_sigpipe;
    util::MutexLock lock(&mu_);
    if (!auth.password.empty()) Authenticate(auth);
    // Does the server want credentials this store was not given? Better said
    // here than as a NOAUTH on the first key.
    Reply ping{gloo_->Command("PING")};
    if (ping.r == nullptr)
      throw Error("store", "connect", "redis server at " + where_ + " did not answer PING: " + gloo_->ConnectionError());
    if (ping.r->type == REDIS_REPLY_ERROR) {
      const std::string what(ping.r->str, ping.r->len);
      if (what.rfind("NOAUTH", 0) == 0)
        throw Error("store", "connect",
                    "redis server at " + where_ +
                        " requires authentication: give the password in the store spec "
                        "(redis://[user:]password@host:port) or in EPLB_REDIS_PASSWORD (an ACL user in "
                        "EPLB_REDIS_USER)");
      throw Error("store", "connect", "redis server at " + where_ + " refused PING: " + what);
    }
  }

  std::string_view kind() const override { return "redis"; }

  // AUTH [user] password. The server's answer says why it refused (WRONGPASS
  // ...); the password is never part of a message.
  void Authenticate(const RedisAuth& auth) REQUIRES(mu_) {
    const std::string who = auth.user.empty() ? "the default user" : "user '" + auth.user + "'";
    Reply reply{auth.user.empty()
                    ? gloo_->Command("AUTH %b", auth.password.data(), auth.password.size())
                    : gloo_->Command("AUTH %b %b", auth.user.data(), auth.user.size(), auth.password.data(),
                                     auth.password.size())};
    if (reply.r == nullptr)
      throw Error("store", "auth", "redis server at " + where_ + ": no answer to AUTH as " + who + ": " +
                                       gloo_->ConnectionError());
    if (reply.r->type == REDIS_REPLY_ERROR)
      throw Error("store", "auth", "redis server at " + where_ + " refused AUTH as " + who + ": " +
                                       std::string(reply.r->str, reply.r->len));
  }

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

std::shared_ptr<Store> MakeRedisStore(const std::string& host, int port, const RedisAuth& auth) {
  return std::make_shared<RedisStoreImpl>(host, port, auth);
}

}  // namespace eplb
