// Detection of NIXL / platform / GPU libraries by file search only.
#include "eplb/detect.h"
#include "select/detection.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "eplb/error.h"
#include "select/ld_cache.h"
#include "select/nixl_wheel.h"
#include "support/paths.h"

namespace eplb {
namespace {

namespace fs = std::filesystem;

// An environment that searches nothing of the real system.
SearchEnvironment Isolated() {
  SearchEnvironment env;
  env.ld_cache = "";
  env.dev_dir = "/nonexistent-dev";
  env.proc_dir = "/nonexistent-proc";
  return env;
}

void Copy(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

void Write(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// Installs a fake NIXL whose every library aborts the process when loaded.
void InstallPoisonedNixl(const std::string& lib_dir, bool with_capi = true, bool with_plugin = true) {
  Copy(EPLB_ABORT_ON_LOAD_LIB, lib_dir + "/libnixl.so");
  if (with_capi) Copy(EPLB_ABORT_ON_LOAD_LIB, lib_dir + "/libnixl_capi.so");
  if (with_plugin) Copy(EPLB_ABORT_ON_LOAD_LIB, lib_dir + "/plugins/libplugin_UCX.so");
}

bool MappedInThisProcess(const std::string& dir) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(dir) != std::string::npos) return true;
  return false;
}

TEST(AbortOnLoadFixture, ReallyKillsAProcessThatLoadsIt) {
  // Without this, "the process is unharmed" below would prove nothing.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dlopen(EPLB_ABORT_ON_LOAD_LIB, RTLD_NOW);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGABRT);
}

TEST(DetectNixl, FindsPoisonedInstallWithoutLoadingIt) {
  std::string dir = test::MakeTempDir("eplb-nixl-");
  InstallPoisonedNixl(dir + "/lib");
  SearchEnvironment env = Isolated();
  env.ld_library_path = "/nonexistent:" + dir + "/lib";
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.package, "nixl");
  EXPECT_EQ(d.capi_library, dir + "/lib/libnixl_capi.so");
  EXPECT_EQ(d.core_library, dir + "/lib/libnixl.so");
  EXPECT_EQ(d.plugin_dir, dir + "/lib/plugins");
  EXPECT_EQ(d.ucx_plugin, dir + "/lib/plugins/libplugin_UCX.so");
  EXPECT_NE(d.reason.find("nixl found at " + dir + "/lib/libnixl_capi.so (LD_LIBRARY_PATH)"), std::string::npos)
      << d.reason;
  // Still alive, and nothing from that folder is mapped into the process.
  EXPECT_FALSE(MappedInThisProcess(dir));
}

TEST(DetectNixl, GarbageFilesCountAsInstalled) {
  // Like find_spec, detection looks at names, not contents.
  std::string dir = test::MakeTempDir("eplb-nixl-");
  Write(dir + "/libnixl_capi.so.1", "\x7f" "ELF but not really");
  Write(dir + "/libnixl.so.1", "garbage");
  Write(dir + "/plugins/libplugin_UCX.so", "garbage");
  SearchEnvironment env = Isolated();
  env.ld_library_path = dir;
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.capi_library, dir + "/libnixl_capi.so.1");
}

TEST(DetectNixl, NotFoundListsWhereItLooked) {
  SearchEnvironment env = Isolated();
  env.ld_library_path = "/nonexistent-a";
  env.nixl_default_dirs = {"/nonexistent-default"};
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_FALSE(d.available);
  EXPECT_EQ(d.reason, "nixl not found");
  EXPECT_EQ(d.searched, (std::vector<std::string>{"/nonexistent-a", "/nonexistent-default"}));
}

TEST(DetectNixl, MissingUcxPluginIsNotAvailable) {
  std::string dir = test::MakeTempDir("eplb-nixl-");
  InstallPoisonedNixl(dir, /*with_capi=*/true, /*with_plugin=*/false);
  SearchEnvironment env = Isolated();
  env.ld_library_path = dir;
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_FALSE(d.available);
  EXPECT_NE(d.reason.find("UCX plugin " + dir + "/plugins/libplugin_UCX.so is missing"), std::string::npos)
      << d.reason;
}

