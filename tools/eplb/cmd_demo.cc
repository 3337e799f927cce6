// eplb demo: the whole system on this machine. N rank processes (default 4)
// each hold a scaled-down DeepSeek-V3's expert weights in host memory, run a
// simulated expert-parallel engine (route tokens with the balancer's maps,
// "compute" by reading the routed experts' weights, an all-reduce per step
// standing in for the dispatch all-to-all) under a drifting, skewed load,
// and let the online Balancer rebalance every K steps, moving weights with
// the default communicator. Every expert's bytes are a fingerprint of
// (layer, expert), checked at every commit, after every rebalance, on every
// routed step and at the end: exit 0 only if every check passed. With --gpu
// the weights live on the ranks' GPUs and the step is real GPU work on the
// engine's stream (demo_gpu.h).
//
//   eplb demo [--ranks 4] [--layers 58 --experts 256 --slots 288 --expert-bytes 49152]
//             [--steps 1500 --interval 300 --window 100] [--load FILE] [--async|--sync]
//             [--communicator NAME] [--gpu [--gpu-work mixed]] [--json]
//
// Without a launcher the command starts the ranks itself (copies of this
// binary, a file store in a temporary directory); when RANK / WORLD_SIZE are
// set (torchrun-style) this process is one rank and the store comes from
// EPLB_STORE or MASTER_ADDR (bootstrap.h). Rank 0 prints the report.
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/command.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "eplb/policy.h"
#include "eplb/selection.h"
#include "demo/synthetic_load.h"
#include "io/files.h"
#include "io/process.h"
#include "demo/fingerprint.h"
#include "cuda/runtime.h"
#include "demo_elastic.h"
#include "demo_failure.h"
#include "demo_gpu.h"
#include "demo_options.h"

namespace eplb::cli {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using demo::DemoOptions;
using demo::RunRank;
using demo::Validate;

// --- the launcher ---------------------------------------------------------------------------

std::string Tail(const std::string& path, size_t lines) {
  std::string text;
  try {
    text = io::ReadFile(path);
  } catch (const std::exception&) {
    return "";
  }
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0;) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++n;
  }
  return text.substr(pos);
}

