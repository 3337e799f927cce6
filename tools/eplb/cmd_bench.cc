// eplb bench: migration bandwidth of each available communicator for a
// DeepSeek-V3-sized layer (8 experts of 44 MiB per rank), against the
// copy-engine limit measured in the same run (plain cudaMemcpyPeerAsync of
// the same bytes between the same GPUs).
//
// Two ranks run as processes (this binary again, in worker mode) meeting
// through a file store. With 2 GPUs the experts live in device memory, one
// GPU per rank; without, in host memory, and the communicators that need
// GPUs are reported as skipped with the reason. Each communicator is timed
// both ways at once (each rank pulls the other's 8 experts) and one way
// (rank 0 pulls).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "comm/backends.h"
#include "comm/execute_timing.h"
#include "cuda/peer_copy.h"
#include "cuda/runtime.h"
#include "eplb/command.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "eplb/selection.h"
#include "io/files.h"

#include "eplb/bootstrap.h"
#include "io/process.h"

namespace eplb::cli {
namespace {

using namespace std::chrono_literals;

struct BenchArgs {
  std::vector<std::string> communicators;  // empty: every one that can run
  int experts = 8;
  double expert_mib = 44;
  int iterations = 20;
  int warmup = 3;
  int timeout_s = 120;
  bool json = false;
  bool host = false;  // host memory even where there are GPUs
  // Worker mode (internal: the parent starts two of these).
  int worker_rank = -1;
  int world_size = 2;
  std::string store_dir;
  std::string memory = "host";
  std::string result_path;
};

uint64_t ExpertBytes(const BenchArgs& a) {
  return static_cast<uint64_t>(a.expert_mib * (1 << 20)) / 4096 * 4096;
}

// One rank's weights (region 0) and staging (region 1), in host or device
// memory; weights hold a byte per rank so a landed piece can be checked.
class BenchBuffers {
 public:
  // `device`: the CUDA device of the buffers, -1 for host memory.
  // Device buffers are filled on a stream of their own, waited for until `ready_by`.
  BenchBuffers(int device, int rank, uint64_t bytes, Deadline ready_by) : rank_(rank), bytes_(bytes) {
    if (device >= 0) {
#if EPLB_HAVE_CUDA
      device_ = device;
      weights_device_ = cuda::DeviceBuffer(device, bytes);
      staging_device_ = cuda::DeviceBuffer(device, bytes);
      cuda::DeviceGuard guard(device);
      cuda::Stream fill(device);
      cuda::Check(cudaMemsetAsync(weights_device_.data(), Fill(rank), bytes, fill.get()), "cudaMemsetAsync");
      cuda::Check(cudaMemsetAsync(staging_device_.data(), 0, bytes, fill.get()), "cudaMemsetAsync");
      fill.Synchronize(ready_by, "fill the bench buffers");
      return;
#else
      throw Error("bench", "allocate", "eplb was built without CUDA");
#endif
    }
    weights_host_.assign(bytes, Fill(rank));
    staging_host_.assign(bytes, 0);
  }

  static uint8_t Fill(int rank) { return static_cast<uint8_t>(0x41 + rank); }

  MemoryRegion region(int i) const {
    if (device_ >= 0) {
#if EPLB_HAVE_CUDA
      return {(i == 0 ? weights_device_ : staging_device_).data(), bytes_, MemoryKind::kCuda, device_};
#endif
    }
    auto& v = i == 0 ? weights_host_ : staging_host_;
    return {const_cast<uint8_t*>(v.data()), bytes_, MemoryKind::kHost, -1};
  }

  // The first and last byte of every piece that landed here came from the
  // peer it was pulled from.
  bool Landed(const std::vector<Transfer>& transfers) const {
    for (const Transfer& t : transfers) {
      if (t.dst_rank != rank_) continue;
      for (uint64_t at : {t.dst_offset, t.dst_offset + t.bytes - 1}) {
        uint8_t b = 0;
        if (device_ >= 0) {
#if EPLB_HAVE_CUDA
          cuda::Check(cudaMemcpy(&b, staging_device_.as<uint8_t>() + at, 1, cudaMemcpyDeviceToHost),
                      "cudaMemcpy");
#endif
        } else {
          b = staging_host_[at];
        }
        if (b != Fill(t.src_rank)) return false;
      }
    }
    return true;
  }

