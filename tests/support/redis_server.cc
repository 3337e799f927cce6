#include "support/redis_server.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "support/paths.h"

namespace eplb::test {
namespace {

std::string FindRedisServer() {
  if (const char* path = std::getenv("PATH")) {
    std::string p(path);
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      auto candidate = std::filesystem::path(p.substr(start, end - start)) / "redis-server";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
      start = end + 1;
    }
  }
  for (const char* c : {"/usr/bin/redis-server", "/usr/local/bin/redis-server"}) {
    if (::access(c, X_OK) == 0) return c;
  }
  throw std::runtime_error("redis-server not found in PATH or /usr/bin (run scripts/setup.sh)");
}

// A connection, authenticated with `password` when one is given; nullptr
// when the server cannot be reached.
redisContext* Connect(int port, const std::string& password) {
  struct timeval tv = {0, 200000};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c == nullptr) return nullptr;
  if (c->err != 0) {
    redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, tv);
  if (!password.empty()) {
    auto* reply = static_cast<redisReply*>(redisCommand(c, "AUTH %b", password.data(), password.size()));
    if (reply) freeReplyObject(reply);
  }
  return c;
}

bool Pings(int port, const std::string& password) {
  redisContext* c = Connect(port, password);
  if (c == nullptr) return false;
  auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
  const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
  if (reply) freeReplyObject(reply);
  redisFree(c);
  return ok;
}

}  // namespace

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

RedisServer::RedisServer(RedisServerOptions options) : options_(std::move(options)) {
  const std::string exe = FindRedisServer();
  dir_ = MakeTempDir("eplb-redis-");
  std::string last_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = FreeLoopbackPort();
    io::SpawnOptions spawn;
    spawn.argv = {exe, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", dir_, "--protected-mode", "no", "--loglevel", "warning"};
    if (!options_.password.empty()) spawn.argv.insert(spawn.argv.end(), {"--requirepass", options_.password});
    if (!options_.acl_user.empty())
      spawn.argv.insert(spawn.argv.end(), {"--user", options_.acl_user, "on", ">" + options_.acl_password, "~*", "&*", "+@all"});
    spawn.stdout_path = dir_ + "/redis.log";
    spawn.stderr_path = dir_ + "/redis.err";
    process_ = io::Process::Spawn(spawn);
    auto deadline = DeadlineAfter(std::chrono::seconds(5));
    while (!Expired(deadline) && process_.Running()) {
      if (Pings(port_, options_.password)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    last_error = process_.Running() ? "no answer to PING within 5 s" : "exited: " + process_.Kill().Describe();
    process_.Kill();
  }
  throw std::runtime_error("could not start redis-server (" + exe + "): " + last_error + "; log in " + dir_);
}

std::vector<std::string> RedisServer::Keys(const std::string& pattern) {
  std::vector<std::string> keys;
  redisContext* c = Connect(port_, options_.password);
  if (c == nullptr) throw std::runtime_error("cannot reach the test's redis-server");
  auto* reply = static_cast<redisReply*>(redisCommand(c, "KEYS %b", pattern.data(), pattern.size()));
  if (reply != nullptr && reply->type == REDIS_REPLY_ARRAY)
    for (size_t i = 0; i < reply->elements; ++i) keys.emplace_back(reply->element[i]->str, reply->element[i]->len);
  if (reply) freeReplyObject(reply);
  redisFree(c);
  return keys;
}

bool RedisServer::SetRaw(const std::string& key, const std::string& value) {
  redisContext* c = Connect(port_, options_.password);
  if (c == nullptr) throw std::runtime_error("cannot reach the test's redis-server");
  auto* reply = static_cast<redisReply*>(
      redisCommand(c, "SETNX %b %b", key.data(), key.size(), value.data(), value.size()));
  const bool set = reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
  if (reply) freeReplyObject(reply);
  redisFree(c);
  return set;
}

void RedisServer::Stop() {
  if (!process_.Running()) return;
  process_.Signal(SIGTERM);
  if (!process_.Wait(DeadlineAfter(std::chrono::seconds(5)))) process_.Kill();
}

RedisServer::~RedisServer() {
  Stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace eplb::test
