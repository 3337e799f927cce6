#include "comm/nixl/nixl_api.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>

#include "comm/dynlib.h"
#include "eplb/error.h"

namespace eplb::nixl {

std::string StatusName(Status s) {
  switch (s) {
    case 0: return "success";
    case 1: return "in progress";
    case -1: return "invalid parameter";
    case -2: return "backend error";
    case -3: return "invalid state";
    case -4: return "exception";
    case -5: return "no telemetry";
    case -6: return "not found";
  }
  return "status " + std::to_string(s);
}

namespace {

// A wheel bundles its own RDMA user-space libraries (renamed libnl-3-<hash>,
// libnl-route-3-<hash>, libibverbs-<hash>, libmlx5-<hash>) for UCX's IB
// modules. A process that already has the system's copies in its global
// scope (Gloo links libibverbs, which brings libnl) would bind the bundled
// copies' own calls to the system's: libnl's constructors then register the
// bundled copy's tables in the system copy's lists, and the process crashes
// in rtnl_tc_unregister at exit. Loaded first with RTLD_DEEPBIND, each
// bundled library binds to itself and its own dependencies; UCX's later
// dlopen of its modules reuses them by soname.
void PreloadBundledRdmaLibraries(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  for (const char* prefix : {"libnl-3-", "libnl-route-3-", "libibverbs-", "libmlx5-"}) {
    for (const auto& f : files) {
      if (f.rfind(prefix, 0) != 0 || f.find(".so") == std::string::npos) continue;
      const std::string path = (fs::path(dir) / f).string();
      if (::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND) == nullptr) {
        const char* err = ::dlerror();
        spdlog::debug("eplb nixl: could not preload {}: {}", path, err ? err : "unknown error");
      }
    }
  }
}

}  // namespace

const Api& LoadApi(const std::string& capi_path, const std::string& core_path, const std::string& bundled_dir) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Api>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(capi_path);
  if (it != loaded.end()) return *it->second;
  if (!bundled_dir.empty()) PreloadBundledRdmaLibraries(bundled_dir);
  // RTLD_LOCAL for both: NIXL brings its own abseil, gRPC and protobuf, and
  // an engine process has others; none of NIXL's may land in the global
  // scope. The core is opened first only so a C API without a runpath finds
  // it (the loader reuses a loaded library by its soname).
  if (!core_path.empty()) dyn::Library::Open("nixl", "NIXL core library", {core_path});
  auto lib = dyn::Library::Open("nixl", "NIXL C API", {capi_path});
  auto a = std::make_unique<Api>();
  a->path = lib.path();
#define EPLB_NIXL_SYM(field, symbol) a->field = lib.Get<decltype(a->field)>(symbol)
  EPLB_NIXL_SYM(CreateAgent, "nixl_capi_create_agent");
  EPLB_NIXL_SYM(DestroyAgent, "nixl_capi_destroy_agent");
  EPLB_NIXL_SYM(GetLocalMd, "nixl_capi_get_local_md");
  EPLB_NIXL_SYM(LoadRemoteMd, "nixl_capi_load_remote_md");
  EPLB_NIXL_SYM(InvalidateRemoteMd, "nixl_capi_invalidate_remote_md");
  EPLB_NIXL_SYM(GetPluginParams, "nixl_capi_get_plugin_params");
  EPLB_NIXL_SYM(DestroyMemList, "nixl_capi_destroy_mem_list");
  EPLB_NIXL_SYM(DestroyParams, "nixl_capi_destroy_params");
  a->ParamsAdd = lib.Get<decltype(a->ParamsAdd)>("nixl_capi_params_add", /*required=*/false);
  EPLB_NIXL_SYM(CreateBackend, "nixl_capi_create_backend");
  EPLB_NIXL_SYM(DestroyBackend, "nixl_capi_destroy_backend");
  EPLB_NIXL_SYM(CreateOptArgs, "nixl_capi_create_opt_args");
  EPLB_NIXL_SYM(DestroyOptArgs, "nixl_capi_destroy_opt_args");
  EPLB_NIXL_SYM(OptArgsAddBackend, "nixl_capi_opt_args_add_backend");
  EPLB_NIXL_SYM(CreateRegDlist, "nixl_capi_create_reg_dlist");
  EPLB_NIXL_SYM(DestroyRegDlist, "nixl_capi_destroy_reg_dlist");
  EPLB_NIXL_SYM(RegDlistAddDesc, "nixl_capi_reg_dlist_add_desc");
  EPLB_NIXL_SYM(RegisterMem, "nixl_capi_register_mem");
  EPLB_NIXL_SYM(DeregisterMem, "nixl_capi_deregister_mem");
  EPLB_NIXL_SYM(CreateXferDlist, "nixl_capi_create_xfer_dlist");
  EPLB_NIXL_SYM(DestroyXferDlist, "nixl_capi_destroy_xfer_dlist");
  EPLB_NIXL_SYM(XferDlistAddDesc, "nixl_capi_xfer_dlist_add_desc");
  EPLB_NIXL_SYM(CreateXferReq, "nixl_capi_create_xfer_req");
  EPLB_NIXL_SYM(PostXferReq, "nixl_capi_post_xfer_req");
  EPLB_NIXL_SYM(GetXferStatus, "nixl_capi_get_xfer_status");
  EPLB_NIXL_SYM(ReleaseXferReq, "nixl_capi_release_xfer_req");
  EPLB_NIXL_SYM(DestroyXferReq, "nixl_capi_destroy_xfer_req");
  EPLB_NIXL_SYM(GenNotif, "nixl_capi_gen_notif");
  EPLB_NIXL_SYM(CreateNotifMap, "nixl_capi_create_notif_map");
  EPLB_NIXL_SYM(DestroyNotifMap, "nixl_capi_destroy_notif_map");
  EPLB_NIXL_SYM(GetNotifs, "nixl_capi_get_notifs");
  EPLB_NIXL_SYM(NotifMapSize, "nixl_capi_notif_map_size");
  EPLB_NIXL_SYM(NotifMapGetAgentAt, "nixl_capi_notif_map_get_agent_at");
  EPLB_NIXL_SYM(NotifMapGetNotifsSize, "nixl_capi_notif_map_get_notifs_size");
  EPLB_NIXL_SYM(NotifMapGetNotif, "nixl_capi_notif_map_get_notif");
  EPLB_NIXL_SYM(NotifMapClear, "nixl_capi_notif_map_clear");
#undef EPLB_NIXL_SYM
  const Api& ref = *a;
  loaded.emplace(capi_path, std::move(a));
  return ref;
}

}  // namespace eplb::nixl
