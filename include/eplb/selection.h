// Which communicator moves expert weights (DESIGN.md layer 4): the rule of
// vLLM PR #43110, extended with cuda_ipc, and validated.
//
//   explicit choice (validated)            -> that communicator
//   elastic EP                             -> nccl_stateless
//     ... in async mode (NCCL refused)     -> nixl if found, else gloo
//   NIXL found without loading it          -> nixl
//   every EP peer on this node, IPC works  -> cuda_ipc
//   otherwise                              -> gloo
//
// NCCL-family communicators are refused in async mode: their send/recv are
// GPU kernels that spin until the peer's matching kernel runs, so they can
// deadlock with the model's own kernels (DESIGN.md, "Why NCCL is not the
// default").
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "eplb/export.h"
#include "eplb/deadline.h"

namespace eplb {

class Store;

// Every communicator name eplb knows, in rule order: nixl, cuda_ipc, gloo,
// nccl, nccl_stateless. "pynccl" (vLLM's name) is accepted for nccl_stateless.
EPLB_EXPORT const std::vector<std::string>& CommunicatorNames();
// nccl and nccl_stateless.
EPLB_EXPORT bool IsNcclFamily(std::string_view name);
// The communicators async mode accepts: nixl, cuda_ipc, gloo.
EPLB_EXPORT const std::vector<std::string>& AsyncSafeCommunicators();
// Canonical name for `name` (lower-case, alias resolved); throws
// InvalidArgument listing the valid names when it is not one.
EPLB_EXPORT std::string CanonicalCommunicatorName(std::string_view name);

// What the user asked for.
struct EPLB_EXPORT SelectionRequest {
  std::string communicator;  // explicit name; empty = apply the default rule
  bool elastic = false;      // elastic EP: ranks may join and leave
  bool async = false;        // migration on a background thread / stream
};

// Whether cuda_ipc can serve this EP group, and why (not): every EP peer is
// on this node and an IPC handle of a peer was really opened.
struct EPLB_EXPORT CudaIpcCheck {
  bool usable = false;
  std::string reason;  // e.g. "4 ranks on this node, IPC verified" / "ranks on 2 nodes"
};

// What the rule needs to know about the machine. Detect() fills it from the
// file system (detect.h: where this process's environment says to look);
// tests fill it by hand.
struct EPLB_EXPORT SelectionFacts {
  bool nixl_available = false;
  std::string nixl_reason = "nixl not found";  // NixlDetection::reason
  // Called only when the rule reaches the cuda_ipc step. Checking IPC may
  // talk to the peers, so the caller provides it (the GPU runtime does); an
  // empty function means cuda_ipc is not considered.
  std::function<CudaIpcCheck()> cuda_ipc_check;

  static SelectionFacts Detect();
};

struct EPLB_EXPORT Selection {
  std::string name;    // canonical communicator name
  std::string reason;  // why, for the log line and `eplb info`
};

// Applies the rule. Throws InvalidArgument for an unknown name (listing the
// valid ones) and for an NCCL-family communicator named in async mode
// (naming the async-safe ones).
EPLB_EXPORT Selection SelectCommunicator(const SelectionRequest& request, const SelectionFacts& facts);

// "communicator gloo (nixl not found)"; LogSelection writes it once through
// spdlog at info level as "eplb: communicator gloo (nixl not found)".
EPLB_EXPORT std::string DescribeSelection(const Selection& s);
EPLB_EXPORT void LogSelection(const Selection& s);

// Ranks must all use the same communicator, but what is installed can differ
// between nodes. Publishes this rank's choice under `key_prefix` and reads
// every other rank's; throws Error (layer "select") naming the first rank
// that chose differently, or TimeoutError naming the rank that never
// published.
EPLB_EXPORT void AgreeOnSelection(Store& store, const std::string& key_prefix, int rank, int world_size,
                      const Selection& mine, Deadline deadline);

}  // namespace eplb
