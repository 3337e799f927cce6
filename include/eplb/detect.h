// What is installed on this machine: the GPU platform, NIXL (RIXL on ROCm),
// NCCL and the CUDA driver. Found by looking at files only, the way the
// dynamic loader and NIXL themselves would look: nothing is loaded, no
// constructor of a foreign library runs, no subprocess is started. This is
// the C++ counterpart of Python's `importlib.util.find_spec("nixl")` that the
// default communicator rule (DESIGN.md layer 4, vLLM PR #43110) relies on.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "eplb/export.h"

namespace eplb {

enum class Platform { kNone, kCuda, kRocm };

EPLB_EXPORT const char* PlatformName(Platform p);  // "none", "cuda", "rocm"
// Parses "none" / "cuda" / "rocm" (case-insensitive); throws InvalidArgument
// listing the valid names otherwise.
EPLB_EXPORT Platform ParsePlatform(const std::string& name);

// Folders to search, each with a label saying why it is searched.
using LabeledDirs = std::vector<std::pair<std::string, std::string>>;  // {dir, label}

// Where detection looks. FromProcess() reads this process's environment and
// the system's standard locations; tests build one by hand to point every
// search at a temporary folder.
struct EPLB_EXPORT SearchEnvironment {
  // $EPLB_NIXL_DIR: where to take NIXL from, and nowhere else (a
  // site-packages folder holding NIXL's wheel, a library folder, or a prefix
  // with lib/); "none" hides NIXL, so the rule picks as if it were absent.
  std::optional<std::string> nixl_dir;
  std::optional<std::string> nixl_plugin_dir;  // $NIXL_PLUGIN_DIR
  // site-packages folders where `pip install nixl-cu13` puts NIXL's wheel.
  // The active environment's ($VIRTUAL_ENV, $CONDA_PREFIX, $PYTHONPATH) are
  // searched before the loader's paths, as Python would import from them;
  // the interpreters' own site folders (/usr/local/lib/python3.*/...,
  // ~/.local/...) and eplb's project-local prefix (.deps/nixl, filled by
  // scripts/setup.sh) after everything else.
  LabeledDirs python_env_sites;
  LabeledDirs python_system_sites;
  std::optional<std::string> ld_library_path;  // $LD_LIBRARY_PATH
  std::optional<std::string> forced_platform;  // $EPLB_PLATFORM (none|cuda|rocm)
  std::optional<std::string> nccl_library;     // $EPLB_NCCL_LIBRARY (a full path)
  std::string ld_cache = "/etc/ld.so.cache";   // the loader cache; "" = none
  // NIXL's default install prefixes, per platform (lib folders searched in
  // order). CUDA: /opt/nvidia/nvda_nixl/lib/x86_64-linux-gnu (+ lib, lib64).
  // ROCm (RIXL): /opt/rocm/rixl/lib/x86_64-linux-gnu (+ lib, lib64).
  std::vector<std::string> nixl_default_dirs;
  std::vector<std::string> rixl_default_dirs;
  // Folders the loader searches last (its trusted system folders).
  std::vector<std::string> system_dirs;
  // Toolkit folders searched after everything else for NCCL and the CUDA
  // runtime (/usr/local/cuda/lib64, /usr/local/cuda/lib, /opt/rocm/lib).
  std::vector<std::string> toolkit_dirs;
  std::string dev_dir = "/dev";    // /dev/nvidiactl, /dev/kfd
  std::string proc_dir = "/proc";  // /proc/driver/nvidia/gpus

