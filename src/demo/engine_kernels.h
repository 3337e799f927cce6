// Kernels that stand in for an engine's GPU work in `eplb demo --gpu`, and
// that fill and check expert fingerprints (demo/fingerprint.h) on the GPU,
// so a run with tens of GB of expert weights is set up and verified at device
// speed. Kept apart from the host code so only the kernels go through nvcc.
#pragma once

#if EPLB_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstdint>

namespace eplb::cuda {

// Fills `bytes` (a multiple of 8) at `data` with the fingerprint of
// (layer, expert, tensor), as runtime::FillFingerprint would.
cudaError_t LaunchFillFingerprint(void* data, uint64_t bytes, int layer, int expert, int tensor,
                                  cudaStream_t stream);

// One range of one expert tensor to check: words [first_word, first_word +
// words) of the tensor at `data` must hold the fingerprint of
// (layer, expert, tensor).
struct FingerprintCheck {
  const uint64_t* data;  // the tensor's first word
  uint64_t first_word;
  uint64_t words;
  int32_t layer, expert, tensor, tag;  // tag: the caller's id (its slot)
};

// Checks `n` ranges (the array in device memory), one block each. Adds the
// number of wrong words to *mismatches and stores the smallest failing tag
// in *first_bad_tag (initialise it to INT32_MAX).
cudaError_t LaunchCheckFingerprints(const FingerprintCheck* checks, int n,
                                    unsigned long long* mismatches, int32_t* first_bad_tag,
                                    cudaStream_t stream);

// Memory-bound work: dst[i] = src[i] * 3 + 1 over `bytes` (multiple of 16),
// `passes` times; each pass reads and writes `bytes`.
cudaError_t LaunchStreamWork(const void* src, void* dst, uint64_t bytes, int passes,
                             int multiprocessors, cudaStream_t stream);

// Compute-bound work: every thread of `blocks` x 256 runs `iterations`
// dependent fused multiply-adds on registers, writing one float to `out`
// (blocks * 256 floats) so nothing is optimised away.
cudaError_t LaunchComputeWork(float* out, int blocks, int iterations, cudaStream_t stream);

}  // namespace eplb::cuda

#endif  // EPLB_HAVE_CUDA
