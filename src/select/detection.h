// Detection pointed at a given search environment (the seam the detection
// tests use), the library search itself, and what only `eplb info` and the
// NCCL loader detect: the GPU platform, NCCL, the CUDA driver and runtime.
// Private to the library, the tools and the tests; engines call DetectNixl()
// (eplb/detect.h) and SelectionFacts::Detect() (eplb/selection.h), which
// search where this process's environment says.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eplb/detect.h"
#include "eplb/selection.h"

namespace eplb {

// Folders to search, each with a label saying why it is searched.
using LabeledDirs = std::vector<std::pair<std::string, std::string>>;  // {dir, label}

// Where detection looks. FromProcess() reads this process's environment and
// the system's standard locations; tests build one by hand to point every
// search at a temporary folder.
struct SearchEnvironment {
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
struct FoundLibrary {
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
FoundLibrary FindLibrary(const SearchEnvironment& env, const std::vector<std::string>& names,
                         const LabeledDirs& first_dirs = {}, const LabeledDirs& last_dirs = {},
                         std::vector<std::string>* searched = nullptr);

// The GPU platform and the evidence for it: forced ($EPLB_PLATFORM or the
// `forced` argument), else device nodes (/dev/nvidiactl, /dev/kfd), else the
// driver or runtime libraries in the loader's reach (libcuda.so.1,
// libcudart.so*, libamdhip64.so*).
struct PlatformDetection {
  Platform platform = Platform::kNone;
  std::string evidence;
};
PlatformDetection DetectPlatform(const SearchEnvironment& env,
                                 std::optional<Platform> forced = std::nullopt);

// DetectNixl (eplb/detect.h) with every search pointed where `env` says.
NixlDetection DetectNixl(const SearchEnvironment& env,
                         std::optional<Platform> forced = std::nullopt);

// NCCL (libnccl.so.2; $EPLB_NCCL_LIBRARY overrides) and the CUDA driver
// (libcuda.so.1) by file search, for `eplb info` and error messages.
struct GpuLibraries {
  FoundLibrary nccl;
  FoundLibrary cuda_driver;
  FoundLibrary cuda_runtime;
  // NVIDIA GPUs listed by the driver in /proc/driver/nvidia/gpus (no CUDA
  // call); -1 when the driver exposes no such folder.
  int proc_gpu_count = -1;
};
GpuLibraries DetectGpuLibraries(const SearchEnvironment& env);

// SelectionFacts::Detect (eplb/selection.h) with every search pointed where
// `env` says.
SelectionFacts DetectSelectionFacts(const SearchEnvironment& env);

}  // namespace eplb
