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
#include "select/detection.h"
#include "eplb/error.h"
#include "select/ld_cache.h"
#include "select/nixl_wheel.h"

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
  env.nixl_dir = Env("EPLB_NIXL_DIR");
  env.nixl_plugin_dir = Env("NIXL_PLUGIN_DIR");
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    if (auto prefix = Env(var))
      for (const auto& site : select::SitePackagesUnder(*prefix)) env.python_env_sites.emplace_back(site, var);
  }
  if (auto path = Env("PYTHONPATH")) {
    for (const auto& d : SplitPath(*path))
      if (d != ".") env.python_env_sites.emplace_back(d, "PYTHONPATH");
  }
  for (const char* prefix : {"/usr/local", "/usr"}) {
    for (const auto& site : select::SitePackagesUnder(prefix))
      env.python_system_sites.emplace_back(site, "Python site folder");
  }
  env.python_system_sites.emplace_back("/usr/lib/python3/dist-packages", "Python site folder");
  if (auto home = Env("HOME")) {
    for (const auto& site : select::SitePackagesUnder(*home + "/.local"))
      env.python_system_sites.emplace_back(site, "Python user site folder");
  }
#ifdef EPLB_NIXL_PREFIX
  env.python_system_sites.emplace_back(std::string(EPLB_NIXL_PREFIX) + "/site-packages",
                                       "eplb's project-local prefix from scripts/setup.sh");
#endif
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

namespace {

// Where NIXL's libraries were found, before the checks that make it usable.
struct NixlCandidate {
  std::string capi, core, plugin_dir, ucx_module_dir, how;
};

NixlCandidate FromWheel(const select::NixlWheel& w, const std::string& label) {
  NixlCandidate c;
  c.capi = FindInDir(w.lib_dir, "libnixl_capi.so");
  c.core = FindInDir(w.lib_dir, "libnixl.so");
  c.plugin_dir = w.plugin_dir;
  c.ucx_module_dir = w.ucx_module_dir;
  c.how = "wheel " + w.package + ", " + label;
  return c;
}

std::optional<NixlCandidate> FromLibraryDir(const std::string& dir, const std::string& label) {
  NixlCandidate c;
  c.capi = FindInDir(dir, "libnixl_capi.so");
  c.core = FindInDir(dir, "libnixl.so");
  if (c.capi.empty() && c.core.empty()) return std::nullopt;
  c.how = label;
  return c;
}

std::optional<NixlCandidate> SearchWheels(const LabeledDirs& sites, std::vector<std::string>& searched) {
  for (const auto& [site, label] : sites) {
    searched.push_back(site);
    if (auto w = select::FindNixlWheel(site)) return FromWheel(*w, label);
  }
  return std::nullopt;
}

// EPLB_NIXL_DIR: a site-packages folder with the wheel, a library folder, or
// a prefix with lib/, lib64/ or lib/<triplet>/. Nothing else is searched.
std::optional<NixlCandidate> SearchExplicit(const std::string& dir, std::vector<std::string>& searched) {
  const std::string label = "EPLB_NIXL_DIR";
  searched.push_back(dir);
  if (auto w = select::FindNixlWheel(dir)) return FromWheel(*w, label);
  for (const std::string& sub : {std::string(), std::string("lib/") + kTriplet, std::string("lib"), std::string("lib64")}) {
    const std::string d = sub.empty() ? dir : (fs::path(dir) / sub).string();
    if (!sub.empty()) searched.push_back(d);
    if (auto c = FromLibraryDir(d, label)) return c;
  }
  return std::nullopt;
}

}  // namespace

NixlDetection DetectNixl(const SearchEnvironment& env, std::optional<Platform> forced) {
  NixlDetection d;
  PlatformDetection platform = DetectPlatform(env, forced);
  d.platform = platform.platform;
  d.platform_evidence = platform.evidence;
  const bool rocm = d.platform == Platform::kRocm;
  d.package = rocm ? "rixl" : "nixl";

  std::optional<NixlCandidate> found;
  const bool explicit_dir = env.nixl_dir && !env.nixl_dir->empty();
  if (explicit_dir) {
    if (Lower(*env.nixl_dir) == "none") {
      d.reason = d.package + " hidden by EPLB_NIXL_DIR=" + *env.nixl_dir;
      return d;
    }
    found = SearchExplicit(*env.nixl_dir, d.searched);
    if (!found) {
      d.reason = d.package + " not found in EPLB_NIXL_DIR=" + *env.nixl_dir;
      return d;
    }
  }
  if (!found && env.nixl_plugin_dir && !env.nixl_plugin_dir->empty()) {
    fs::path plugins = fs::path(*env.nixl_plugin_dir).lexically_normal();
    if (!plugins.has_filename()) plugins = plugins.parent_path();  // "x/plugins/"
    d.searched.push_back(plugins.parent_path().string());
    found = FromLibraryDir(plugins.parent_path().string(), "parent of NIXL_PLUGIN_DIR");
  }
  // NIXL's wheels are CUDA builds: they do not count on ROCm.
  if (!found && !rocm) found = SearchWheels(env.python_env_sites, d.searched);
  if (!found) {
    LabeledDirs last;
    for (const auto& dir : rocm ? env.rixl_default_dirs : env.nixl_default_dirs)
      last.emplace_back(dir, d.package + " default prefix");
    FoundLibrary capi = FindLibrary(env, {"libnixl_capi.so"}, {}, last, &d.searched);
    if (capi.found()) {
      found = NixlCandidate{capi.path, FindInDir(ParentDir(capi.path), "libnixl.so"), "", "", capi.how};
    } else if (!rocm) {
      found = SearchWheels(env.python_system_sites, d.searched);
    }
    if (!found) {
      FoundLibrary core = FindLibrary(env, {"libnixl.so"}, {}, last);
      if (core.found()) found = NixlCandidate{"", core.path, "", "", core.how};
    }
  }
  if (!found) {
    d.reason = d.package + " not found";
    return d;
  }

  d.capi_library = found->capi;
  d.core_library = found->core;
  d.ucx_module_dir = found->ucx_module_dir;
  d.how = found->how;
  const std::string lib_dir = ParentDir(found->capi.empty() ? found->core : found->capi);
  if (env.nixl_plugin_dir && !env.nixl_plugin_dir->empty())
    d.plugin_dir = *env.nixl_plugin_dir;  // the user's setting wins, as it does in NIXL
  else if (!found->plugin_dir.empty())
    d.plugin_dir = found->plugin_dir;
  else
    d.plugin_dir = (fs::path(lib_dir) / "plugins").string();
  std::string ucx = (fs::path(d.plugin_dir) / "libplugin_UCX.so").string();
  if (IsRegularFile(ucx)) d.ucx_plugin = ucx;

  if (found->capi.empty()) {
    d.reason = d.package + " found at " + found->core +
               " but not its C API library libnixl_capi.so (installed by NIXL >= 1.0)";
  } else if (d.ucx_plugin.empty()) {
    d.reason = d.package + " found at " + found->capi + " but its UCX plugin " + ucx + " is missing";
  } else {
    d.available = true;
    d.reason = d.package + " found at " + found->capi + " (" + found->how + ")";
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
