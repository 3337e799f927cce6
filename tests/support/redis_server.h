// A real redis-server for tests: started on a free loopback port, with no
// persistence, stopped (and its files removed) when the object goes away.
#pragma once

#include <string>
#include <vector>

#include "io/process.h"

namespace eplb::test {

struct RedisServerOptions {
  std::string password;       // --requirepass: the default user's password
  std::string acl_user;       // an ACL user with every right and key ...
  std::string acl_password;   // ... and this password
};

class RedisServer {
 public:
  // Starts redis-server (from PATH or /usr/bin) and waits until it answers
  // PING. Throws std::runtime_error saying why when it cannot (not installed:
  // run scripts/setup.sh).
  explicit RedisServer(RedisServerOptions options = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string spec() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  // SIGTERM, then waits for it to exit (SIGKILL after 5 s).
  void Stop();
  bool running() { return process_.Running(); }

  // As any client of the server can (with the default user's password when
  // there is one): the keys matching `pattern` (KEYS), and a value written
  // raw with SETNX (true when it was absent).
  std::vector<std::string> Keys(const std::string& pattern);
  bool SetRaw(const std::string& key, const std::string& value);

 private:
  RedisServerOptions options_;
  int port_ = 0;
  std::string dir_;
  io::Process process_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

}  // namespace eplb::test
