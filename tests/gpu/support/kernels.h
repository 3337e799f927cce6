// Kernels the GPU suite needs besides the library's: patterned fills and
// their checks (fresh, non-zero data every round, so stale or unwritten bytes
// show), and a DeepEP-like peer handshake that occupies every SM.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace eplb::test {

// The 32-bit word at index i of the pattern `seed` (host and device agree).
inline __host__ __device__ uint32_t PatternWord(uint64_t seed, uint64_t i) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + i + 1;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// Fills `words` 32-bit words: data[i] = PatternWord(seed, first + i).
cudaError_t FillPattern(uint32_t* data, size_t words, uint64_t seed, cudaStream_t stream,
                        uint64_t first = 0);

// Adds to *mismatches the number of words with data[i] != PatternWord(seed, first + i).
cudaError_t CountMismatches(const uint32_t* data, size_t words, uint64_t seed, uint64_t first,
                            unsigned long long* mismatches, cudaStream_t stream);

// A kernel shaped like DeepEP's low-latency all-to-all: `blocks` blocks, each
// with `shared_bytes` of shared memory (the SM's whole opt-in amount, so one
// block fills an SM and the kernel needs every SM at once). Block b writes
// `token` into peer_flags[b] (memory of the peer GPU, mapped over IPC), then
// spins until local_flags[b] >= token, written by the peer's block b. Each
// block gives up after `budget_ns` of GPU time, so the kernel always ends:
// outcome[b] = 1 (met the peer) or 2 (gave up).
cudaError_t LaunchPeerHandshake(unsigned long long* local_flags, unsigned long long* peer_flags,
                                unsigned long long token, unsigned long long budget_ns,
                                int* outcome, int blocks, size_t shared_bytes, cudaStream_t stream);

// The opt-in shared memory per block of the current device, and sets the
// handshake kernel's limit to it.
size_t PrepareHandshakeKernel();

}  // namespace eplb::test
