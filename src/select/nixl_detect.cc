// Detection by file search only (detect.h). Nothing here may dlopen, exec or
// otherwise run code from the libraries it looks for: a broken or hostile
// installation must not be able to take the process down at start-up.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "eplb/detect.h"
#include "eplb/error.h"
#include "select/ld_cache.h"

namespace eplb {
namespace fs = std::filesystem;

namespace {

#if defined(__aarch64__)
constexpr const char* kTriplet = "aarch64-linux-gnu";
#else
constexpr const char* kTriplet = "x86_64-linux-gnu";
#endif

std::optional<std::string> Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);  // follows symlinks
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// "libfoo.so" matches "libfoo.so" and "libfoo.so.1.2"; "libfoo.so.2" only
// matches itself and "libfoo.so.2.x".
bool NameMatches(const std::string& file, const std::string& wanted) {
  if (file == wanted) return true;
  return file.size() > wanted.size() + 1 && file.compare(0, wanted.size(), wanted) == 0 &&
         file[wanted.size()] == '.' && std::isdigit(static_cast<unsigned char>(file[wanted.size() + 1]));
}

// The first file in `dir` matching `wanted`: the exact name when present,
// else the lexicographically smallest versioned one (deterministic).
std::string FindInDir(const std::string& dir, const std::string& wanted) {
  if (dir.empty()) return "";
  std::string exact = (fs::path(dir) / wanted).string();
  if (IsRegularFile(exact)) return exact;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return "";
  std::vector<std::string> hits;
  for (const auto& entry : it) {
    std::string file = entry.path().filename().string();
    if (NameMatches(file, wanted) && IsRegularFile(entry.path().string()))
      hits.push_back(entry.path().string());
  }
  if (hits.empty()) return "";
  return *std::min_element(hits.begin(), hits.end());
}

std::vector<std::string> SplitPath(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(':', start);
    if (end == std::string::npos) end = s.size();
    // An empty element means the current directory to the loader.
    out.push_back(end > start ? s.substr(start, end - start) : ".");
    start = end + 1;
  }
  return out;
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string ParentDir(const std::string& path) { return fs::path(path).parent_path().string(); }

}  // namespace

const char* PlatformName(Platform p) {
  switch (p) {
    case Platform::kCuda: return "cuda";
    case Platform::kRocm: return "rocm";
    case Platform::kNone: break;
  }
  return "none";
}

Platform ParsePlatform(const std::string& name) {
  std::string n = Lower(name);
  if (n == "cuda") return Platform::kCuda;
  if (n == "rocm") return Platform::kRocm;
  if (n == "none") return Platform::kNone;
  throw InvalidArgument("unknown platform '" + name + "' (valid: none, cuda, rocm)");
}

SearchEnvironment SearchEnvironment::FromProcess() {
  SearchEnvironment env;
  env.nixl_plugin_dir = Env("NIXL_PLUGIN_DIR");
  env.ld_library_path = Env("LD_LIBRARY_PATH");
  env.forced_platform = Env("EPLB_PLATFORM");
  env.nccl_library = Env("EPLB_NCCL_LIBRARY");
  const std::string t = kTriplet;
  env.nixl_default_dirs = {"/opt/nvidia/nvda_nixl/lib/" + t, "/opt/nvidia/nvda_nixl/lib",
                           "/opt/nvidia/nvda_nixl/lib64"};
  env.rixl_default_dirs = {"/opt/rocm/rixl/lib/" + t, "/opt/rocm/rixl/lib", "/opt/rocm/rixl/lib64"};
  env.system_dirs = {"/lib/" + t, "/usr/lib/" + t, "/lib64", "/usr/lib64", "/lib", "/usr/lib"};
  env.toolkit_dirs = {"/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/opt/rocm/lib"};
  return env;
}

FoundLibrary FindLibrary(const SearchEnvironment& env, const std::vector<std::string>& names,
                         const LabeledDirs& first_dirs, const LabeledDirs& last_dirs,
                         std::vector<std::string>* searched) {
  FoundLibrary result;
  result.name = names.empty() ? "" : names.front();
  auto note = [&](const std::string& where) {
    if (searched && std::find(searched->begin(), searched->end(), where) == searched->end())
      searched->push_back(where);
  };
  auto try_dirs = [&](const LabeledDirs& dirs) {
    for (const auto& [dir, label] : dirs) {
      note(dir);
      for (const auto& name : names) {
        std::string hit = FindInDir(dir, name);
        if (!hit.empty()) {
          result = {name, hit, label};
          return true;
        }
      }
    }
    return false;
  };

  if (try_dirs(first_dirs)) return result;
  if (env.ld_library_path && !env.ld_library_path->empty()) {
    LabeledDirs dirs;
    for (const auto& d : SplitPath(*env.ld_library_path)) dirs.emplace_back(d, "LD_LIBRARY_PATH");
    if (try_dirs(dirs)) return result;
  }
  if (!env.ld_cache.empty()) {
    note("loader cache " + env.ld_cache);
    auto entries = select::ReadLdCache(env.ld_cache);
    for (const auto& name : names) {
      for (const auto& e : entries) {
        if (NameMatches(e.name, name) && IsRegularFile(e.path)) {
          result = {name, e.path, "loader cache " + env.ld_cache};
          return result;
        }
      }
    }
  }
  LabeledDirs system;
  for (const auto& d : env.system_dirs) system.emplace_back(d, "system library folder");
  if (try_dirs(system)) return result;
  if (try_dirs(last_dirs)) return result;
  return result;
}

