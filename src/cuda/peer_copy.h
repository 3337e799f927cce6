// The copy-engine limit between two GPUs: what plain cudaMemcpyPeerAsync
// calls move per second, measured in this process. With gpu_a == gpu_b, the
// limit of device-to-device copies within one GPU (two ranks sharing it). Communicator benchmarks
// compare against it, measured in the same run on the same GPUs.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace eplb::cuda {

struct PeerCopySetup {
  int gpu_a = 0;
  int gpu_b = 1;
  size_t piece_bytes = 44ull << 20;  // one expert of DeepSeek-V3 (fp8 weights + scales)
  int pieces = 8;                    // per destination GPU
  bool both_ways = true;             // a pulls from b and b from a at once; else a pulls from b
  int streams_per_destination = 1;   // pieces spread round-robin over these
  int warmup = 3;
  int iterations = 20;
  // The buffers' fill and each iteration's copies end within this
  // (TimeoutError past it: a hung device); eplb bench passes its --timeout.
  std::chrono::milliseconds timeout{60000};
};

struct PeerCopyResult {
  double median_seconds = 0;
  double min_seconds = 0;
  double gbps_per_gpu = 0;  // bytes landing on one destination GPU / median seconds, 1e9 B/s
  bool peer_access = false;  // direct peer access (NVLink / PCIe P2P) was available
  std::string describe() const;
};

// Throws eplb::Error (layer "cuda") when CUDA, a GPU or memory is missing.
PeerCopyResult MeasurePeerCopy(const PeerCopySetup& setup);

// The limit a communicator moving `pieces` x `piece_bytes` into each GPU is
// compared with: the best of the same pieces on 1 and on 2 streams per
// destination and of one copy of all the bytes. Each measurement is
// described in `log` (one line each) when given.
double PeerCopyLimit(int gpu_a, int gpu_b, size_t piece_bytes, int pieces, bool both_ways,
                     int iterations, std::chrono::milliseconds timeout, std::string* log = nullptr);

}  // namespace eplb::cuda
