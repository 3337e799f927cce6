#include "support/multiprocess.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "eplb/bootstrap.h"
#include "support/paths.h"

namespace eplb::test {
namespace {

std::map<std::string, WorkerFn>& Workers() {
  static std::map<std::string, WorkerFn> workers;
  return workers;
}

constexpr const char* kWorkerFlag = "--eplb-worker=";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

WorkerRegistration::WorkerRegistration(const char* name, WorkerFn fn) { Workers()[name] = fn; }

std::optional<int> MaybeRunWorker(int argc, char** argv) {
  if (argc < 2 || std::strncmp(argv[1], kWorkerFlag, std::strlen(kWorkerFlag)) != 0) {
    return std::nullopt;
  }
  std::string name = argv[1] + std::strlen(kWorkerFlag);
  auto it = Workers().find(name);
  if (it == Workers().end()) {
    std::fprintf(stderr, "no test worker named '%s'\n", name.c_str());
    return 64;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return it->second(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker %s: uncaught exception: %s\n", name.c_str(), e.what());
    return 70;
  }
}

RankGroup::RankGroup(GroupOptions options) : options_(std::move(options)) {
  dir_ = MakeTempDir("eplb-ranks-");
  store_spec_ = options_.store_spec.empty() ? "file:" + dir_ + "/store" : options_.store_spec;
  // A run id unique to this group, so groups sharing a Redis server never meet.
  run_id_ = "test-" + std::to_string(::getpid()) + "-" +
            std::to_string(Clock::now().time_since_epoch().count());
  if (options_.job_token) job_token_ = GenerateJobToken();
  std::vector<int> ranks = options_.ranks;
  if (ranks.empty()) {
    for (int r = 0; r < options_.world_size; ++r) ranks.push_back(r);
  }
  const std::string self = io::SelfExecutable();
  for (int r : ranks) {
    io::SpawnOptions spawn;
    spawn.argv = {self, kWorkerFlag + options_.worker};
    spawn.argv.insert(spawn.argv.end(), options_.args.begin(), options_.args.end());
    spawn.env = {{"RANK", std::to_string(r)},
                 {"WORLD_SIZE", std::to_string(options_.world_size)},
                 {"LOCAL_RANK", std::to_string(r)},
                 {"LOCAL_WORLD_SIZE", std::to_string(options_.world_size)},
                 {"EPLB_RUN_ID", run_id_}};
    if (options_.set_store_env) spawn.env.push_back({"EPLB_STORE", store_spec_});
    if (!job_token_.empty()) spawn.env.push_back({"EPLB_JOB_TOKEN", job_token_});
    spawn.env.insert(spawn.env.end(), options_.env.begin(), options_.env.end());
    spawn.stdout_path = dir_ + "/rank" + std::to_string(r) + ".out";
    spawn.stderr_path = dir_ + "/rank" + std::to_string(r) + ".err";
    members_.push_back({r, io::Process::Spawn(spawn), std::nullopt});
  }
}

RankGroup::~RankGroup() {
  for (auto& m : members_) m.process.Kill();
  // Failures print the ranks' stderr (Describe); EPLB_KEEP_TEST_DIRS keeps the files.
  if (std::getenv("EPLB_KEEP_TEST_DIRS") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void RankGroup::Kill(int rank, int sig) {
  for (auto& m : members_) {
    if (m.rank == rank) {
      killed_at_[rank] = Clock::now();
      m.process.Signal(sig);
    }
  }
}

std::string RankGroup::Stderr(int rank) const {
  return ReadAll(dir_ + "/rank" + std::to_string(rank) + ".err");
}

bool RankGroup::WaitForText(int rank, const std::string& text, Deadline deadline) {
  for (;;) {
    if (Stderr(rank).find(text) != std::string::npos) return true;
    for (auto& m : members_) {
      if (m.rank == rank && !m.process.Running()) {
        return Stderr(rank).find(text) != std::string::npos;
      }
    }
    if (Expired(deadline)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::vector<RankExit> RankGroup::Wait(Deadline deadline) {
  for (;;) {
    bool running = false;
    for (auto& m : members_) {
      if (m.ended) continue;
      if (m.process.Running()) {
        running = true;
      } else {
        m.ended = Clock::now();
      }
    }
    if (!running || Expired(deadline)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<RankExit> exits;
  for (auto& m : members_) {
    RankExit e;
    e.rank = m.rank;
    if (!m.ended) {
      e.timed_out = true;
      m.process.Kill();
      m.ended = Clock::now();
    }
    e.status = *m.process.status();
    e.ended = *m.ended;
    e.stderr_text = Stderr(m.rank);
    exits.push_back(std::move(e));
  }
  return exits;
}

std::string Describe(const std::vector<RankExit>& exits) {
  std::string s;
  for (const auto& e : exits) {
    s += "rank " + std::to_string(e.rank) + ": " + e.status.Describe() + (e.timed_out ? " (timed out)" : "") +
         "\n";
    std::string tail = e.stderr_text.size() > 3000 ? e.stderr_text.substr(e.stderr_text.size() - 3000)
                                                   : e.stderr_text;
    std::istringstream lines(tail);
    for (std::string line; std::getline(lines, line);) s += "  | " + line + "\n";
  }
  return s;
}

}  // namespace eplb::test
