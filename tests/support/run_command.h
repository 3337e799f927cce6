// Runs a real process for tests (through io::Process): argv in, exit status
// and both output streams out. The child is killed if it outlives the deadline.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace eplb::test {

struct CommandResult {
  int exit_code = -1;      // exit status, or 128 + signal when killed by one
  bool timed_out = false;  // killed at the deadline
  std::string out, err;    // stdout, stderr
};

using Environment = std::vector<std::pair<std::string, std::string>>;

// Starts argv[0] (a path) with argv, and `env` added to this process's
// environment; waits at most `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60), Environment env = {});

// RunCommand of the built eplb binary with these arguments.
CommandResult RunCli(const std::vector<std::string>& args,
                     std::chrono::milliseconds timeout = std::chrono::seconds(60), Environment env = {});

}  // namespace eplb::test
