// The options of `eplb demo` and the pieces its files share: the checks made
// before any rank starts (demo_validate.cc), one rank's run (demo_rank.cc),
// and the launcher with the command's flags (cmd_demo.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/load.h"
#include "eplb/policy.h"

namespace eplb::cli::demo {

struct DemoOptions {
  int ranks = 4;
  int layers = 58;
  int experts = 256;
  int slots = 0;  // 0: experts + experts / 8, rounded up to a multiple of ranks
  int groups = 8;
  int nodes = 1;
  uint64_t expert_bytes = 16 * 1024;
  int steps = 1200;
  int interval = 300;
  int first = 0;
  int window = 100;
  double step_ms = 4;
  int tokens = 256;  // tokens per rank per step
  int top_k = 8;
  std::string load_path;
  double skew = 0.5;
  double drift = 50;  // steps for the hot set to move by one expert
  bool sync = false;
  bool gpu = false;
  std::string gpu_work = "mixed";
  std::string communicator;
  int deadline_ms = 5000;
  int connect_timeout_s = 60;  // the ranks finding each other at start-up
  int staging = 2;
  int lead = 4;
  std::string policy = "deepseek";
  uint64_t seed = 1;
  bool json = false;
  bool no_progress = false;
  bool keep = false;
  bool worker = false;
  bool check_only = false;
  int timeout_s = 600;
  // One membership event while serving (demo_elastic.h); -1: none.
  int kill_rank = -1;
  int64_t kill_at = -1;
  int leave_rank = -1;
  int64_t leave_at = -1;
  int64_t join_at = -1;

  bool elastic() const { return kill_rank >= 0 || leave_rank >= 0 || join_at >= 0; }
  // Processes of the run: the ranks, and the one that joins.
  int Capacity() const { return ranks + (join_at >= 0 ? 1 : 0); }
  // Members at the smallest: after a kill or a leave, one fewer.
  int FewestMembers() const { return ranks - (kill_rank >= 0 || leave_rank >= 0 ? 1 : 0); }
  // Slots of the initial membership. Default: experts + experts / 8 over
  // the fewest members (slots per rank stay fixed when the group changes),
  // times the ranks.
  int Slots() const {
    if (slots > 0) return slots;
    const int want = experts + std::max(1, experts / 8);
    const int fewest = std::max(1, FewestMembers());
    return (want + fewest - 1) / fewest * ranks;
  }
  int FirstRebalance() const { return first > 0 ? first : std::min(window, interval); }
};

struct Model {
  int layers, experts, slots, spr;
  std::vector<uint64_t> tensor_bytes;  // w1, w3, w2
  std::optional<LoadMatrix> base;      // --load
};

// Every flag checked, the load file read: InvalidArgument (exit 2) before
// any process starts.
Model Validate(const DemoOptions& o, int world);

// One rank of the demo (a worker started by the launcher, or a rank of a
// torchrun-style launch). Returns its exit status.
int RunRank(const DemoOptions& o, const LaunchEnv& env);

}  // namespace eplb::cli::demo
