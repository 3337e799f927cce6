// The part of NIXL's C API (libnixl_capi.so, NIXL >= 1.0) eplb uses,
// declared here (eplb's own declarations of the public API) and resolved at
// run time, only when the nixl communicator is chosen: nothing needs NIXL to
// build, and no process loads it unless it uses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace eplb::nixl {

using Status = int;  // nixl_capi_status_t
constexpr Status kSuccess = 0;
constexpr Status kInProgress = 1;

enum MemType : int { kDram = 0, kVram = 1 };  // nixl_capi_mem_type_t
enum XferOp : int { kRead = 0, kWrite = 1 };   // nixl_capi_xfer_op_t

struct AgentS;
struct ParamsS;
struct MemListS;
struct BackendS;
struct OptArgsS;
struct XferDlistS;
struct RegDlistS;
struct XferReqS;
struct NotifMapS;
using Agent = AgentS*;
using Params = ParamsS*;
using MemList = MemListS*;
using Backend = BackendS*;
using OptArgs = OptArgsS*;
using XferDlist = XferDlistS*;
using RegDlist = RegDlistS*;
using XferReq = XferReqS*;
using NotifMap = NotifMapS*;

struct Api {
  std::string path;
  Status (*CreateAgent)(const char*, Agent*);
  Status (*DestroyAgent)(Agent);
  Status (*GetLocalMd)(Agent, void**, size_t*);  // *data is malloc'd: free() it
  Status (*LoadRemoteMd)(Agent, const void*, size_t, char**);  // *name is malloc'd
  Status (*InvalidateRemoteMd)(Agent, const char*);
  Status (*GetPluginParams)(Agent, const char*, MemList*, Params*);
  Status (*DestroyMemList)(MemList);
  Status (*DestroyParams)(Params);
  // Sets a backend parameter (key, value; overwrites). Optional: NIXL 1.5
  // has it, older C APIs may not (nullptr then).
  Status (*ParamsAdd)(Params, const char*, const char*);
  Status (*CreateBackend)(Agent, const char*, Params, Backend*);
  Status (*DestroyBackend)(Backend);
  Status (*CreateOptArgs)(OptArgs*);
  Status (*DestroyOptArgs)(OptArgs);
  Status (*OptArgsAddBackend)(OptArgs, Backend);
  Status (*CreateRegDlist)(MemType, RegDlist*);
  Status (*DestroyRegDlist)(RegDlist);
  Status (*RegDlistAddDesc)(RegDlist, uintptr_t, size_t, uint64_t, const void*, size_t);
  Status (*RegisterMem)(Agent, RegDlist, OptArgs);
  Status (*DeregisterMem)(Agent, RegDlist, OptArgs);
  Status (*CreateXferDlist)(MemType, XferDlist*);
  Status (*DestroyXferDlist)(XferDlist);
  Status (*XferDlistAddDesc)(XferDlist, uintptr_t, size_t, uint64_t);
  Status (*CreateXferReq)(Agent, XferOp, XferDlist, XferDlist, const char*, XferReq*, OptArgs);
  Status (*PostXferReq)(Agent, XferReq, OptArgs);
  Status (*GetXferStatus)(Agent, XferReq);
  Status (*ReleaseXferReq)(Agent, XferReq);
  Status (*DestroyXferReq)(XferReq);
  Status (*GenNotif)(Agent, const char*, const void*, size_t, OptArgs);
  Status (*CreateNotifMap)(NotifMap*);
  Status (*DestroyNotifMap)(NotifMap);
  Status (*GetNotifs)(Agent, NotifMap, OptArgs);
  Status (*NotifMapSize)(NotifMap, size_t*);
  Status (*NotifMapGetAgentAt)(NotifMap, size_t, const char**);
  Status (*NotifMapGetNotifsSize)(NotifMap, const char*, size_t*);
  Status (*NotifMapGetNotif)(NotifMap, const char*, size_t, const void**, size_t*);
  Status (*NotifMapClear)(NotifMap);
};

// "invalid parameter", "backend error", ... for a status.
std::string StatusName(Status s);

// Loads NIXL's C API from `capi_path` (libnixl.so `core_path` first, when
// given, so the C API finds it without an rpath), both RTLD_LOCAL. Once per
// process; throws Error("nixl", "load NIXL") naming the library and the
// dlerror. `bundled_dir`: a wheel's folder of bundled libraries (UCX and
// its RDMA dependencies), whose RDMA libraries are preloaded so they bind
// to themselves (see nixl_api.cc); "" when NIXL is not a wheel.
const Api& LoadApi(const std::string& capi_path, const std::string& core_path,
                   const std::string& bundled_dir);

}  // namespace eplb::nixl