  static SearchEnvironment FromProcess();
};

// A shared library found by name: its full path and how it was found
// ("LD_LIBRARY_PATH", "loader cache", "NIXL default prefix", ...).
struct EPLB_EXPORT FoundLibrary {
  std::string name;  // the file name searched, e.g. "libnixl_capi.so"
  std::string path;  // empty when not found
  std::string how;
  bool found() const { return !path.empty(); }
};

// Searches `names` (first match wins; "libfoo.so" also matches versioned
// files "libfoo.so.N...") in `first_dirs`, then LD_LIBRARY_PATH, then the
// loader cache, then env.system_dirs, then `last_dirs`; each dir comes with a
// label saying why it is searched. Nothing is opened but directories and the
// cache file. Every place looked at is appended to `searched` when given.
EPLB_EXPORT FoundLibrary FindLibrary(const SearchEnvironment& env, const std::vector<std::string>& names,
                         const LabeledDirs& first_dirs = {}, const LabeledDirs& last_dirs = {},
                         std::vector<std::string>* searched = nullptr);

// The GPU platform and the evidence for it: forced ($EPLB_PLATFORM or the
// `forced` argument), else device nodes (/dev/nvidiactl, /dev/kfd), else the
// driver or runtime libraries in the loader's reach (libcuda.so.1,
// libcudart.so*, libamdhip64.so*).
struct EPLB_EXPORT PlatformDetection {
  Platform platform = Platform::kNone;
  std::string evidence;
};
EPLB_EXPORT PlatformDetection DetectPlatform(const SearchEnvironment& env,
                                 std::optional<Platform> forced = std::nullopt);

// Is NIXL (RIXL on ROCm) installed, and where? Available means eplb's nixl
// communicator can run: the C API library (libnixl_capi.so, installed by
// NIXL >= 1.0 next to libnixl.so) and the UCX backend plugin
// (<plugin dir>/libplugin_UCX.so; plugin dir = $NIXL_PLUGIN_DIR, else the
// wheel's nixl_cu13.libs/nixl, else the library folder's plugins/) are both
// present. Order: $EPLB_NIXL_DIR alone when set; else beside
// $NIXL_PLUGIN_DIR, the active Python environment's site-packages, the
// loader's paths (LD_LIBRARY_PATH, cache, system folders), NIXL's default
// prefix, the interpreters' site folders, eplb's project-local prefix.
struct EPLB_EXPORT NixlDetection {
  bool available = false;
  std::string package;      // "nixl" or "rixl"
  Platform platform = Platform::kNone;
  std::string platform_evidence;
  std::string capi_library;  // full path of libnixl_capi.so when found
  std::string core_library;  // full path of libnixl.so when found
  std::string plugin_dir;
  std::string ucx_plugin;    // full path of libplugin_UCX.so when found
  // UCX's transport modules shipped with a wheel (<pkg>.libs/ucx); "" when
  // NIXL is not a wheel (UCX then finds its modules itself).
  std::string ucx_module_dir;
  std::string how;  // how it was found: "EPLB_NIXL_DIR", "wheel nixl_cu13 in ... (VIRTUAL_ENV)", ...
  // One short phrase for the start-up log line: "nixl found at /opt/...",
  // "nixl not found", "nixl found at X but its UCX plugin is missing", ...
  std::string reason;
  std::vector<std::string> searched;  // every folder looked at, in order
};
EPLB_EXPORT NixlDetection DetectNixl(const SearchEnvironment& env,
                         std::optional<Platform> forced = std::nullopt);

// DetectNixl(SearchEnvironment::FromProcess()).available.
EPLB_EXPORT bool nixl_available();

// NCCL (libnccl.so.2; $EPLB_NCCL_LIBRARY overrides) and the CUDA driver
// (libcuda.so.1) by file search, for `eplb info` and error messages.
struct EPLB_EXPORT GpuLibraries {
  FoundLibrary nccl;
  FoundLibrary cuda_driver;
  FoundLibrary cuda_runtime;
  // NVIDIA GPUs listed by the driver in /proc/driver/nvidia/gpus (no CUDA
  // call); -1 when the driver exposes no such folder.
  int proc_gpu_count = -1;
};
EPLB_EXPORT GpuLibraries DetectGpuLibraries(const SearchEnvironment& env);

}  // namespace eplb