int Launch(const DemoOptions& o, const LaunchEnv& env) {
  Validate(o, o.ranks);  // bad input: exit 2 before any process starts
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/eplb-demo-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    throw Error("demo", "launch", "cannot create a directory from " + pattern + ": " + std::strerror(errno));
  }
  const std::string dir = buf.data();
  // Every rank is this command again, with its own arguments (each option
  // written once, in the flags below) and --worker.
  std::vector<std::string> argv = io::SelfArguments();
  argv[0] = io::SelfExecutable();
  argv.push_back("--worker");
  const std::string run_id = fmt::format("demo-{}", ::getpid());
  // The run's secret: the user's (EPLB_JOB_TOKEN, already checked), else a
  // fresh one. Only the ranks get it, in their environment, which other
  // users cannot read (/proc/<pid>/environ is the owner's alone).
  const std::string token = env.job_token.empty() ? GenerateJobToken() : env.job_token;
  const int capacity = o.Capacity();
  std::vector<io::Process> ranks(capacity);
  auto spawn = [&](int r) {
    io::SpawnOptions so;
    so.argv = argv;
    so.env = {{"RANK", std::to_string(r)},
              {"WORLD_SIZE", std::to_string(capacity)},
              {"LOCAL_RANK", std::to_string(r)},
              {"LOCAL_WORLD_SIZE", std::to_string(capacity)},
              {"EPLB_STORE", "file:" + dir + "/store"},
              {"EPLB_RUN_ID", run_id},
              {"EPLB_JOB_TOKEN", token}};
    if (r != 0) so.stdout_path = fmt::format("{}/rank{}.out", dir, r);
    so.stderr_path = fmt::format("{}/rank{}.log", dir, r);
    ranks[r] = io::Process::Spawn(so);
  };
  for (int r = 0; r < o.ranks; ++r) spawn(r);
  // The control plane of a membership event (demo_elastic.h): when the
  // announcer reaches the step, the launcher kills the rank or starts the
  // joiner, and records when.
  const demo::ElasticEvent event = demo::ElasticEvent::From(o);
  using EventKind = demo::ElasticEvent::Kind;
  LaunchEnv store_env;
  store_env.run_id = run_id;
  store_env.job_token = token;  // the ranks write under the token's keys
  store_env.store_spec = "file:" + dir + "/store";
  std::shared_ptr<Store> run_store;
  bool acted = event.kind == EventKind::kNone || event.kind == EventKind::kLeave;
  std::vector<bool> started(capacity, false), expected_end(capacity, false);
  for (int r = 0; r < o.ranks; ++r) started[r] = true;
  // Ranks that fail exit on their own (every wait has a deadline); this
  // bound only catches the unexpected.
  const Deadline deadline = DeadlineAfter(std::chrono::seconds(o.timeout_s + 120));
  // Once a rank has failed, the others notice within the engine step's
  // deadline and report; they get twice that and 5 s more, then are killed
  // (a rank stopped for good would otherwise hold the launcher to --timeout).
  const auto grace = 2 * std::chrono::milliseconds(o.deadline_ms) + 5s;
  std::vector<std::optional<io::ExitStatus>> done(capacity);
  std::vector<std::string> notes(capacity);
  std::optional<Clock::time_point> first_failure;
  int first_failed = -1;
  for (;;) {
    if (!acted && !first_failure) {
      if (!run_store) run_store = OpenRunStore("", store_env);
      if (const auto step = demo::PollReached(*run_store)) {
        const int r = event.rank;
        if (event.kind == EventKind::kKill) {
          done[r] = ranks[r].Kill();
          expected_end[r] = true;
          notes[r] = fmt::format("killed by the launcher at step {} (--kill-rank)", *step);
        } else {
          spawn(r);
          started[r] = true;
        }
        demo::RecordEvent(*run_store, *step, Clock::now());
        acted = true;
      }
    }
    bool running = false;
    for (int r = 0; r < capacity; ++r) {
      if (done[r] || !started[r]) continue;
      done[r] = ranks[r].Wait(Clock::now());
      if (!done[r]) {
        running = true;
      } else if (!done[r]->ok() && !first_failure) {
        first_failure = Clock::now();
        first_failed = r;
      }
    }
    if (!running) break;
    const bool late = first_failure && Clock::now() - *first_failure > grace;
    if (late || Expired(deadline)) {
      for (int r = 0; r < capacity; ++r) {
        if (done[r] || !started[r]) continue;
        done[r] = ranks[r].Kill();
        notes[r] = late ? fmt::format("killed by the launcher, still running {:.1f} s after rank {} failed: "
                                      "stalled?",
                                      std::chrono::duration<double>(Clock::now() - *first_failure).count(),
                                      first_failed)
                        : fmt::format("killed by the launcher after --timeout {} s and 120 s more", o.timeout_s);
      }
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  bool all_ok = true;
  std::vector<io::ExitStatus> statuses;
  std::vector<std::string> failures;
  if (!acted) {
    all_ok = false;
    failures.push_back(fmt::format("the ranks ended before the membership event ({} at step {})", event.name(),
                                   event.at));
  }
  for (int r = 0; r < capacity; ++r) {
    if (!started[r]) continue;
    statuses.push_back(*done[r]);
    if (!done[r]->ok() && !expected_end[r]) {
      all_ok = false;
      failures.push_back(fmt::format("rank {}: {}", r, done[r]->Describe()));
    }
  }
  if (!all_ok) {
    // Every rank's own record of why it failed, read from the run's store.
    std::string verdict;
    try {
      verdict = demo::DescribeFailures(*OpenRunStore("", store_env), statuses, notes);
      if (verdict.empty()) verdict = fmt::format("eplb demo: FAILED: {}\n", fmt::join(failures, "; "));
    } catch (const std::exception& e) {
      verdict = fmt::format("eplb demo: FAILED: {} (the ranks' records cannot be read: {})\n",
                            fmt::join(failures, "; "), e.what());
    }
    std::fprintf(stderr, "%s", verdict.c_str());
    for (int r = 0; r < capacity; ++r)
      std::fprintf(stderr, "--- rank %d (%s/rank%d.log), last lines:%s\n", r, dir.c_str(), r,
                   Tail(fmt::format("{}/rank{}.log", dir, r), 8).c_str());
    std::fprintf(stderr, "eplb demo: logs kept in %s\n", dir.c_str());
    return 1;
  }
  if (o.keep) {
    if (!o.json) std::fprintf(stdout, "logs: %s\n", dir.c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}

int RunDemo(const DemoOptions& o) {
  if (o.check_only) {
    Validate(o, o.ranks);  // InvalidArgument: exit 2
    return 0;
  }
  const LaunchEnv env = ReadLaunchEnv();
  if (o.worker || env.from_launcher) {
    if (o.elastic() && !o.worker)
      throw InvalidArgument("demo: --kill-rank, --leave-rank and --join-at need the demo's own launcher (it is the "
                            "control plane that kills and starts ranks)");
    try {
      return RunRank(o, env);
    } catch (const InvalidArgument&) {
      throw;
    } catch (const std::exception& e) {
      spdlog::error("demo: rank {} failed: {}", env.rank, e.what());
      demo::RecordFailure(env, e);  // unless the rank recorded why already
      return 1;
    }
  }
  return Launch(o, env);
}

}  // namespace

EPLB_COMMAND(demo, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "run N ranks on this machine that serve a simulated MoE model and rebalance it live");
  cmd->add_option("--ranks", o->ranks, "rank processes to start")->capture_default_str();
  cmd->add_option("--layers", o->layers, "MoE layers")->capture_default_str();
  cmd->add_option("--experts", o->experts, "logical experts per layer")->capture_default_str();
  cmd->add_option("--slots", o->slots, "physical slots per layer (default: experts + experts/8, a multiple of ranks)");
  cmd->add_option("--groups", o->groups, "expert groups (group-limited routing)")->capture_default_str();
  cmd->add_option("--nodes", o->nodes, "nodes the ranks are spread over, for the policy")->capture_default_str();
  cmd->add_option("--expert-bytes", o->expert_bytes, "bytes of one expert (3 tensors)")->capture_default_str();
  cmd->add_option("--steps", o->steps, "engine steps")->capture_default_str();
  cmd->add_option("--interval", o->interval, "rebalance every this many steps")->capture_default_str();
  cmd->add_option("--first", o->first, "first rebalance at this step (default: min(window, interval))");
  cmd->add_option("--window", o->window, "steps of load that decide a rebalance")->capture_default_str();
  cmd->add_option("--step-ms", o->step_ms, "simulated length of a step (the GPU's part)")->capture_default_str();
  cmd->add_option("--tokens", o->tokens, "tokens per rank per step")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "experts per token")->capture_default_str();
  cmd->add_option("--load", o->load_path, "load file ([layers][experts] `load`, e.g. data/loads/*.json) to drift around")
      ->check(NonEmptyPath());
  cmd->add_option("--skew", o->skew, "Zipf exponent of the synthetic load")->capture_default_str();
  cmd->add_option("--drift", o->drift, "steps for the hot experts to move by one")->capture_default_str();
  cmd->add_flag("--sync,!--async", o->sync, "migrate inside the step (--sync) or on a background thread (--async, the default)")
      ->capture_default_str();
  cmd->add_flag("--gpu", o->gpu,
                "weights in GPU memory (rank r on GPU r), the step's work as kernels on the engine's stream "
                "for --step-ms, every check on the GPU");
  cmd->add_option("--gpu-work", o->gpu_work, "with --gpu: memory, compute or mixed")->capture_default_str();
  cmd->add_option("--communicator", o->communicator, "nixl, cuda_ipc, gloo, ... (default: the selection rule)");
  cmd->add_option("--deadline-ms", o->deadline_ms, "deadline of every cross-rank wait (the engine step's too)")
      ->capture_default_str();
  cmd->add_option("--connect-timeout", o->connect_timeout_s, "seconds for the ranks to connect at start-up")
      ->capture_default_str();
  cmd->add_option("--staging", o->staging, "layers staged at once in async mode (1 or 2)")->capture_default_str();
  cmd->add_option("--lead", o->lead, "async: commit at least this many steps after proposing")->capture_default_str();
  cmd->add_option("--policy", o->policy, "placement policy")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the synthetic load")->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "give up after this many seconds")->capture_default_str();
  cmd->add_flag("--json", o->json, "machine output: one JSON document from rank 0");
  cmd->add_flag("--no-progress", o->no_progress, "no progress line even on a terminal");
  cmd->add_flag("--keep", o->keep, "keep the run directory (store, logs)");
  cmd->add_flag("--check-only", o->check_only, "check the options (exit 0, or 2 naming the bad one) and start nothing");
  cmd->add_option("--kill-rank", o->kill_rank, "membership event: the launcher kills this rank's process ...");
  cmd->add_option("--kill-at", o->kill_at, "... when it reaches this step; the others carry on without it");
  cmd->add_option("--leave-rank", o->leave_rank, "membership event: this rank leaves gracefully ...");
  cmd->add_option("--leave-at", o->leave_at, "... at this step (or the first after it with no migration in flight)");
  cmd->add_option("--join-at", o->join_at,
                  "membership event: the launcher starts one more rank at this step (or the first after it with no "
                  "migration in flight), which joins with empty slots");
  cmd->add_flag("--worker", o->worker, "internal: run as one rank")->group("");
  return [o] { return RunDemo(*o); };
});

}  // namespace eplb::cli
