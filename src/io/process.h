// Child processes: run an executable with extra environment variables and its
// output sent to files, wait for it with a deadline, signal or kill it.
// Ranks of a run are real OS processes (tests, benchmarks, `eplb demo`); this
// is the one place that forks them.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eplb/deadline.h"

namespace eplb::io {

struct SpawnOptions {
  // argv[0] is the executable's path (not searched in PATH).
  std::vector<std::string> argv;
  // Added to the parent's environment, replacing variables of the same name.
  std::vector<std::pair<std::string, std::string>> env;
  // Files that receive the child's stdout / stderr (created or truncated).
  // Empty: the child shares the parent's.
  std::string stdout_path;
  std::string stderr_path;
  // Kill the child (SIGKILL) when the thread that spawned it exits, so a
  // crashed test or launcher leaves no rank behind.
  bool die_with_parent = true;
};

// How a child ended.
struct ExitStatus {
  bool exited = false;  // returned from main / called exit
  int code = -1;        // exit code when exited
  int signal = 0;       // terminating signal otherwise
  bool ok() const { return exited && code == 0; }
  // "exit 0", "exit 3", "killed by signal 9 (Killed)".
  std::string Describe() const;
};

class Process {
 public:
  // Forks and executes. Throws eplb::Error (layer "process") when the
  // executable cannot be started; the child exits 127 when exec fails.
  static Process Spawn(const SpawnOptions& options);

  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Kills (SIGKILL) and reaps a child still running.
  ~Process();

  pid_t pid() const { return pid_; }
  // Reaps without blocking; true while the child runs.
  bool Running();
  // Waits until the child ends or the deadline passes (nullopt then; the
  // child keeps running).
  std::optional<ExitStatus> Wait(Deadline deadline);
  // Sends a signal to a running child (no-op once it ended).
  void Signal(int sig);
  // SIGKILL, then reaps.
  ExitStatus Kill();
  // The exit status once reaped.
  const std::optional<ExitStatus>& status() const { return status_; }

 private:
  bool Reap(bool block);

  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// Absolute path of the running executable (/proc/self/exe), so a program can
// start more copies of itself with a role argument.
std::string SelfExecutable();

// The arguments this process was started with, argv[0] first
// (/proc/self/cmdline), so a launcher can start copies of itself with the
// same options written once. Throws Error when they cannot be read.
std::vector<std::string> SelfArguments();

}  // namespace eplb::io
