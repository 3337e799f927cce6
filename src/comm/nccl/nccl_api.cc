#include "comm/nccl/nccl_api.h"

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "comm/dynlib.h"
#include "eplb/detect.h"
#include "select/detection.h"
#include "eplb/error.h"

namespace eplb::nccl {

std::string Api::Describe(Result r, Comm comm) const {
  std::string s = "NCCL error " + std::to_string(r);
  if (GetErrorString) {
    const char* e = GetErrorString(r);
    if (e) s += std::string(": ") + e;
  }
  if (GetLastError) {
    const char* last = GetLastError(comm);
    if (last && *last) s += std::string(" (last error: ") + last + ")";
  }
  return s;
}

const Api& GetApi(const std::string& override_path) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Api>> loaded;
  std::string requested = override_path;
  if (requested.empty()) {
    if (const char* env = std::getenv("EPLB_NCCL_LIBRARY")) requested = env;
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(requested);
  if (it != loaded.end()) return *it->second;

  std::vector<std::string> candidates;
  bool noload_first = false;
  if (!requested.empty()) {
    candidates = {requested};
  } else {
    noload_first = true;
    candidates = {"libnccl.so.2", "libnccl.so"};
    FoundLibrary found = DetectGpuLibraries(SearchEnvironment::FromProcess()).nccl;
    if (found.found()) candidates.push_back(found.path);
  }
  auto lib = dyn::Library::Open("nccl", "NCCL", candidates, /*global=*/false, noload_first);
  auto api = std::make_unique<Api>();
  api->path = lib.path();
  api->GetVersion = lib.Get<decltype(api->GetVersion)>("ncclGetVersion");
  api->GetUniqueId = lib.Get<decltype(api->GetUniqueId)>("ncclGetUniqueId");
  api->CommInitRankConfig = lib.Get<decltype(api->CommInitRankConfig)>("ncclCommInitRankConfig");
  api->CommCount = lib.Get<decltype(api->CommCount)>("ncclCommCount");
  api->CommUserRank = lib.Get<decltype(api->CommUserRank)>("ncclCommUserRank");
  api->CommCuDevice = lib.Get<decltype(api->CommCuDevice)>("ncclCommCuDevice");
  api->GroupStart = lib.Get<decltype(api->GroupStart)>("ncclGroupStart");
  api->GroupEnd = lib.Get<decltype(api->GroupEnd)>("ncclGroupEnd");
  api->Send = lib.Get<decltype(api->Send)>("ncclSend");
  api->Recv = lib.Get<decltype(api->Recv)>("ncclRecv");
  api->CommGetAsyncError = lib.Get<decltype(api->CommGetAsyncError)>("ncclCommGetAsyncError");
  api->CommAbort = lib.Get<decltype(api->CommAbort)>("ncclCommAbort");
  api->GetErrorString = lib.Get<decltype(api->GetErrorString)>("ncclGetErrorString");
  api->GetLastError = lib.Get<decltype(api->GetLastError)>("ncclGetLastError", /*required=*/false);
  if (api->GetVersion(&api->version) != kSuccess) api->version = 0;
  if (api->version < 21400)
    throw Error("nccl", "load NCCL",
                api->path + " is NCCL version code " + std::to_string(api->version) +
                    "; eplb needs NCCL >= 2.14 (non-blocking communicators)");
  const Api& ref = *api;
  loaded.emplace(requested, std::move(api));
  return ref;
}

}  // namespace eplb::nccl
