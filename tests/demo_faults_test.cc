// `eplb demo` with one rank process stopped (SIGSTOP, SIGCONT 3 s later) or
// killed (SIGKILL) during a migration, through the real binary and its real
// rank processes: every other rank's engine step fails within the deadline
// (--deadline-ms 1000) + 1 s naming the victim, the launcher prints one
// verdict naming it (and, after a stop, that the victim found it was left
// behind), exits non-zero, and writes no report (nothing half-written).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/files.h"
#include "io/process.h"
#include "support/paths.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;

constexpr int kVictim = 2;
constexpr int kDeadlineMs = 1000;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The pid of rank `rank` among the launcher's children (they carry RANK in
// their environment); -1 if none.
pid_t RankPid(pid_t launcher, int rank) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(Slurp(entry.path().string() + "/stat"));
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != launcher) continue;
    const std::string env = Slurp(entry.path().string() + "/environ");
    if (env.find(std::string("RANK=") + std::to_string(rank) + '\0') == 0 ||
        env.find(std::string("\0RANK=", 6) + std::to_string(rank) + '\0') != std::string::npos)
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// Seconds since local midnight, now and of an "HH:MM:SS.mmm" the launcher printed.
double SecondsOfDay() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  const double ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec + ms / 1000;
}
double SecondsOfDay(const std::string& hms) {
  return std::stoi(hms.substr(0, 2)) * 3600 + std::stoi(hms.substr(3, 2)) * 60 + std::stod(hms.substr(6));
}

struct FaultRun {
  int exit_code = -1;
  std::string out, err;
  double fault_at = 0;  // seconds of day
};

FaultRun RunWithFault(int signal, std::chrono::milliseconds stop_for) {
  const std::string tmp = test::MakeTempDir("eplb-demo-faults-");
  io::SpawnOptions so;
  so.argv = {test::CliPath(), "demo", "--ranks", "4", "--layers", "20", "--experts", "32", "--groups", "4",
             "--expert-bytes", "65536", "--steps", "1500", "--interval", "300", "--window", "50", "--step-ms", "2",
             "--tokens", "64", "--deadline-ms", std::to_string(kDeadlineMs), "--json"};
  so.env = {{"TMPDIR", tmp}, {"EPLB_NIXL_DIR", "none"}};
  so.stdout_path = tmp + "/out";
  so.stderr_path = tmp + "/err";
  io::Process launcher = io::Process::Spawn(so);
  FaultRun run;
  // The victim's log says when the first cycle migrates.
  std::string log;
  const Deadline ready_by = DeadlineAfter(60s);
  while (!Expired(ready_by)) {
    for (const auto& e : std::filesystem::directory_iterator(tmp))
      if (e.path().filename().string().rfind("eplb-demo-", 0) == 0)
        log = e.path().string() + "/rank" + std::to_string(kVictim) + ".log";
    if (!log.empty() && Slurp(log).find("layers change; migrating") != std::string::npos) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(Slurp(log).find("layers change; migrating"), std::string::npos) << "no migration began";
  std::this_thread::sleep_for(100ms);
  const pid_t victim = RankPid(launcher.pid(), kVictim);
  EXPECT_GT(victim, 0) << "rank " << kVictim << "'s process not found";
  if (victim > 0) {
    run.fault_at = SecondsOfDay();
    ::kill(victim, signal);
    if (signal == SIGSTOP) {
      std::this_thread::sleep_for(stop_for);
      ::kill(victim, SIGCONT);
    }
  }
  auto status = launcher.Wait(DeadlineAfter(90s));
  if (!status) status = launcher.Kill();
  run.exit_code = status->exited ? status->code : 128 + status->signal;
  run.out = Slurp(so.stdout_path);
  run.err = Slurp(so.stderr_path);
  std::filesystem::remove_all(tmp);
  return run;
}

// Every survivor's line in the verdict names the victim, and it failed
// within deadline + 1 s of the fault.
void ExpectSurvivorsNamedTheVictimInTime(const FaultRun& run) {
  for (int r = 0; r < 4; ++r) {
    if (r == kVictim) continue;
    std::smatch m;
    const std::regex line("\\n  rank " + std::to_string(r) + " \\(exit 1, failed at ([0-9:.]+)\\): ([^\\n]*)");
    ASSERT_TRUE(std::regex_search(run.err, m, line)) << "no line for rank " << r << "\n" << run.err;
    EXPECT_THAT(m[2].str(), testing::StartsWith("rank 2 stalled or died: the engine step's all-reduce at step "));
    EXPECT_LE(SecondsOfDay(m[1].str()) - run.fault_at, (kDeadlineMs + 1000) / 1000.0) << m[0].str();
  }
}

TEST(DemoFaults, ARankStoppedDuringAMigrationIsNamedByEveryOtherAndKnowsItWasLeftBehind) {
  const FaultRun run = RunWithFault(SIGSTOP, 3s);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_EQ(run.out, "") << "a failed run writes no report";
  EXPECT_THAT(run.err,
              HasSubstr("eplb demo: FAILED: rank 2 stalled or died: ranks 0, 1, 3 blamed it; it found that it was "
                        "left behind\n"));
  ExpectSurvivorsNamedTheVictimInTime(run);
  EXPECT_TRUE(std::regex_search(run.err, std::regex("\n  rank 2 \\(exit 1, failed at [0-9:.]+\\): this rank was "
                                                     "stalled or left behind: ranks 0, 1, 3 blamed rank 2 \\(this rank\\)")))
      << run.err;
}

TEST(DemoFaults, ARankKilledDuringAMigrationIsNamedByEveryOther) {
  const FaultRun run = RunWithFault(SIGKILL, 0ms);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_EQ(run.out, "") << "a failed run writes no report";
  EXPECT_THAT(run.err, HasSubstr("eplb demo: FAILED: rank 2 stalled or died: ranks 0, 1, 3 blamed it\n"));
  ExpectSurvivorsNamedTheVictimInTime(run);
  EXPECT_THAT(run.err, HasSubstr("\n  rank 2 (killed by signal 9 (Killed)): no failure recorded"));
}

}  // namespace
}  // namespace eplb
