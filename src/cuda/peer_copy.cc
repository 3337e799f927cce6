#include "cuda/peer_copy.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include <fmt/format.h>

#include "cuda/runtime.h"
#include "eplb/error.h"

namespace eplb::cuda {

std::string PeerCopyResult::describe() const {
  return fmt::format("{:.1f} GB/s per GPU (median {:.3f} ms, best {:.3f} ms{})", gbps_per_gpu,
                     median_seconds * 1e3, min_seconds * 1e3, peer_access ? "" : ", no peer access");
}

#if EPLB_HAVE_CUDA

PeerCopyResult MeasurePeerCopy(const PeerCopySetup& s) {
  const int devices = Probe().devices;
  if (s.gpu_a < 0 || s.gpu_b < 0 || s.gpu_a >= devices || s.gpu_b >= devices) {
    throw Error("cuda", "measure peer copy",
                fmt::format("asked for GPUs {} and {} of {}", s.gpu_a, s.gpu_b, devices));
  }
  PeerCopyResult result;
  const bool same_gpu = s.gpu_a == s.gpu_b;  // device-to-device copies within one GPU
  int a_to_b = 0, b_to_a = 0;
  if (!same_gpu) {
    Check(cudaDeviceCanAccessPeer(&a_to_b, s.gpu_a, s.gpu_b), "cudaDeviceCanAccessPeer");
    Check(cudaDeviceCanAccessPeer(&b_to_a, s.gpu_b, s.gpu_a), "cudaDeviceCanAccessPeer");
  }
  result.peer_access = same_gpu || (a_to_b && b_to_a);
  if (result.peer_access && !same_gpu) {
    for (auto [from, to] : {std::pair{s.gpu_a, s.gpu_b}, std::pair{s.gpu_b, s.gpu_a}}) {
      DeviceGuard guard(from);
      cudaError_t status = cudaDeviceEnablePeerAccess(to, 0);
      if (status == cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();
      } else {
        Check(status, "cudaDeviceEnablePeerAccess");
      }
    }
  }
  const size_t bytes = s.piece_bytes * s.pieces;
  // Destination d pulls from source (the other GPU) into its own buffer.
  struct Side {
    int dst, src;
    DeviceBuffer from, to;
    std::vector<Stream> streams;
  };
  std::vector<Side> sides;
  sides.push_back({s.gpu_a, s.gpu_b, DeviceBuffer(s.gpu_b, bytes), DeviceBuffer(s.gpu_a, bytes), {}});
  if (s.both_ways) {
    sides.push_back({s.gpu_b, s.gpu_a, DeviceBuffer(s.gpu_a, bytes), DeviceBuffer(s.gpu_b, bytes), {}});
  }
  for (auto& side : sides) {
    DeviceGuard guard(side.src);
    for (int i = 0; i < std::max(1, s.streams_per_destination); ++i) side.streams.emplace_back(side.dst);
    Stream fill(side.src);
    Check(cudaMemsetAsync(side.from.data(), 0x5c, bytes, fill.get()), "cudaMemsetAsync");
    fill.Synchronize(DeadlineAfter(s.timeout), "fill the peer-copy buffers");
  }
  std::vector<double> times;
  for (int it = 0; it < s.warmup + s.iterations; ++it) {
    const auto start = std::chrono::steady_clock::now();
    for (auto& side : sides) {
      for (int p = 0; p < s.pieces; ++p) {
        const size_t offset = static_cast<size_t>(p) * s.piece_bytes;
        Check(cudaMemcpyPeerAsync(side.to.as<char>() + offset, side.dst, side.from.as<char>() + offset,
                                  side.src, s.piece_bytes, side.streams[p % side.streams.size()].get()),
              "cudaMemcpyPeerAsync");
      }
    }
    for (auto& side : sides) {
      const Deadline by = DeadlineAfter(s.timeout);
      for (auto& stream : side.streams) stream.Synchronize(by, "peer copy");
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (it >= s.warmup) times.push_back(seconds);
  }
  std::sort(times.begin(), times.end());
  result.median_seconds = times[times.size() / 2];
  result.min_seconds = times.front();
  result.gbps_per_gpu = static_cast<double>(bytes) / result.median_seconds / 1e9;
  return result;
}

double PeerCopyLimit(int gpu_a, int gpu_b, size_t piece_bytes, int pieces, bool both_ways,
                     int iterations, std::chrono::milliseconds timeout, std::string* log) {
  double best = 0;
  for (int variant = 0; variant < 3; ++variant) {
    PeerCopySetup setup;
    setup.gpu_a = gpu_a;
    setup.gpu_b = gpu_b;
    setup.both_ways = both_ways;
    setup.iterations = iterations;
    setup.timeout = timeout;
    setup.piece_bytes = variant == 2 ? piece_bytes * pieces : piece_bytes;
    setup.pieces = variant == 2 ? 1 : pieces;
    setup.streams_per_destination = variant == 1 ? 2 : 1;
    const PeerCopyResult r = MeasurePeerCopy(setup);
    best = std::max(best, r.gbps_per_gpu);
    if (log != nullptr) {
      *log += fmt::format("copy-engine limit, {}, {}: {}\n", both_ways ? "both ways" : "one way",
                          variant == 2 ? fmt::format("one copy of {} MiB", (piece_bytes * pieces) >> 20)
                                       : fmt::format("{} x {} MiB on {} stream(s)", pieces,
                                                     piece_bytes >> 20, setup.streams_per_destination),
                          r.describe());
    }
  }
  return best;
}

#else  // !EPLB_HAVE_CUDA

PeerCopyResult MeasurePeerCopy(const PeerCopySetup&) {
  throw Error("cuda", "measure peer copy", "eplb was built without CUDA");
}

double PeerCopyLimit(int, int, size_t, int, bool, int, std::chrono::milliseconds, std::string*) {
  throw Error("cuda", "measure peer copy", "eplb was built without CUDA");
}

#endif  // EPLB_HAVE_CUDA

}  // namespace eplb::cuda