PlatformDetection DetectPlatform(const SearchEnvironment& env, std::optional<Platform> forced) {
  if (forced) return {*forced, "forced by the caller"};
  if (env.forced_platform && !env.forced_platform->empty()) {
    try {
      return {ParsePlatform(*env.forced_platform), "forced by EPLB_PLATFORM"};
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(std::string("EPLB_PLATFORM: ") + e.what());
    }
  }
  const fs::path dev(env.dev_dir), proc(env.proc_dir);
  if (Exists((dev / "nvidiactl").string())) return {Platform::kCuda, (dev / "nvidiactl").string() + " present"};
  if (Exists((dev / "kfd").string())) return {Platform::kRocm, (dev / "kfd").string() + " present"};
  if (Exists((proc / "driver/nvidia/version").string()))
    return {Platform::kCuda, (proc / "driver/nvidia/version").string() + " present"};
  LabeledDirs toolkit;
  for (const auto& d : env.toolkit_dirs) toolkit.emplace_back(d, "toolkit folder");
  struct Probe {
    std::vector<std::string> names;
    Platform platform;
    bool use_toolkit;
  };
  // Drivers first (they mean a GPU can be driven), then runtimes.
  const Probe probes[] = {{{"libcuda.so.1"}, Platform::kCuda, false},
                          {{"libamdhip64.so"}, Platform::kRocm, true},
                          {{"libcudart.so"}, Platform::kCuda, true}};
  for (const auto& p : probes) {
    FoundLibrary lib = FindLibrary(env, p.names, {}, p.use_toolkit ? toolkit : LabeledDirs{});
    if (lib.found()) return {p.platform, lib.path + " (" + lib.how + ")"};
  }
  return {Platform::kNone, "no GPU device node, driver or runtime library found"};
}

NixlDetection DetectNixl(const SearchEnvironment& env, std::optional<Platform> forced) {
  NixlDetection d;
  PlatformDetection platform = DetectPlatform(env, forced);
  d.platform = platform.platform;
  d.platform_evidence = platform.evidence;
  const bool rocm = d.platform == Platform::kRocm;
  d.package = rocm ? "rixl" : "nixl";

  LabeledDirs first, last;
  if (env.nixl_plugin_dir && !env.nixl_plugin_dir->empty()) {
    fs::path plugins = fs::path(*env.nixl_plugin_dir).lexically_normal();
    if (!plugins.has_filename()) plugins = plugins.parent_path();  // "x/plugins/"
    first.emplace_back(plugins.parent_path().string(), "parent of NIXL_PLUGIN_DIR");
  }
  for (const auto& dir : rocm ? env.rixl_default_dirs : env.nixl_default_dirs)
    last.emplace_back(dir, d.package + " default prefix");

  FoundLibrary capi = FindLibrary(env, {"libnixl_capi.so"}, first, last, &d.searched);
  // The core library: beside the C API when that was found (the C API links
  // to it there), else wherever the search finds it.
  std::string core;
  if (capi.found()) core = FindInDir(ParentDir(capi.path), "libnixl.so");
  if (core.empty()) core = FindLibrary(env, {"libnixl.so"}, first, last).path;
  d.capi_library = capi.path;
  d.core_library = core;

  if (!capi.found() && core.empty()) {
    d.reason = d.package + " not found";
    return d;
  }
  const std::string lib_dir = ParentDir(capi.found() ? capi.path : core);
  d.plugin_dir = env.nixl_plugin_dir && !env.nixl_plugin_dir->empty()
                     ? *env.nixl_plugin_dir
                     : (fs::path(lib_dir) / "plugins").string();
  std::string ucx = (fs::path(d.plugin_dir) / "libplugin_UCX.so").string();
  if (IsRegularFile(ucx)) d.ucx_plugin = ucx;

  if (!capi.found()) {
    d.reason = d.package + " found at " + core +
               " but not its C API library libnixl_capi.so (installed by NIXL >= 1.0)";
  } else if (d.ucx_plugin.empty()) {
    d.reason = d.package + " found at " + capi.path + " but its UCX plugin " + ucx + " is missing";
  } else {
    d.available = true;
    d.reason = d.package + " found at " + capi.path + " (" + capi.how + ")";
  }
  return d;
}

bool nixl_available() { return DetectNixl(SearchEnvironment::FromProcess()).available; }

GpuLibraries DetectGpuLibraries(const SearchEnvironment& env) {
  GpuLibraries g;
  LabeledDirs toolkit;
  for (const auto& d : env.toolkit_dirs) toolkit.emplace_back(d, "toolkit folder");
  if (env.nccl_library && !env.nccl_library->empty()) {
    g.nccl.name = "libnccl.so.2";
    if (IsRegularFile(*env.nccl_library)) {
      g.nccl.path = *env.nccl_library;
      g.nccl.how = "EPLB_NCCL_LIBRARY";
    } else {
      g.nccl.how = "EPLB_NCCL_LIBRARY=" + *env.nccl_library + " is not a file";
    }
  } else {
    g.nccl = FindLibrary(env, {"libnccl.so.2", "libnccl.so"}, {}, toolkit);
  }
  g.cuda_driver = FindLibrary(env, {"libcuda.so.1"});
  g.cuda_runtime = FindLibrary(env, {"libcudart.so"}, {}, toolkit);
  std::error_code ec;
  fs::path gpus = fs::path(env.proc_dir) / "driver/nvidia/gpus";
  if (fs::is_directory(gpus, ec)) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(gpus, ec)) {
      (void)e;
      ++n;
    }
    g.proc_gpu_count = n;
  }
  return g;
}

}  // namespace eplb
