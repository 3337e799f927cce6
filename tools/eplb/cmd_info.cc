// eplb info: what this machine offers eplb (platform, GPUs, NIXL, NCCL, CUDA)
// and which communicator the default rule picks for the given flags, with
// the reason. Detection only looks at files; only the CUDA driver is loaded,
// to count GPUs.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "comm/cuda_driver.h"
#include "comm/nixl/ucx_transports.h"
#include "eplb/command.h"
#include "eplb/detect.h"
#include "select/detection.h"
#include "eplb/error.h"
#include "eplb/listen_address.h"
#include "eplb/selection.h"

namespace eplb::cli {
namespace {

struct InfoArgs {
  bool elastic = false;
  bool async = false;
  std::string communicator;
  std::string platform;
  bool json = false;
};

nlohmann::json LibraryJson(const FoundLibrary& lib) {
  if (!lib.found()) return {{"found", false}, {"detail", lib.how.empty() ? lib.name + " not found" : lib.how}};
  return {{"found", true}, {"path", lib.path}, {"how", lib.how}};
}

std::string LibraryText(const FoundLibrary& lib, const std::string& name) {
  if (!lib.found()) return lib.how.empty() ? name + " not found" : lib.how;
  return lib.path + " (" + lib.how + ")";
}

int RunInfo(const InfoArgs& a) {
  SearchEnvironment env = SearchEnvironment::FromProcess();
  std::optional<Platform> forced;
  if (!a.platform.empty()) forced = ParsePlatform(a.platform);
  PlatformDetection platform = DetectPlatform(env, forced);
  NixlDetection nixl = DetectNixl(env, forced);
  GpuLibraries gpu = DetectGpuLibraries(env);
  std::string gpu_why = "no CUDA driver (libcuda.so.1) found";
  int gpus = gpu.cuda_driver.found() ? cuda::DeviceCount(&gpu_why) : -1;
  if (gpus < 0 && gpu.proc_gpu_count >= 0) gpu_why += fmt::format("; /proc lists {} NVIDIA GPU(s)", gpu.proc_gpu_count);

  // Where a rank started with this environment would listen (a bad
  // EPLB_LISTEN_ADDR is bad input: exit 2).
  std::string listen;
  try {
    listen = ChooseListenAddress([](const char* name) -> std::optional<std::string> {
               const char* v = std::getenv(name);
               return v ? std::optional<std::string>(v) : std::nullopt;
             }).Describe();
  } catch (const InvalidArgument&) {
    throw;
  } catch (const Error& e) {
    listen = std::string("none: ") + e.what();
  }

  SelectionFacts facts;
  facts.nixl_available = nixl.available;
  facts.nixl_reason = nixl.reason;
  SelectionRequest request{a.communicator, a.elastic, a.async};
  Selection choice = SelectCommunicator(request, facts);  // InvalidArgument -> exit 2

  if (a.json) {
    nlohmann::json j = {
        {"platform", {{"name", PlatformName(platform.platform)}, {"evidence", platform.evidence}}},
        {"gpus", {{"count", gpus < 0 ? 0 : gpus}, {"detail", gpus < 0 ? gpu_why : std::string()}}},
        {"cuda", {{"driver", LibraryJson(gpu.cuda_driver)}, {"runtime", LibraryJson(gpu.cuda_runtime)}}},
        {"nccl", LibraryJson(gpu.nccl)},
        {"nixl",
         {{"package", nixl.package},
          {"available", nixl.available},
          {"reason", nixl.reason},
          {"c_api", nixl.capi_library},
          {"core", nixl.core_library},
          {"plugin_dir", nixl.plugin_dir},
          {"ucx_plugin", nixl.ucx_plugin},
          {"ucx_module_dir", nixl.ucx_module_dir},
          {"how", nixl.how},
          {"ucx_transports", nixl.available ? comm::DescribeUcxTransports() : ""},
          {"searched", nixl.searched}}},
        {"request", {{"communicator", a.communicator}, {"elastic", a.elastic}, {"async", a.async}}},
        {"communicator", {{"name", choice.name}, {"reason", choice.reason}}},
        {"communicators", CommunicatorNames()},
        {"listen", listen},
    };
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("platform:      %s (%s)\n", PlatformName(platform.platform), platform.evidence.c_str());
  if (gpus >= 0)
    std::printf("GPUs:          %d\n", gpus);
  else
    std::printf("GPUs:          none (%s)\n", gpu_why.c_str());
  std::printf("CUDA driver:   %s\n", LibraryText(gpu.cuda_driver, "libcuda.so.1").c_str());
  std::printf("CUDA runtime:  %s\n", LibraryText(gpu.cuda_runtime, "libcudart.so").c_str());
  std::printf("NCCL:          %s\n", LibraryText(gpu.nccl, "libnccl.so.2").c_str());
  std::printf("%-5s          %s\n", (nixl.package + ":").c_str(), nixl.reason.c_str());
  if (nixl.available) {
    std::printf("               plugins: %s\n", nixl.plugin_dir.c_str());
    if (!nixl.ucx_module_dir.empty()) std::printf("               UCX modules: %s\n", nixl.ucx_module_dir.c_str());
    std::printf("               UCX transports: %s\n", comm::DescribeUcxTransports().c_str());
  } else {
    std::string searched;
    for (const auto& s : nixl.searched) searched += (searched.empty() ? "" : ", ") + s;
    if (!searched.empty()) std::printf("               searched: %s\n", searched.c_str());
  }
  std::printf("listen:        %s\n", listen.c_str());
  std::printf("request:       %s%s%s\n",
              a.communicator.empty() ? "default rule" : ("--communicator " + a.communicator).c_str(),
              a.elastic ? ", elastic EP" : "", a.async ? ", async" : "");
  std::printf("communicator:  %s (%s)\n", choice.name.c_str(), choice.reason.c_str());
  if (a.communicator.empty() && !a.elastic && !nixl.available)
    std::printf("               (cuda_ipc is considered at start-up, once the EP peers are known)\n");
  return 0;
}

}  // namespace

EPLB_COMMAND(info, [](CLI::App& app) -> std::function<int()> {
  auto args = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info", "platform, GPUs, NIXL/NCCL/CUDA found, and the communicator eplb picks");
  cmd->add_flag("--elastic", args->elastic, "elastic EP (ranks may join and leave)");
  cmd->add_flag("--async", args->async, "async migration (background thread and stream)");
  cmd->add_option("--communicator", args->communicator, "explicit communicator (nixl, cuda_ipc, gloo, nccl, nccl_stateless)");
  cmd->add_option("--platform", args->platform, "force the platform: none, cuda or rocm (default: detect; also EPLB_PLATFORM)");
  cmd->add_flag("--json", args->json, "machine-readable output");
  return [args] { return RunInfo(*args); };
});

}  // namespace eplb::cli
