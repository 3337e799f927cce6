// NIXL as pip installs it: a wheel (nixl-cu13, nixl-cu12, or the `nixl`
// meta package's payload) unpacked into a site-packages folder. Its layout,
// read from NIXL's wheel build:
//   .<pkg>.mesonpy.libs/libnixl_capi.so, libnixl.so, ...  NIXL itself
//   <pkg>.libs/nixl/libplugin_UCX.so                       the UCX plugin (its
//                                                          runpath reaches UCX)
//   <pkg>.libs/ucx/                                        UCX's transport modules
// where <pkg> is nixl_cu13, nixl_cu12 or nixl. Found by looking at files only.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace eplb::select {

struct NixlWheel {
  std::string package;         // "nixl_cu13", ...
  std::string lib_dir;         // .<pkg>.mesonpy.libs
  std::string plugin_dir;      // where libplugin_UCX.so is ("" when missing)
  std::string ucx_module_dir;  // <pkg>.libs/ucx ("" when missing)
};

// The wheel packages looked for, in order of preference.
const std::vector<std::string>& NixlWheelPackages();

// The NIXL wheel unpacked in `site_dir`, if one is: its library folder holds
// libnixl_capi.so or libnixl.so.
std::optional<NixlWheel> FindNixlWheel(const std::string& site_dir);

// The site-packages folders under a Python prefix (a virtual environment,
// a conda environment, /usr/local): <prefix>/lib/python3.*/site-packages
// and .../dist-packages (where Debian's pip installs), sorted.
std::vector<std::string> SitePackagesUnder(const std::string& prefix);

}  // namespace eplb::select
