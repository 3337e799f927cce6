#include "gpu/support/kernels.h"

namespace eplb::test {
namespace {

__global__ void FillPatternKernel(uint32_t* data, size_t words, uint64_t seed, uint64_t first) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += stride) {
    data[i] = PatternWord(seed, first + i);
  }
}

__global__ void CountMismatchesKernel(const uint32_t* data, size_t words, uint64_t seed,
                                      uint64_t first, unsigned long long* mismatches) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += stride) {
    bad += data[i] != PatternWord(seed, first + i);
  }
  if (bad != 0) atomicAdd(mismatches, bad);
}

__device__ unsigned long long GlobalTimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void PeerHandshakeKernel(unsigned long long* local_flags, unsigned long long* peer_flags,
                                    unsigned long long token, unsigned long long budget_ns,
                                    int* outcome) {
  // The dynamic shared memory (launch parameter) is never touched: it only
  // makes one block fill an SM.
  if (threadIdx.x == 0) {
    volatile unsigned long long* mine = local_flags + blockIdx.x;
    volatile unsigned long long* theirs = peer_flags + blockIdx.x;
    *theirs = token;
    __threadfence_system();
    const unsigned long long start = GlobalTimer();
    int result = 1;
    while (*mine < token) {
      if (GlobalTimer() - start > budget_ns) {
        result = 2;
        break;
      }
      __nanosleep(1000);
    }
    outcome[blockIdx.x] = result;
  }
}

int Blocks(size_t n) {
  size_t blocks = (n + 255) / 256;
  return static_cast<int>(blocks < 4096 ? (blocks == 0 ? 1 : blocks) : 4096);
}

}  // namespace

cudaError_t FillPattern(uint32_t* data, size_t words, uint64_t seed, cudaStream_t stream,
                        uint64_t first) {
  FillPatternKernel<<<Blocks(words), 256, 0, stream>>>(data, words, seed, first);
  return cudaGetLastError();
}

cudaError_t CountMismatches(const uint32_t* data, size_t words, uint64_t seed, uint64_t first,
                            unsigned long long* mismatches, cudaStream_t stream) {
  CountMismatchesKernel<<<Blocks(words), 256, 0, stream>>>(data, words, seed, first, mismatches);
  return cudaGetLastError();
}

size_t PrepareHandshakeKernel() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    return 0;
  }
  if (cudaFuncSetAttribute(PeerHandshakeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin) !=
      cudaSuccess) {
    return 0;
  }
  return static_cast<size_t>(optin);
}

cudaError_t LaunchPeerHandshake(unsigned long long* local_flags, unsigned long long* peer_flags,
                                unsigned long long token, unsigned long long budget_ns,
                                int* outcome, int blocks, size_t shared_bytes, cudaStream_t stream) {
  PeerHandshakeKernel<<<blocks, 32, shared_bytes, stream>>>(local_flags, peer_flags, token,
                                                             budget_ns, outcome);
  return cudaGetLastError();
}

}  // namespace eplb::test