TEST(DetectNixl, CoreWithoutCApiIsNotAvailable) {
  std::string dir = test::MakeTempDir("eplb-nixl-");
  InstallPoisonedNixl(dir, /*with_capi=*/false);
  SearchEnvironment env = Isolated();
  env.ld_library_path = dir;
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_FALSE(d.available);
  EXPECT_EQ(d.core_library, dir + "/libnixl.so");
  EXPECT_NE(d.reason.find("libnixl_capi.so"), std::string::npos) << d.reason;
}

TEST(DetectNixl, PluginDirFromEnvironmentAndLibraryBesideIt) {
  std::string dir = test::MakeTempDir("eplb-nixl-");
  InstallPoisonedNixl(dir + "/lib");
  SearchEnvironment env = Isolated();
  env.nixl_plugin_dir = dir + "/lib/plugins/";
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_NE(d.reason.find("parent of NIXL_PLUGIN_DIR"), std::string::npos) << d.reason;

  // A plugin folder elsewhere: NIXL_PLUGIN_DIR decides where the UCX plugin must be.
  std::string plugins = test::MakeTempDir("eplb-plugins-");
  env.nixl_plugin_dir = plugins;
  env.ld_library_path = dir + "/lib";
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_FALSE(d.available) << "the UCX plugin is not in NIXL_PLUGIN_DIR";
  Copy(EPLB_ABORT_ON_LOAD_LIB, plugins + "/libplugin_UCX.so");
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.ucx_plugin, plugins + "/libplugin_UCX.so");
}

TEST(DetectNixl, DefaultPrefixPerPlatform) {
  std::string nixl = test::MakeTempDir("eplb-nvda-nixl-");
  std::string rixl = test::MakeTempDir("eplb-rocm-rixl-");
  InstallPoisonedNixl(nixl);
  SearchEnvironment env = Isolated();
  env.nixl_default_dirs = {nixl};
  env.rixl_default_dirs = {rixl};

  NixlDetection cuda = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(cuda.available) << cuda.reason;
  EXPECT_NE(cuda.reason.find("nixl default prefix"), std::string::npos) << cuda.reason;

  // On ROCm the package is RIXL, at its own prefix: NVIDIA's NIXL does not count.
  NixlDetection rocm = DetectNixl(env, Platform::kRocm);
  EXPECT_FALSE(rocm.available);
  EXPECT_EQ(rocm.package, "rixl");
  EXPECT_EQ(rocm.reason, "rixl not found");
  InstallPoisonedNixl(rixl);
  rocm = DetectNixl(env, Platform::kRocm);
  EXPECT_TRUE(rocm.available) << rocm.reason;
  EXPECT_EQ(rocm.capi_library, rixl + "/libnixl_capi.so");
  EXPECT_NE(rocm.reason.find("rixl found at"), std::string::npos) << rocm.reason;
}

// A fake NIXL wheel unpacked into `site`, laid out as pip leaves nixl-cu13:
// the libraries (each aborting the process if loaded) in
// .nixl_cu13.mesonpy.libs/, the UCX plugin beside UCX in nixl_cu13.libs/nixl/.
void InstallPoisonedWheel(const std::string& site, const std::string& package = "nixl_cu13") {
  const std::string libs = site + "/." + package + ".mesonpy.libs";
  Copy(EPLB_ABORT_ON_LOAD_LIB, libs + "/libnixl.so");
  Copy(EPLB_ABORT_ON_LOAD_LIB, libs + "/libnixl_capi.so");
  Copy(EPLB_ABORT_ON_LOAD_LIB, site + "/" + package + ".libs/nixl/libplugin_UCX.so");
  Copy(EPLB_ABORT_ON_LOAD_LIB, site + "/" + package + ".libs/ucx/libuct_cma.so.0");
}

