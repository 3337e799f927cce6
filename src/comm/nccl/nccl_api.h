// The part of NCCL's public C API eplb uses, declared here (eplb's own
// declarations) and resolved from libnccl.so.2 at run time, so nothing needs
// NCCL to build and every binary starts without it.
#pragma once

#include <climits>
#include <cstddef>
#include <string>

#include "comm/cuda_driver.h"

namespace eplb::nccl {

using Result = int;  // ncclResult_t
constexpr Result kSuccess = 0;
constexpr Result kRemoteError = 6;
constexpr Result kInProgress = 7;
constexpr int kUint8 = 1;  // ncclUint8

struct CommT;
using Comm = CommT*;  // ncclComm_t
struct UniqueId {
  char internal[128];  // NCCL_UNIQUE_ID_BYTES
};

// ncclConfig_t as of NCCL 2.14 (the first release with non-blocking
// communicators). NCCL reads a config by its size and version fields, so this
// prefix stays valid with newer libraries; unset fields stay INT_MIN / null.
struct Config {
  size_t size = sizeof(Config);
  unsigned int magic = 0xcafebeef;
  unsigned int version = 21400;  // NCCL_VERSION(2, 14, 0)
  int blocking = INT_MIN;
  int cga_cluster_size = INT_MIN;
  int min_ctas = INT_MIN;
  int max_ctas = INT_MIN;
  const char* net_name = nullptr;
};

struct Api {
  std::string path;
  int version = 0;  // ncclGetVersion, e.g. 22809
  Result (*GetVersion)(int*);
  Result (*GetUniqueId)(UniqueId*);
  Result (*CommInitRankConfig)(Comm*, int, UniqueId, int, Config*);
  Result (*CommCount)(Comm, int*);
  Result (*CommUserRank)(Comm, int*);
  Result (*CommCuDevice)(Comm, int*);
  Result (*GroupStart)();
  Result (*GroupEnd)();
  Result (*Send)(const void*, size_t, int, int, Comm, cuda::CuStream);
  Result (*Recv)(void*, size_t, int, int, Comm, cuda::CuStream);
  Result (*CommGetAsyncError)(Comm, Result*);
  Result (*CommAbort)(Comm);
  const char* (*GetErrorString)(Result);
  const char* (*GetLastError)(Comm);  // may be null (NCCL < 2.13)

  // "ncclRemoteError: remote process exited or there was a network error (last: ...)"
  std::string Describe(Result r, Comm comm = nullptr) const;
};

// Loads NCCL once per library path: `override_path`, else $EPLB_NCCL_LIBRARY,
// else an NCCL already in the process (the engine's), else libnccl.so.2
// through the loader, else the file search of detect.h (toolkit folders).
// Throws Error("nccl", "load NCCL") saying what was tried.
const Api& GetApi(const std::string& override_path = "");

}  // namespace eplb::nccl
