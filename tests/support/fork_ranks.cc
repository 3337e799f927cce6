#include "support/fork_ranks.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <thread>

namespace eplb::test {

std::vector<RankOutcome> ForkRanks(int n, const std::function<std::string(int)>& rank_main,
                                   std::chrono::milliseconds timeout) {
  std::vector<pid_t> pids(n, -1);
  std::vector<int> pipes(n, -1);
  std::vector<RankOutcome> out(n);
  for (int r = 0; r < n; ++r) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::close(fds[0]);
      std::string msg;
      int code = 0;
      try {
        msg = rank_main(r);
      } catch (const std::exception& e) {
        msg = std::string("exception: ") + e.what();
      } catch (...) {
        msg = "unknown exception";
      }
      if (!msg.empty()) code = 1;
      size_t off = 0;
      while (off < msg.size()) {
        ssize_t w = ::write(fds[1], msg.data() + off, msg.size() - off);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
      ::_exit(code);  // no atexit handlers, no gtest teardown in the child
    }
    ::close(fds[1]);
    pids[r] = pid;
    pipes[r] = fds[0];
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int remaining = n;
  std::vector<bool> done(n, false);
  while (remaining > 0) {
    for (int r = 0; r < n; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        --remaining;
        out[r].ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (WIFSIGNALED(status)) out[r].signal = WTERMSIG(status);
      }
    }
    if (remaining == 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      for (int r = 0; r < n; ++r) {
        if (done[r]) continue;
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], nullptr, 0);
        out[r].timed_out = true;
        done[r] = true;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int r = 0; r < n; ++r) {
    char buf[4096];
    ssize_t got;
    while ((got = ::read(pipes[r], buf, sizeof buf)) > 0) out[r].message.append(buf, static_cast<size_t>(got));
    ::close(pipes[r]);
    if (out[r].timed_out && out[r].message.empty()) out[r].message = "killed at the test's deadline";
    if (out[r].signal && out[r].message.empty()) out[r].message = std::string("died of ") + ::strsignal(out[r].signal);
  }
  return out;
}

std::string Describe(const std::vector<RankOutcome>& outcomes) {
  std::string s;
  for (size_t r = 0; r < outcomes.size(); ++r) {
    if (!s.empty()) s += "; ";
    s += "rank " + std::to_string(r) + ": " + (outcomes[r].ok ? "ok" : outcomes[r].message);
  }
  return s;
}

}  // namespace eplb::test
