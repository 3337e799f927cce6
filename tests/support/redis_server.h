// A real redis-server for tests: started on a free loopback port, with no
// persistence, stopped (and its files removed) when the object goes away.
#pragma once

#include <string>

#include "io/process.h"

namespace eplb::test {

class RedisServer {
 public:
  // Starts redis-server (from PATH or /usr/bin) and waits until it answers
  // PING. Throws std::runtime_error saying why when it cannot (not installed:
  // run scripts/setup.sh).
  RedisServer();
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string spec() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  // SIGTERM, then waits for it to exit (SIGKILL after 5 s).
  void Stop();
  bool running() { return process_.Running(); }

 private:
  int port_ = 0;
  std::string dir_;
  io::Process process_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

}  // namespace eplb::test
