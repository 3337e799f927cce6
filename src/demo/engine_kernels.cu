#include "demo/engine_kernels.h"

#include <algorithm>
#include <climits>

#include "demo/fingerprint_word.h"

namespace eplb::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void FillFingerprintKernel(uint64_t* data, uint64_t words, int layer, int expert,
                                      int tensor) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t w = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < words;
       w += stride)
    data[w] = runtime::FingerprintWordOf(layer, expert, tensor, w);
}

__global__ void CheckFingerprintsKernel(const FingerprintCheck* checks,
                                        unsigned long long* mismatches, int32_t* first_bad_tag) {
  const FingerprintCheck c = checks[blockIdx.x];
  unsigned long long bad = 0;
  for (uint64_t i = threadIdx.x; i < c.words; i += blockDim.x) {
    const uint64_t w = c.first_word + i;
    if (c.data[w] != runtime::FingerprintWordOf(c.layer, c.expert, c.tensor, w)) ++bad;
  }
  if (bad != 0) {
    atomicAdd(mismatches, bad);
    atomicMin(first_bad_tag, c.tag);
  }
}

__global__ void StreamWorkKernel(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                 uint64_t n) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint4 v = src[i];
    v.x = v.x * 3u + 1u;
    v.y = v.y * 3u + 1u;
    v.z = v.z * 3u + 1u;
    v.w = v.w * 3u + 1u;
    dst[i] = v;
  }
}

__global__ void ComputeWorkKernel(float* out, int iterations) {
  float a = threadIdx.x * 1e-3f, b = blockIdx.x * 1e-3f + 1.0f, c = 0.999f, d = 0.5f;
  for (int i = 0; i < iterations; ++i) {
    a = fmaf(a, c, b);
    b = fmaf(b, c, d);
    d = fmaf(d, c, a);
  }
  out[static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x] = a + b + d;
}

}  // namespace

cudaError_t LaunchFillFingerprint(void* data, uint64_t bytes, int layer, int expert, int tensor,
                                  cudaStream_t stream) {
  const uint64_t words = bytes / 8;
  if (words == 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min<uint64_t>((words + kThreads - 1) / kThreads, 4096));
  FillFingerprintKernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint64_t*>(data), words, layer,
                                                         expert, tensor);
  return cudaGetLastError();
}

cudaError_t LaunchCheckFingerprints(const FingerprintCheck* checks, int n,
                                    unsigned long long* mismatches, int32_t* first_bad_tag,
                                    cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  CheckFingerprintsKernel<<<n, kThreads, 0, stream>>>(checks, mismatches, first_bad_tag);
  return cudaGetLastError();
}

cudaError_t LaunchStreamWork(const void* src, void* dst, uint64_t bytes, int passes,
                             int multiprocessors, cudaStream_t stream) {
  const uint64_t n = bytes / sizeof(uint4);
  if (n == 0) return cudaSuccess;
  const int blocks = multiprocessors * 4;
  for (int p = 0; p < passes; ++p) {
    StreamWorkKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint4*>(src),
                                                      static_cast<uint4*>(dst), n);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchComputeWork(float* out, int blocks, int iterations, cudaStream_t stream) {
  ComputeWorkKernel<<<blocks, kThreads, 0, stream>>>(out, iterations);
  return cudaGetLastError();
}

}  // namespace eplb::cuda