TEST(DetectNixl, FindsAWheelInTheActiveEnvironmentWithoutLoadingIt) {
  std::string venv = test::MakeTempDir("eplb-venv-");
  std::string site = venv + "/lib/python3.11/site-packages";
  InstallPoisonedWheel(site);
  SearchEnvironment env = Isolated();
  env.python_env_sites = {{site, "VIRTUAL_ENV"}};
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.capi_library, site + "/.nixl_cu13.mesonpy.libs/libnixl_capi.so");
  EXPECT_EQ(d.core_library, site + "/.nixl_cu13.mesonpy.libs/libnixl.so");
  EXPECT_EQ(d.plugin_dir, site + "/nixl_cu13.libs/nixl");
  EXPECT_EQ(d.ucx_plugin, site + "/nixl_cu13.libs/nixl/libplugin_UCX.so");
  EXPECT_EQ(d.ucx_module_dir, site + "/nixl_cu13.libs/ucx");
  EXPECT_EQ(d.how, "wheel nixl_cu13, VIRTUAL_ENV");
  EXPECT_FALSE(MappedInThisProcess(venv));
}

TEST(DetectNixl, SitePackagesOfAPythonPrefix) {
  std::string prefix = test::MakeTempDir("eplb-prefix-");
  fs::create_directories(prefix + "/lib/python3.12/site-packages");
  fs::create_directories(prefix + "/lib/python3.11/dist-packages");
  fs::create_directories(prefix + "/lib/perl5/site-packages");
  Write(prefix + "/lib/python3.10/site-packages", "a file, not a folder");
  std::vector<std::string> want = {prefix + "/lib/python3.11/dist-packages",
                                   prefix + "/lib/python3.12/site-packages"};
  EXPECT_EQ(select::SitePackagesUnder(prefix), want);
  EXPECT_TRUE(select::SitePackagesUnder(prefix + "/missing").empty());
}

TEST(DetectNixl, OrderEnvironmentThenLoaderThenSystemSites) {
  std::string env_site = test::MakeTempDir("eplb-env-site-");
  std::string sys_site = test::MakeTempDir("eplb-sys-site-");
  std::string lib = test::MakeTempDir("eplb-ld-");
  InstallPoisonedWheel(env_site, "nixl_cu12");
  InstallPoisonedWheel(sys_site);
  InstallPoisonedNixl(lib);
  SearchEnvironment env = Isolated();
  env.python_env_sites = {{env_site, "PYTHONPATH"}};
  env.python_system_sites = {{sys_site, "Python site folder"}};
  env.ld_library_path = lib;
  // The active environment first, as `import nixl` would find it...
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_EQ(d.how, "wheel nixl_cu12, PYTHONPATH") << d.reason;
  // ...then the loader's paths...
  env.python_env_sites.clear();
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_EQ(d.capi_library, lib + "/libnixl_capi.so");
  EXPECT_EQ(d.plugin_dir, lib + "/plugins");
  EXPECT_TRUE(d.ucx_module_dir.empty());
  // ...and the interpreters' folders after everything else.
  env.ld_library_path.reset();
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_EQ(d.how, "wheel nixl_cu13, Python site folder") << d.reason;
  EXPECT_TRUE(d.available);
  // NIXL's wheels are CUDA builds: on ROCm they do not count as RIXL.
  EXPECT_FALSE(DetectNixl(env, Platform::kRocm).available);
}

