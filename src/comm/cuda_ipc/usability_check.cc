// CudaIpcUsable (cuda_ipc.h): whether every rank can open every other
// rank's IPC handles, found by trying it -- each rank exports a buffer with a
// known pattern and reads every peer's through its handle -- before the
// selection rule picks cuda_ipc.
#include <algorithm>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "comm/cuda_ipc/node_flags.h"
#include "comm/host_identity.h"
#include "cuda/runtime.h"
#include "eplb/error.h"
#include "wire/codec.h"

namespace eplb {
namespace {

constexpr const char* kLayer = "cuda_ipc";

}  // namespace

#if EPLB_HAVE_CUDA

using comm::BootId;
using comm::HostName;
using cuda::Check;
using cuda::DeviceGuard;
using cuda_ipc::NodeFlags;

CudaIpcCheck CudaIpcUsable(Store& store, int rank, int size, int device,
                           const std::string& key_prefix, Deadline deadline) {
  constexpr size_t kProbeBytes = 1 << 20;
  auto pattern = [](int r) { return static_cast<uint8_t>(0x5a ^ (r * 29 + 7)); };
  const std::string prefix = key_prefix + "/check";
  const std::string host = HostName();
  const std::string boot_id = BootId();
  std::string problem;

  const auto available = cuda::Probe();
  if (available.devices == 0) {
    problem = "no CUDA device: " + available.reason;
  } else if (device < 0 || device >= available.devices) {
    problem = fmt::format("device {} does not exist ({} visible)", device, available.devices);
  }

  // The fence needs a shared-memory segment every rank can map.
  std::unique_ptr<NodeFlags> flags;
  try {
    flags = NodeFlags::Join(store, prefix, rank, size, deadline);
  } catch (const TimeoutError&) {
    throw;
  } catch (const Error& e) {
    if (problem.empty()) problem = std::string("shared-memory flags: ") + e.what();
  }

  // A buffer with a known pattern, exported for the peers to read.
  cuda::DeviceBuffer buffer;
  cudaIpcMemHandle_t my_handle{};
  bool exported = false;
  if (problem.empty()) {
    try {
      DeviceGuard guard(device);
      buffer = cuda::DeviceBuffer(device, kProbeBytes);
      cuda::Stream fill(device);
      Check(cudaMemsetAsync(buffer.data(), pattern(rank), kProbeBytes, fill.get()), "cudaMemsetAsync");
      fill.Synchronize(deadline, "fill the probe buffer");
      Check(cudaIpcGetMemHandle(&my_handle, buffer.data()), "cudaIpcGetMemHandle");
      exported = true;
    } catch (const Error& e) {
      problem = e.what();
    }
  }
  // The probe: where this rank runs and, when it could export one, the
  // handle of its buffer (a rank with a problem reports it in its verdict).
  store.Set(fmt::format("{}/probe/{}", prefix, rank), wire::Writer(wire::Kind::kIpcProbe)
                                                            .PutString(host)
                                                            .PutString(boot_id)
                                                            .Put(uint8_t{exported})
                                                            .PutFixed(&my_handle, sizeof my_handle)
                                                            .Take());

  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    const auto bytes = store.Get(fmt::format("{}/probe/{}", prefix, peer), deadline);
    if (!problem.empty()) continue;
    wire::Reader r(bytes, wire::Kind::kIpcProbe, {kLayer, "usability check", rank, peer});
    const std::string their_host = r.GetString(wire::kMaxNameBytes), their_boot = r.GetString(wire::kMaxNameBytes);
    const auto their_exported = r.Get<uint8_t>();
    cudaIpcMemHandle_t handle{};
    r.GetFixed(&handle, sizeof handle);
    r.Finish();
    if (their_host != host || their_boot != boot_id) {
      problem = fmt::format("rank {} is on host {}, this rank on host {}", peer, their_host, host);
      continue;
    }
    if (!their_exported) continue;  // the peer reports its own problem
    try {
      DeviceGuard guard(device);
      void* mapped = nullptr;
      cudaError_t status = cudaIpcOpenMemHandle(&mapped, handle, cudaIpcMemLazyEnablePeerAccess);
      if (status != cudaSuccess) {
        cudaGetLastError();
        problem = fmt::format("cannot open rank {}'s IPC handle: {}: {}", peer,
                              cudaGetErrorName(status), cudaGetErrorString(status));
        continue;
      }
      std::vector<uint8_t> seen(kProbeBytes);
      {
        cuda::Stream stream(device);
        Check(cudaMemcpyAsync(seen.data(), mapped, kProbeBytes, cudaMemcpyDefault, stream.get()),
              "cudaMemcpyAsync (read peer probe)");
        stream.Synchronize(deadline, "read peer probe");
      }
      Check(cudaIpcCloseMemHandle(mapped), "cudaIpcCloseMemHandle");
      const uint8_t expected = pattern(peer);
      if (std::any_of(seen.begin(), seen.end(), [&](uint8_t b) { return b != expected; })) {
        problem = fmt::format("bytes read through rank {}'s IPC handle differ from what it wrote", peer);
      }
    } catch (const TimeoutError&) {
      throw;
    } catch (const Error& e) {
      problem = fmt::format("reading rank {}'s memory: {}", peer, e.what());
    }
  }

  // Every rank must reach the same answer, or one would pick cuda_ipc and
  // another gloo: exchange verdicts. The probe buffer lives until here, after
  // every peer has read it.
  store.SetString(fmt::format("{}/verdict/{}", prefix, rank), problem.empty() ? "ok" : problem);
  CudaIpcCheck check{true, ""};
  for (int r = 0; r < size; ++r) {
    std::string verdict =
        r == rank ? (problem.empty() ? "ok" : problem) : store.GetString(fmt::format("{}/verdict/{}", prefix, r), deadline);
    if (verdict != "ok" && check.usable) {
      check.usable = false;
      check.reason = fmt::format("rank {}: {}", r, verdict);
    }
  }
  if (check.usable) {
    check.reason = fmt::format("{} ranks on host {}: peer IPC handles opened and read back", size, host);
  }
  return check;
}

#else  // !EPLB_HAVE_CUDA

// Without CUDA the answer is known, but the ranks still meet so that every
// rank returns at the same point, as with CUDA.
CudaIpcCheck CudaIpcUsable(Store& store, int rank, int size, int device,
                           const std::string& key_prefix, Deadline deadline) {
  const std::string prefix = key_prefix + "/check";
  store.SetString(fmt::format("{}/verdict/{}", prefix, rank), "eplb was built without CUDA");
  for (int r = 0; r < size; ++r) {
    if (r != rank) store.GetString(fmt::format("{}/verdict/{}", prefix, r), deadline);
  }
  return {false, fmt::format("rank {}: eplb was built without CUDA", rank)};
}

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb
