// eplb demo: the checks made before any rank starts (demo_options.h).
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
#include "demo_gpu.h"
#include "demo_options.h"

namespace eplb::cli::demo {

using nlohmann::json;
using namespace std::chrono_literals;

Model Validate(const DemoOptions& o, int world) {
  auto fail = [](const std::string& m) { throw InvalidArgument("demo: " + m); };
  if (world < 1 || world > 64) fail("--ranks must be in [1, 64]");
  if (o.layers < 1 || o.experts < 1) fail("--layers and --experts must be positive");
  // Every flag a rank reads is checked here, before any rank starts: the
  // ranks' own checks (the Balancer's) would otherwise fail four processes.
  if (o.steps < 1 || o.steps > 10'000'000) fail("--steps must be in [1, 10000000]");
  if (o.interval < 1 || o.interval > o.steps) fail("--interval must be in [1, --steps]");
  if (o.window < 1 || o.window > 65536) fail("--window must be in [1, 65536]");
  if (o.slots < 0) fail("--slots must be positive (or left out: experts + experts/8)");
  if (o.first < 0 || o.first > o.steps) fail("--first must be in [1, --steps] (or left out)");
  if (o.staging < 1 || o.staging > 2) fail("--staging must be 1 or 2");
  if (o.lead < 1 || o.lead > 1000) fail("--lead must be in [1, 1000] steps");
  if (!std::isfinite(o.skew) || o.skew < 0 || o.skew > 10) fail("--skew must be a finite number in [0, 10]");
  if (!std::isfinite(o.drift) || o.drift <= 0 || o.drift > 1e9)
    fail("--drift must be a finite number of steps in (0, 1e9]");
  if (o.layers > kMaxLayers || o.experts > kMaxExperts)
    fail(fmt::format("--layers must be at most {} and --experts at most {}", kMaxLayers, kMaxExperts));
  if (o.tokens > (1 << 20) || o.top_k > 64) fail("--tokens must be at most 1048576 and --top-k at most 64");
  if (o.expert_bytes < 64 || o.expert_bytes > (uint64_t{1} << 30))
    fail("--expert-bytes must be in [64, 1 GiB]");
  if (!(o.step_ms >= 0) || o.step_ms > 10000) fail("--step-ms must be in [0, 10000]");
  if (o.tokens < 1 || o.top_k < 1 || o.top_k > o.experts) fail("--tokens >= 1 and 1 <= --top-k <= --experts");
  if (o.deadline_ms < 10 || o.deadline_ms > 3'600'000) fail("--deadline-ms must be in [10, 3600000]");
  if (o.timeout_s < 1 || o.timeout_s > 7 * 24 * 3600) fail("--timeout must be in [1, 604800] seconds");
  if (o.connect_timeout_s < 1 || o.connect_timeout_s > 3600) fail("--connect-timeout must be in [1, 3600] seconds");
  if (o.gpu && o.expert_bytes % 8 != 0) fail("--gpu: --expert-bytes must be a multiple of 8 (the GPU checks whole words)");
  if (o.gpu_work != "memory" && o.gpu_work != "compute" && o.gpu_work != "mixed")
    fail("--gpu-work must be memory, compute or mixed");
  Model m;
  m.layers = o.layers;
  m.experts = o.experts;
  if (!o.load_path.empty()) {
    io::LoadFile f = io::ReadLoadFile(o.load_path);
    if (f.load.num_experts != o.experts)
      fail(fmt::format("{} has {} experts per layer; pass --experts {}", o.load_path,
                       f.load.num_experts, f.load.num_experts));
    m.base = std::move(f.load);
  }
  if (o.nodes < 1 || world % o.nodes != 0)
    fail(fmt::format("--nodes {} does not divide the {} ranks into nodes of equal size", o.nodes, world));
  m.slots = o.Slots();
  if (m.slots % world != 0)
    fail(fmt::format("{} slots do not split over {} ranks", m.slots, world));
  m.spr = m.slots / world;
  const uint64_t third = o.expert_bytes / 3 / 8 * 8;
  m.tensor_bytes = {third, third, o.expert_bytes - 2 * third};
  // The policy's own checks (groups divide experts, slots >= experts, ...).
  LoadMatrix zero(o.layers, o.experts);
  PolicyInput in{&zero, m.slots, o.groups, o.nodes, world, nullptr, {}};
  ValidatePolicyInput(in);
  MakePolicy(o.policy);
  // An unknown communicator, or an NCCL-family one in async mode, is bad input.
  if (!o.communicator.empty()) {
    SelectionRequest request;
    request.communicator = o.communicator;
    request.async = !o.sync;
    SelectCommunicator(request, SelectionFacts{});
  }
  if (o.kill_rank < -1 || o.kill_at < -1 || o.leave_rank < -1 || o.leave_at < -1 || o.join_at < -1)
    fail("--kill-rank, --kill-at, --leave-rank, --leave-at and --join-at take a rank or a step (>= 0)");
  if ((o.kill_rank >= 0) != (o.kill_at >= 0)) fail("--kill-rank and --kill-at go together");
  if ((o.leave_rank >= 0) != (o.leave_at >= 0)) fail("--leave-rank and --leave-at go together");
  if (o.elastic()) {
    const int events = (o.kill_rank >= 0) + (o.leave_rank >= 0) + (o.join_at >= 0);
    if (events > 1) fail("one membership event per run: --kill-rank, --leave-rank or --join-at");
    const int64_t at = o.kill_rank >= 0 ? o.kill_at : o.leave_rank >= 0 ? o.leave_at : o.join_at;
    if (at < 1 || at >= o.steps) fail(fmt::format("the event's step {} must be in [1, --steps)", at));
    const int victim = o.kill_rank >= 0 ? o.kill_rank : o.leave_rank;
    if (victim >= 0 && (victim < 1 || victim >= world))
      fail(fmt::format("rank {} cannot be killed or leave: ranks 1 to {} can (rank 0 writes the report)", victim,
                       world - 1));
    if (o.gpu) fail("membership events run with host weights (the GPU case: ctest ElasticGpu)");
    if (o.nodes != 1) fail("membership events run on one node (--nodes 1)");
    if (o.Capacity() > 64) fail("--ranks must leave room for the joining rank (at most 64 processes)");
    // Slots per rank stay fixed: every membership must hold every expert.
    const int fewest = o.FewestMembers(), most = o.Capacity();
    for (int members : {fewest, most}) {
      PolicyInput after{&zero, m.spr * members, o.groups, 1, members, nullptr, {}};
      try {
        ValidatePolicyInput(after);
      } catch (const InvalidArgument& e) {
        fail(fmt::format("with {} ranks of {} slots ({} slots): {}", members, m.spr, m.spr * members, e.what()));
      }
    }
  }
  const double gib = double(m.spr) * m.layers * o.expert_bytes * world / (1u << 30);
  if (!o.gpu && gib > 16) fail(fmt::format("the weights would take {:.1f} GiB of memory in all; lower --expert-bytes or --layers", gib));
  return m;
}

}  // namespace eplb::cli::demo