TEST(DetectNixl, ExplicitDirectoryIsTheOnlyPlaceSearched) {
  std::string site = test::MakeTempDir("eplb-explicit-site-");
  std::string prefix = test::MakeTempDir("eplb-explicit-prefix-");
  std::string elsewhere = test::MakeTempDir("eplb-elsewhere-");
  InstallPoisonedWheel(site);
  InstallPoisonedNixl(prefix + "/lib");
  InstallPoisonedNixl(elsewhere);
  SearchEnvironment env = Isolated();
  env.ld_library_path = elsewhere;

  env.nixl_dir = site;  // a site-packages folder with the wheel
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.how, "wheel nixl_cu13, EPLB_NIXL_DIR");
  env.nixl_dir = prefix;  // a prefix with lib/
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_EQ(d.capi_library, prefix + "/lib/libnixl_capi.so") << d.reason;
  EXPECT_EQ(d.how, "EPLB_NIXL_DIR");
  env.nixl_dir = prefix + "/lib";  // the library folder itself
  EXPECT_EQ(DetectNixl(env, Platform::kCuda).capi_library, prefix + "/lib/libnixl_capi.so");

  // Set but empty of NIXL: not found, and no fall-back to LD_LIBRARY_PATH.
  std::string empty = test::MakeTempDir("eplb-explicit-empty-");
  env.nixl_dir = empty;
  d = DetectNixl(env, Platform::kCuda);
  EXPECT_FALSE(d.available);
  EXPECT_EQ(d.reason, "nixl not found in EPLB_NIXL_DIR=" + empty);
  EXPECT_TRUE(d.capi_library.empty());
  // "none" (any case) hides NIXL wherever it is.
  for (const char* none : {"none", "NONE"}) {
    env.nixl_dir = none;
    d = DetectNixl(env, Platform::kCuda);
    EXPECT_FALSE(d.available);
    EXPECT_EQ(d.reason, std::string("nixl hidden by EPLB_NIXL_DIR=") + none);
  }
  EXPECT_FALSE(MappedInThisProcess(site));
  EXPECT_FALSE(MappedInThisProcess(prefix));
}

TEST(DetectNixl, UserPluginDirWinsOverTheWheels) {
  std::string site = test::MakeTempDir("eplb-plugin-site-");
  std::string plugins = test::MakeTempDir("eplb-own-plugins-");
  InstallPoisonedWheel(site);
  Copy(EPLB_ABORT_ON_LOAD_LIB, plugins + "/libplugin_UCX.so");
  SearchEnvironment env = Isolated();
  env.python_env_sites = {{site, "VIRTUAL_ENV"}};
  env.nixl_plugin_dir = plugins;
  NixlDetection d = DetectNixl(env, Platform::kCuda);
  EXPECT_TRUE(d.available) << d.reason;
  EXPECT_EQ(d.plugin_dir, plugins);
  EXPECT_EQ(d.ucx_plugin, plugins + "/libplugin_UCX.so");
}

TEST(DetectPlatform, DeviceNodesDriversAndForcing) {
  std::string dev = test::MakeTempDir("eplb-dev-");
  SearchEnvironment env = Isolated();
  env.dev_dir = dev;
  EXPECT_EQ(DetectPlatform(env).platform, Platform::kNone);

  Write(dev + "/kfd", "");
  PlatformDetection p = DetectPlatform(env);
  EXPECT_EQ(p.platform, Platform::kRocm);
  EXPECT_EQ(p.evidence, dev + "/kfd present");
  EXPECT_EQ(DetectNixl(env).package, "rixl");

  Write(dev + "/nvidiactl", "");
  EXPECT_EQ(DetectPlatform(env).platform, Platform::kCuda);

  env.forced_platform = "ROCm";
  p = DetectPlatform(env);
  EXPECT_EQ(p.platform, Platform::kRocm);
  EXPECT_EQ(p.evidence, "forced by EPLB_PLATFORM");
  EXPECT_EQ(DetectPlatform(env, Platform::kNone).platform, Platform::kNone);  // the argument wins
  env.forced_platform = "tpu";
  EXPECT_THROW(DetectPlatform(env), InvalidArgument);
}

TEST(DetectPlatform, RuntimeLibraryInReach) {
  std::string dir = test::MakeTempDir("eplb-hip-");
  Write(dir + "/libamdhip64.so.6", "");
  SearchEnvironment env = Isolated();
  env.toolkit_dirs = {dir};
  PlatformDetection p = DetectPlatform(env);
  EXPECT_EQ(p.platform, Platform::kRocm);
  EXPECT_NE(p.evidence.find("libamdhip64.so.6"), std::string::npos) << p.evidence;
}