 private:
  int rank_;
  uint64_t bytes_;
  int device_ = -1;
  std::vector<uint8_t> weights_host_, staging_host_;
#if EPLB_HAVE_CUDA
  cuda::DeviceBuffer weights_device_, staging_device_;
#endif
};

// Worker mode: one rank of one communicator's measurement.
int RunWorker(const BenchArgs& a, const std::string& name) {
  nlohmann::json result;
  try {
    CommunicatorOptions options;
    options.rank = a.worker_rank;
    options.world_size = a.world_size;
    options.store = MakeFileStore(a.store_dir);
    options.key_prefix = "bench";
    // One GPU: both ranks on it.
    options.device = a.memory == "cuda" ? a.worker_rank % std::max(1, cuda::Probe().devices) : -1;
    options.connect_timeout = std::chrono::seconds(a.timeout_s);
    auto comm = MakeCommunicator(name, options);
    const uint64_t expert_bytes = ExpertBytes(a);
    BenchBuffers buffers(options.device, a.worker_rank, expert_bytes * a.experts,
                         DeadlineAfter(std::chrono::seconds(a.timeout_s)));
    for (int i = 0; i < 2; ++i) comm->RegisterRegion(buffers.region(i), DeadlineAfter(std::chrono::seconds(a.timeout_s)));
    for (bool one_way : {false, true}) {
      const auto transfers = BulkExchange(a.world_size, a.experts, expert_bytes, one_way);
      auto times = TimeExecutes(*comm, transfers, a.warmup, a.iterations, std::chrono::seconds(a.timeout_s));
      if (!buffers.Landed(transfers)) throw Error("bench", "check", "transferred bytes are wrong", a.worker_rank);
      const uint64_t in = BytesInto(transfers, a.worker_rank);
      result[one_way ? "one_way" : "both_ways"] = {
          {"median_s", times.median()}, {"min_s", times.min()}, {"bytes_in", in},
          {"gbps", in > 0 ? in / times.median() / 1e9 : 0.0}};
    }
    result["ok"] = true;
  } catch (const InvalidArgument& e) {
    // The backend refuses this setup (e.g. device memory): not a failure of
    // the measurement.
    result = {{"ok", false}, {"unsupported", true}, {"error", e.what()}};
  } catch (const std::exception& e) {
    result = {{"ok", false}, {"error", e.what()}};
  }
  io::WriteFileAtomic(a.result_path, result.dump());
  return result["ok"].get<bool>() ? 0 : 1;
}

// Runs both ranks of one communicator; returns their results, or an error.
nlohmann::json RunPair(const BenchArgs& a, const std::string& name, const std::string& memory,
                       const std::string& dir) {
  // The ranks' file store: created here for both, private to this user.
  std::filesystem::create_directories(dir + "/store");
  std::filesystem::permissions(dir + "/store", std::filesystem::perms::owner_all, std::filesystem::perm_options::replace);
  std::vector<io::Process> ranks;
  for (int r = 0; r < 2; ++r) {
    io::SpawnOptions spawn;
    spawn.argv = {io::SelfExecutable(), "bench", "--worker-rank", std::to_string(r),
                  "--world-size", "2", "--store-dir", dir + "/store", "--memory", memory,
                  "--communicator", name, "--experts", std::to_string(a.experts),
                  "--expert-mib", fmt::format("{}", a.expert_mib),
                  "--iterations", std::to_string(a.iterations), "--warmup", std::to_string(a.warmup),
                  "--timeout-s", std::to_string(a.timeout_s),
                  "--result", fmt::format("{}/result-{}.json", dir, r)};
    spawn.stdout_path = fmt::format("{}/rank-{}.log", dir, r);
    spawn.stderr_path = spawn.stdout_path + ".err";
    ranks.push_back(io::Process::Spawn(spawn));
  }
  const Deadline deadline = DeadlineAfter(std::chrono::seconds(3 * a.timeout_s));
  nlohmann::json results = nlohmann::json::array();
  for (int r = 0; r < 2; ++r) {
    auto status = ranks[r].Wait(deadline);
    if (!status) status = ranks[r].Kill();
    std::ifstream in(fmt::format("{}/result-{}.json", dir, r));
    nlohmann::json j = in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
    if (!j.is_object()) j = {{"ok", false}, {"error", "rank ended (" + status->Describe() + ") with no result"}};
    // A rank that wrote its result and then crashed (in a library's exit
    // handlers, say) is a failure too: an engine process would crash there.
    else if (!status->ok() && j.value("ok", false))
      j = {{"ok", false}, {"error", fmt::format("rank {} ended ({}) after writing its result", r, status->Describe())}};
    results.push_back(j);
  }
  return results;
}

// Why a communicator cannot be measured here, or "" when it can.
std::string WhySkipped(const std::string& name, const cuda::Availability& gpus, bool host_memory) {
  if (name == "nccl") return "needs the engine's NCCL communicator; nccl_stateless measures NCCL";
  // Two NCCL ranks cannot share a GPU; cuda_ipc can (two processes, one GPU).
  if (IsNcclFamily(name) && gpus.devices < 2) {
    return gpus.devices == 0 ? "needs 2 GPUs: " + gpus.reason
                             : fmt::format("needs 2 GPUs, found {}", gpus.devices);
  }
  const comm::Backend* backend = comm::FindBackend(name);
  const bool gpu_only = backend != nullptr && !backend->capabilities.host_memory;
  if (gpu_only && gpus.devices < 1) return "needs a GPU: " + gpus.reason;
  if (gpu_only && host_memory) return "moves GPU memory only (--host asks for host memory)";
  return "";
}

int RunBench(const BenchArgs& a) {
  // NaN fails every comparison, so each bound is written to let only good values through.
  if (!(a.experts >= 1 && a.experts <= 4096) || !(a.expert_mib > 0 && a.expert_mib <= 16384) ||
      !(a.iterations >= 1 && a.iterations <= 100000) || !(a.warmup >= 0 && a.warmup <= 100000) ||
      !(a.timeout_s >= 1 && a.timeout_s <= 86400)) {
    throw InvalidArgument(
        "bench: --experts in [1, 4096], --expert-mib in (0, 16384], --iterations in [1, 100000], "
        "--warmup in [0, 100000] and --timeout-s in [1, 86400]");
  }
  if (a.experts * a.expert_mib > 65536) {
    throw InvalidArgument(fmt::format(
        "bench: {} experts of {} MiB are {:.0f} GiB per buffer; at most 64 GiB", a.experts,
        a.expert_mib, a.experts * a.expert_mib / 1024));
  }
  if (a.worker_rank >= 0) {
    if (a.communicators.size() != 1 || a.store_dir.empty() || a.result_path.empty()) {
      throw InvalidArgument("bench worker: needs one --communicator, --store-dir and --result");
    }
    return RunWorker(a, a.communicators[0]);
  }
  std::vector<std::string> names;
  for (const auto& n : a.communicators) names.push_back(CanonicalCommunicatorName(n));  // exit 2 if unknown
  if (names.empty()) names = CommunicatorNames();

  const auto gpus = cuda::Probe();
  // With one GPU both ranks share it (device-to-device through each backend).
  const bool on_gpus = gpus.devices >= 1 && !a.host;
  const int gpu_b = gpus.devices >= 2 ? 1 : 0;
  const std::string memory = on_gpus ? "cuda" : "host";
  const uint64_t expert_bytes = ExpertBytes(a);
  nlohmann::json report = {{"experts", a.experts},
                           {"expert_bytes", expert_bytes},
                           {"iterations", a.iterations},
                           {"memory", memory},
                           {"gpus", gpus.devices},
                           {"gpu_name", on_gpus ? cuda::DeviceName(0) : ""},
                           {"gpu_detail", gpus.reason}};
  std::string limits_log;
  double limit_both = 0, limit_one = 0;
  if (on_gpus) {
    limit_both = cuda::PeerCopyLimit(0, gpu_b, expert_bytes, a.experts, true, a.iterations, std::chrono::seconds(a.timeout_s), &limits_log);
    limit_one = cuda::PeerCopyLimit(0, gpu_b, expert_bytes, a.experts, false, a.iterations, std::chrono::seconds(a.timeout_s), &limits_log);
    report["copy_engine_limit_gbps"] = {{"both_ways", limit_both}, {"one_way", limit_one}};
  }
  const std::string base = fmt::format("{}/eplb-bench-{}", std::filesystem::temp_directory_path().string(),
                                       static_cast<long>(getpid()));
  bool failed = false;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& name : names) {
    nlohmann::json row = {{"communicator", name}};
    if (std::string why = WhySkipped(name, gpus, memory == "host"); !why.empty()) {
      row["skipped"] = why;
      rows.push_back(row);
      continue;
    }
    auto results = RunPair(a, name, memory, base + "/" + name);
    if (!results[0]["ok"].get<bool>() || !results[1]["ok"].get<bool>()) {
      const auto& bad = results[0]["ok"].get<bool>() ? results[1] : results[0];
      const std::string error = bad.value("error", std::string("failed"));
      // Backends absent from this machine or build are skipped, not failed.
      const bool absent = bad.value("unsupported", false) || error.find("load") != std::string::npos ||
                          error.find("not contain") != std::string::npos ||
                          error.find("built without") != std::string::npos;
      row[absent ? "skipped" : "error"] = error;
      failed |= !absent;
      rows.push_back(row);
      continue;
    }
    const double both = std::min(results[0]["both_ways"]["gbps"].get<double>(),
                                 results[1]["both_ways"]["gbps"].get<double>());
    const double one = results[0]["one_way"]["gbps"].get<double>();
    row["both_ways_gbps_per_rank"] = both;
    row["one_way_gbps"] = one;
    row["both_ways_median_s"] = std::max(results[0]["both_ways"]["median_s"].get<double>(),
                                         results[1]["both_ways"]["median_s"].get<double>());
    row["one_way_median_s"] = results[0]["one_way"]["median_s"];
    if (on_gpus) {
      row["both_ways_ratio"] = both / limit_both;
      row["one_way_ratio"] = one / limit_one;
    }
    rows.push_back(row);
  }
  std::error_code ignored;
  std::filesystem::remove_all(base, ignored);
  report["communicators"] = rows;

