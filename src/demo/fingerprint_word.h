// The fingerprint formula (fingerprint.h), usable from host code and from
// CUDA kernels alike, so the GPU fills and checks experts with the very bytes
// the host functions produce.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EPLB_HOST_DEVICE __host__ __device__
#else
#define EPLB_HOST_DEVICE
#endif

namespace eplb::runtime {

EPLB_HOST_DEVICE inline uint64_t FingerprintMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The 8-byte word at word index `word` of tensor `tensor` of `expert` in `layer`.
EPLB_HOST_DEVICE inline uint64_t FingerprintWordOf(int layer, int expert, int tensor, uint64_t word) {
  const uint64_t key = (uint64_t(uint32_t(layer)) << 40) ^ (uint64_t(uint32_t(expert)) << 16) ^
                       uint64_t(uint32_t(tensor));
  return FingerprintMix(FingerprintMix(key) ^ word);
}

}  // namespace eplb::runtime