TEST(FindLibrary, VersionedNamesAndOrder) {
  std::string a = test::MakeTempDir("eplb-a-"), b = test::MakeTempDir("eplb-b-");
  Write(a + "/libfoo.so.2.1", "");
  Write(a + "/libfoo.sox", "");
  Write(b + "/libfoo.so", "");
  SearchEnvironment env = Isolated();
  env.ld_library_path = a + ":" + b;
  FoundLibrary f = FindLibrary(env, {"libfoo.so"});
  EXPECT_EQ(f.path, a + "/libfoo.so.2.1");
  EXPECT_EQ(f.how, "LD_LIBRARY_PATH");
  EXPECT_FALSE(FindLibrary(env, {"libfoo.so.3"}).found());
  // first_dirs come before LD_LIBRARY_PATH.
  f = FindLibrary(env, {"libfoo.so"}, {{b, "mine"}});
  EXPECT_EQ(f.path, b + "/libfoo.so");
  EXPECT_EQ(f.how, "mine");
}

TEST(LdCache, MatchesLdconfig) {
  std::string problem;
  auto entries = select::ReadLdCache("/etc/ld.so.cache", &problem);
  if (!fs::exists("/etc/ld.so.cache")) GTEST_SKIP() << "no /etc/ld.so.cache here";
  ASSERT_FALSE(entries.empty()) << problem;
  bool libc = false;
  for (const auto& e : entries) libc |= e.name == "libc.so.6" && fs::exists(e.path);
  EXPECT_TRUE(libc) << "libc.so.6 not in the parsed cache";

  // The same (name, path) pairs as `ldconfig -p` for this architecture.
  const char* ldconfig = fs::exists("/sbin/ldconfig") ? "/sbin/ldconfig" : "/usr/sbin/ldconfig";
  if (!fs::exists(ldconfig)) return;
  FILE* p = popen((std::string(ldconfig) + " -p").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::set<std::pair<std::string, std::string>> expected, actual;
  char line[4096];
  while (fgets(line, sizeof line, p)) {
    std::string s(line);
    auto arrow = s.find(" => ");
    auto paren = s.find(" (");
    if (arrow == std::string::npos || paren == std::string::npos) continue;
#if defined(__x86_64__)
    if (s.find("x86-64") == std::string::npos) continue;
#endif
    std::string name = s.substr(0, paren);
    name.erase(0, name.find_first_not_of(" \t"));
    std::string path = s.substr(arrow + 4);
    path.erase(path.find_last_not_of("\n") + 1);
    expected.insert({name, path});
  }
  pclose(p);
  for (const auto& e : entries) actual.insert({e.name, e.path});
  EXPECT_EQ(actual, expected);
}

TEST(LdCache, MalformedCacheIsEmptyWithAReason) {
  std::string dir = test::MakeTempDir("eplb-cache-");
  Write(dir + "/ld.so.cache", "glibc-ld.so.cache1.1 truncated");
  std::string problem;
  EXPECT_TRUE(select::ReadLdCache(dir + "/ld.so.cache", &problem).empty());
  EXPECT_NE(problem.find("ld.so.cache"), std::string::npos) << problem;
  EXPECT_TRUE(select::ReadLdCache(dir + "/missing", &problem).empty());
  EXPECT_NE(problem.find("cannot open"), std::string::npos);
}

TEST(DetectGpuLibraries, NcclOverrideAndProcGpus) {
  std::string dir = test::MakeTempDir("eplb-gpu-");
  Write(dir + "/custom/nccl.so", "");
  Write(dir + "/proc/driver/nvidia/gpus/0000:01:00.0/information", "");
  Write(dir + "/proc/driver/nvidia/gpus/0000:02:00.0/information", "");
  SearchEnvironment env = Isolated();
  env.proc_dir = dir + "/proc";
  env.nccl_library = dir + "/custom/nccl.so";
  GpuLibraries g = DetectGpuLibraries(env);
  EXPECT_EQ(g.nccl.path, dir + "/custom/nccl.so");
  EXPECT_EQ(g.nccl.how, "EPLB_NCCL_LIBRARY");
  EXPECT_EQ(g.proc_gpu_count, 2);
  env.nccl_library = dir + "/missing.so";
  g = DetectGpuLibraries(env);
  EXPECT_FALSE(g.nccl.found());
  EXPECT_NE(g.nccl.how.find("is not a file"), std::string::npos);
}

}  // namespace
}  // namespace eplb
