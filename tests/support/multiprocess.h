// Real multi-process tests: a test binary starts copies of itself as the
// ranks of a run, as a launcher would.
//
// A worker is a function registered with EPLB_TEST_WORKER(name). The test
// executable's main (support/main/test_main.cc) runs that worker instead of
// the tests when started as `<test binary> --eplb-worker=NAME [args...]`. The
// worker learns its rank like any launched rank: ReadLaunchEnv (RANK,
// WORLD_SIZE, EPLB_STORE, EPLB_RUN_ID). Its exit code is the process's.
#pragma once

#include <signal.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eplb/deadline.h"
#include "io/process.h"

namespace eplb::test {

using WorkerFn = int (*)(const std::vector<std::string>& args);

struct WorkerRegistration {
  WorkerRegistration(const char* name, WorkerFn fn);
};

#define EPLB_TEST_WORKER(name)                                                          \
  static int EplbTestWorker_##name(const std::vector<std::string>& args);              \
  static ::eplb::test::WorkerRegistration eplb_test_worker_registration_##name(#name,  \
                                                                               EplbTestWorker_##name); \
  static int EplbTestWorker_##name(const std::vector<std::string>& args)

// Called first thing in main: runs the worker named by --eplb-worker=NAME and
// returns its exit code (70 after an uncaught exception, printed to stderr);
// nullopt when this process is not a worker.
std::optional<int> MaybeRunWorker(int argc, char** argv);

struct RankExit {
  int rank = -1;
  io::ExitStatus status;
  bool timed_out = false;    // still running at the deadline: killed by Wait
  Clock::time_point ended;   // when it was seen to end
  std::string stderr_text;
};

struct GroupOptions {
  std::string worker;                   // EPLB_TEST_WORKER name
  int world_size = 2;
  std::vector<std::string> args;        // passed to every rank's worker
  std::vector<int> ranks;               // ranks to start; empty: all
  std::string store_spec;               // empty: a fresh file store (file:<dir>/store)
  bool set_store_env = true;            // false: no EPLB_STORE (the launcher's MASTER_* name it)
  std::vector<std::pair<std::string, std::string>> env;  // extra environment, every rank
  bool job_token = true;                // a fresh EPLB_JOB_TOKEN for the group (false: an open run)
};

// GroupOptions for `world_size` ranks of `worker`, every one given `args`.
inline GroupOptions Ranks(std::string worker, int world_size, std::vector<std::string> args = {}) {
  GroupOptions o;
  o.worker = std::move(worker);
  o.world_size = world_size;
  o.args = std::move(args);
  return o;
}

// N ranks of one run, each a real process with RANK / WORLD_SIZE /
// LOCAL_RANK / LOCAL_WORLD_SIZE / EPLB_STORE / EPLB_RUN_ID / EPLB_JOB_TOKEN set, stdout and
// stderr in files under dir(). Killed (SIGKILL) on destruction if still running.
class RankGroup {
 public:
  explicit RankGroup(GroupOptions options);
  ~RankGroup();

  const std::string& dir() const { return dir_; }
  const std::string& store_spec() const { return store_spec_; }
  std::string run_id() const { return run_id_; }
  // The group's EPLB_JOB_TOKEN; empty for an open run.
  const std::string& job_token() const { return job_token_; }

  // Sends a signal to a rank and records when (killed_at).
  void Kill(int rank, int sig = SIGKILL);
  Clock::time_point killed_at(int rank) const { return killed_at_.at(rank); }

  // Waits until `text` appears in a rank's stderr (progress markers); false at
  // the deadline or when the rank ended without printing it.
  bool WaitForText(int rank, const std::string& text, Deadline deadline);

  // Waits for every started rank; those still running at the deadline are
  // killed and marked timed_out. Indexed like GroupOptions::ranks (all ranks
  // in order by default).
  std::vector<RankExit> Wait(Deadline deadline);

  std::string Stderr(int rank) const;

 private:
  struct Member {
    int rank;
    io::Process process;
    std::optional<Clock::time_point> ended;
  };
  GroupOptions options_;
  std::string dir_;
  std::string store_spec_;
  std::string run_id_;
  std::string job_token_;
  std::vector<Member> members_;
  std::map<int, Clock::time_point> killed_at_;
};

// A human summary of exits for assertion messages: rank, status, stderr tail.
std::string Describe(const std::vector<RankExit>& exits);

}  // namespace eplb::test
