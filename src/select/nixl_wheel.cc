#include "select/nixl_wheel.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

namespace eplb::select {
namespace fs = std::filesystem;

namespace {

bool IsRegularFile(const fs::path& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDir(const fs::path& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

const std::vector<std::string>& NixlWheelPackages() {
  static const std::vector<std::string> packages = {"nixl_cu13", "nixl_cu12", "nixl"};
  return packages;
}

std::optional<NixlWheel> FindNixlWheel(const std::string& site_dir) {
  if (site_dir.empty()) return std::nullopt;
  const fs::path site(site_dir);
  for (const auto& pkg : NixlWheelPackages()) {
    const fs::path libs = site / ("." + pkg + ".mesonpy.libs");
    if (!IsRegularFile(libs / "libnixl_capi.so") && !IsRegularFile(libs / "libnixl.so")) continue;
    NixlWheel w;
    w.package = pkg;
    w.lib_dir = libs.string();
    // The plugin beside UCX first: its runpath finds UCX there. The copy in
    // the library folder's plugins/ is the fallback NIXL itself would use.
    for (const fs::path& dir : {site / (pkg + ".libs") / "nixl", libs / "plugins"}) {
      if (IsRegularFile(dir / "libplugin_UCX.so")) {
        w.plugin_dir = dir.string();
        break;
      }
    }
    if (w.plugin_dir.empty()) w.plugin_dir = (site / (pkg + ".libs") / "nixl").string();
    const fs::path ucx = site / (pkg + ".libs") / "ucx";
    if (IsDir(ucx)) w.ucx_module_dir = ucx.string();
    return w;
  }
  return std::nullopt;
}

std::vector<std::string> SitePackagesUnder(const std::string& prefix) {
  std::vector<std::string> out;
  if (prefix.empty()) return out;
  std::error_code ec;
  fs::directory_iterator it(fs::path(prefix) / "lib", ec);
  if (ec) return out;
  for (const auto& e : it) {
    const std::string name = e.path().filename().string();
    if (name.rfind("python3", 0) != 0) continue;
    for (const char* leaf : {"site-packages", "dist-packages"}) {  // dist-: Debian's pip
      const fs::path site = e.path() / leaf;
      if (IsDir(site)) out.push_back(site.string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace eplb::select
