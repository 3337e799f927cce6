#include "io/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "util/backoff.h"
#include "eplb/error.h"

extern char** environ;

namespace eplb::io {
namespace {

int OpenOutput(const std::string& path) {
  if (path.empty()) return -1;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("process", "spawn", "cannot open " + path + ": " + std::strerror(errno));
  }
  return fd;
}

}  // namespace

std::string ExitStatus::Describe() const {
  if (exited) return "exit " + std::to_string(code);
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "unknown status";
}

Process Process::Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) throw Error("process", "spawn", "empty argv");
  if (::access(options.argv[0].c_str(), X_OK) != 0) {
    throw Error("process", "spawn",
                "cannot execute " + options.argv[0] + ": " + std::strerror(errno));
  }
  // Everything the child needs is prepared before fork: between fork and
  // exec a multi-threaded parent's child may only make async-signal-safe calls.
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : options.env) env[k] = v;
  std::vector<std::string> env_strings;
  env_strings.reserve(env.size());
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = options.argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int out = OpenOutput(options.stdout_path);
  int err = -1;
  try {
    err = OpenOutput(options.stderr_path);
  } catch (...) {
    if (out >= 0) ::close(out);
    throw;
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
    throw Error("process", "spawn", std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    if (options.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
    }
    if (out >= 0 && ::dup2(out, STDOUT_FILENO) < 0) ::_exit(127);
    if (err >= 0 && ::dup2(err, STDERR_FILENO) < 0) ::_exit(127);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  if (out >= 0) ::close(out);
  if (err >= 0) ::close(err);
  Process p;
  p.pid_ = pid;
  return p;
}

Process::Process(Process&& other) noexcept { *this = std::move(other); }

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) Kill();
    pid_ = other.pid_;
    status_ = other.status_;
    other.pid_ = -1;
    other.status_.reset();
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0 && !status_) Kill();
}

bool Process::Reap(bool block) {
  if (pid_ <= 0 || status_) return true;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  ExitStatus s;
  if (r < 0) {
    s.exited = false;  // reaped elsewhere (SIGCHLD ignored): unknown status
  } else if (WIFEXITED(st)) {
    s.exited = true;
    s.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    s.signal = WTERMSIG(st);
  }
  status_ = s;
  return true;
}

bool Process::Running() { return !Reap(false); }

std::optional<ExitStatus> Process::Wait(Deadline deadline) {
  util::Backoff backoff;
  while (!Reap(false)) {
    if (Expired(deadline)) return std::nullopt;
    backoff.Sleep();
  }
  return status_;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !status_ && Running()) ::kill(pid_, sig);
}

ExitStatus Process::Kill() {
  if (pid_ <= 0) return ExitStatus{};
  if (!status_) {
    ::kill(pid_, SIGKILL);
    Reap(true);
  }
  return *status_;
}

std::string SelfExecutable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

std::vector<std::string> SelfArguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  if (args.empty()) throw Error("process", "read own arguments", "/proc/self/cmdline is empty or unreadable");
  return args;
}

}  // namespace eplb::io
