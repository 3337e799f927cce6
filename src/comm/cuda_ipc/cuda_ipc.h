// The cuda_ipc communicator: ranks on one node move CUDA device memory with
// copy engines, one-sided, using no SMs (DESIGN.md: it cannot deadlock with
// kernels the way NCCL's send/recv kernels can).
//
// - RegisterRegion (collective): each rank exports its region's allocation as
//   a cudaIpcMemHandle through the store once; every rank maps its peers'
//   regions (cudaIpcOpenMemHandle) right away, so no mapping or peer-access
//   setup happens while kernels run.
// - Execute: a receiver waits until each source rank has entered the same
//   Execute (its sources are final), then pulls with cudaMemcpyAsync on its
//   own non-blocking streams (peer copies over NVLink/PCIe by the copy
//   engines) and polls its events against the deadline.
// - Fence: a sender returns only after every rank reading from it reports its
//   reads landed, so it never overwrites a slot still being read. Ranks signal
//   through counters in a node-local shared-memory segment (microseconds),
//   not through the store (milliseconds).
// A rank that gives up (deadline, error) marks the epoch failed so its peers
// stop waiting at once; a peer process that exited is detected too. Copies a
// failed Execute left in flight are waited for (with the next deadline)
// before the next Execute writes anything.
#pragma once

#include <memory>
#include <string>

#include "eplb/communicator.h"
#include "eplb/communicator_factory.h"
#include "eplb/deadline.h"
#include "eplb/selection.h"
#include "eplb/store.h"

namespace eplb {

// Copy streams a receiver spreads its pulls over. Measured on 2 H200s
// (NV18), 8 x 44 MiB both ways: 1, 2 and 4 streams all reach 352-354 GB/s
// per GPU; 2 keeps a second copy queued behind a long one.
constexpr int kDefaultCudaIpcCopyStreams = 2;

// MakeCudaIpcCommunicator(options) (communicator_factory.h) builds it with
// the default streams; this one takes their number (>= 1). Uses
// options.rank, world_size, device (registered regions must be on it),
// store, key_prefix (keys go under "<key_prefix>/cuda_ipc/") and
// connect_timeout. Collective over all ranks (they join the node-local
// flags segment). Throws Error (layer "cuda_ipc") when CUDA is unavailable or
// the ranks cannot share memory; TimeoutError at the connect timeout.
std::unique_ptr<Communicator> MakeCudaIpcCommunicator(const CommunicatorOptions& options,
                                                      int copy_streams);

// Unmaps the peers' memory and waits (until `deadline`) for every peer to do
// the same, after which each rank may free its registered memory (freeing
// memory a peer still maps is undefined behaviour in CUDA). Collective.
// Destroying the communicator without it unmaps without waiting.
void CloseCudaIpcCommunicator(Communicator& communicator, Deadline deadline);

// Whether cuda_ipc really works among these ranks, checked rather than
// assumed: every rank must be on the same host (hostname and boot id), see a
// CUDA device, join the shared flags segment, and open every peer's IPC
// handle and read back the bytes the peer wrote. Collective; every rank
// returns the same answer (for SelectionFacts::cuda_ipc_check). `reason`
// says what failed ("rank 1: ...") or, when usable, what was checked. Keys go
// under "<key_prefix>/check/". Throws TimeoutError if a rank does not take
// part by `deadline`.
CudaIpcCheck CudaIpcUsable(Store& store, int rank, int size, int device,
                           const std::string& key_prefix, Deadline deadline);

}  // namespace eplb