  if (a.json) {
    std::printf("%s\n", report.dump(2).c_str());
    return failed ? 1 : 0;
  }
  std::printf("eplb bench: a layer of %d experts x %.1f MiB per rank, 2 ranks, %s memory%s; median of %d\n",
              a.experts, expert_bytes / double(1 << 20), memory.c_str(),
              on_gpus ? fmt::format(" ({} x {}{})", gpus.devices, cuda::DeviceName(0),
                                    gpus.devices == 1 ? ", both ranks on GPU 0" : "")
                            .c_str()
                      : "",
              a.iterations);
  if (on_gpus) {
    std::printf("%s", limits_log.c_str());
    std::printf("copy-engine limit (best of the above): both ways %.1f GB/s per GPU, one way %.1f GB/s\n",
                limit_both, limit_one);
  } else {
    std::printf("no copy-engine limit: %s\n", gpus.reason.c_str());
  }
  std::printf("%-16s %22s %8s %16s %8s\n", "communicator", "both ways GB/s/rank", "ratio", "one way GB/s", "ratio");
  for (const auto& row : rows) {
    const std::string name = row["communicator"];
    if (row.contains("skipped") || row.contains("error")) {
      std::printf("%-16s %s: %s\n", name.c_str(), row.contains("error") ? "FAILED" : "skipped",
                  (row.contains("error") ? row["error"] : row["skipped"]).get<std::string>().c_str());
      continue;
    }
    std::printf("%-16s %22.1f %8s %16.1f %8s\n", name.c_str(), row["both_ways_gbps_per_rank"].get<double>(),
                on_gpus ? fmt::format("{:.2f}", row["both_ways_ratio"].get<double>()).c_str() : "-",
                row["one_way_gbps"].get<double>(),
                on_gpus ? fmt::format("{:.2f}", row["one_way_ratio"].get<double>()).c_str() : "-");
  }
  return failed ? 1 : 0;
}

}  // namespace

EPLB_COMMAND(bench, [](CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand(
      "bench", "Migration bandwidth of each communicator vs the copy-engine limit (2 ranks)");
  cmd->add_option("--communicator", args->communicators,
                  "communicator to measure (repeatable; default: every one)");
  cmd->add_option("--experts", args->experts, "experts per rank in the layer")->capture_default_str();
  cmd->add_option("--expert-mib", args->expert_mib, "MiB per expert")->capture_default_str();
  cmd->add_option("--iterations", args->iterations, "timed exchanges (median reported)")->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "untimed exchanges first")->capture_default_str();
  cmd->add_option("--timeout-s", args->timeout_s, "deadline of each exchange and of connecting")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "machine-readable output");
  cmd->add_flag("--host", args->host, "experts in host memory even where there are GPUs");
  auto* worker = cmd->add_option_group("worker");  // internal: set by the parent
  worker->add_option("--worker-rank", args->worker_rank)->group("");
  worker->add_option("--world-size", args->world_size)->group("");
  worker->add_option("--store-dir", args->store_dir)->group("");
  worker->add_option("--memory", args->memory)->group("");
  worker->add_option("--result", args->result_path)->group("");
  return [args] { return RunBench(*args); };
});

}  // namespace eplb::cli
