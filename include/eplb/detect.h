// Whether NIXL (RIXL on ROCm) is installed on this machine, and where. Found
// by looking at files only, the way the dynamic loader and NIXL themselves
// would look: nothing is loaded, no constructor of a foreign library runs, no
// subprocess is started. This is the C++ counterpart of Python's
// `importlib.util.find_spec("nixl")` that the default communicator rule
// (DESIGN.md layer 4, vLLM PR #43110) relies on.
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
// Searches this process's environment and the system's standard locations.
EPLB_EXPORT NixlDetection DetectNixl(std::optional<Platform> forced = std::nullopt);

// DetectNixl().available.
EPLB_EXPORT bool nixl_available();

}  // namespace eplb
